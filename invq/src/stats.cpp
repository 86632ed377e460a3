#include "nestor/invq/stats.h"

namespace nestor::invq {

void Stats::count_batch(uint64_t ops_in, uint64_t ops_out, uint64_t promotions) {
  bump(batches_);
  bump(batch_ops_sum_, ops_in);
  raise_max(batch_ops_max_, ops_in);
  bump(ops_applied_, ops_out);
  if (ops_in > ops_out) bump(coalesced_away_, ops_in - ops_out);
  if (promotions) bump(promotions_, promotions);
}

void Stats::count_wait_completed(uint64_t latency_ns, bool interrupt, bool fence) {
  bump(waits_completed_);
  bump(wait_latency_sum_ns_, latency_ns);
  raise_max(wait_latency_max_ns_, latency_ns);
  if (interrupt) bump(interrupts_);
  if (fence) bump(fences_);
}

StatsSnapshot Stats::snapshot() const {
  StatsSnapshot out;
  for (unsigned i = 0; i < kDescriptorTypeCount; ++i) {
    out.descriptors_by_type[i] = descriptors_by_type_[i].load(std::memory_order_relaxed);
  }
  out.ops_submitted = ops_submitted_.load(std::memory_order_relaxed);
  out.waits_submitted = waits_submitted_.load(std::memory_order_relaxed);
  out.batches = batches_.load(std::memory_order_relaxed);
  out.batch_ops_sum = batch_ops_sum_.load(std::memory_order_relaxed);
  out.batch_ops_max = batch_ops_max_.load(std::memory_order_relaxed);
  out.ops_applied = ops_applied_.load(std::memory_order_relaxed);
  out.coalesced_away = coalesced_away_.load(std::memory_order_relaxed);
  out.promotions = promotions_.load(std::memory_order_relaxed);
  out.waits_completed = waits_completed_.load(std::memory_order_relaxed);
  out.wait_latency_sum_ns = wait_latency_sum_ns_.load(std::memory_order_relaxed);
  out.wait_latency_max_ns = wait_latency_max_ns_.load(std::memory_order_relaxed);
  out.interrupts = interrupts_.load(std::memory_order_relaxed);
  out.fences = fences_.load(std::memory_order_relaxed);
  out.drains = drains_.load(std::memory_order_relaxed);
  out.errors = errors_.load(std::memory_order_relaxed);
  out.pending_max = pending_max_.load(std::memory_order_relaxed);
  return out;
}

}  // namespace nestor::invq
