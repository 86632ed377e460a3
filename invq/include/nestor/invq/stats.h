// Counters shared by the queue and the processor. Relaxed atomics: they are statistics, not
// synchronisation, and are read while producers keep running.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace nestor::invq {

// Per-type descriptor counters: a queue front end names descriptor types by a 7-bit number
// (VT-d: bits 11:9 and 3:0 of the first quadword, nestor/vtd/descriptor.h).
inline constexpr unsigned kDescriptorTypeCount = 128;

struct StatsSnapshot {
  std::array<uint64_t, kDescriptorTypeCount> descriptors_by_type{};
  uint64_t ops_submitted = 0;
  uint64_t waits_submitted = 0;
  uint64_t batches = 0;
  uint64_t batch_ops_sum = 0;  // ops entering coalescing, summed over batches
  uint64_t batch_ops_max = 0;
  uint64_t ops_applied = 0;  // ops handed to the target after coalescing
  uint64_t coalesced_away = 0;
  uint64_t promotions = 0;
  uint64_t waits_completed = 0;
  uint64_t wait_latency_sum_ns = 0;
  uint64_t wait_latency_max_ns = 0;
  uint64_t interrupts = 0;
  uint64_t fences = 0;
  uint64_t drains = 0;
  uint64_t errors = 0;       // decode, queue and status-write errors
  uint64_t pending_max = 0;  // most entries ever pending at once (<= ProcessorOptions::max_pending)
};

// Two groups of counters have one writer at a time, and are bumped with a relaxed load and
// store instead of a locked read-modify-write (perf put the locked adds of one page op and
// a wait at about 9% of the waiting thread's time):
// - submission (ops and waits submitted, pending_max): the caller holds the processor's
//   submission lock;
// - processing (batches, waits completed, drains): the caller holds its processing lock.
// That lock orders each write after the previous one. Errors and descriptor counts come from
// more than one component and stay atomic increments.
class Stats {
 public:
  void count_error() { add(errors_); }
  void count_ops_submitted(uint64_t n) {
    if (n) bump(ops_submitted_, n);
  }
  void count_waits_submitted(uint64_t n) {
    if (n) bump(waits_submitted_, n);
  }
  void count_descriptors(const std::array<uint64_t, kDescriptorTypeCount> &by_type) {
    for (size_t t = 0; t < kDescriptorTypeCount; ++t) {
      if (by_type[t]) add(descriptors_by_type_[t], by_type[t]);
    }
  }
  void count_batch(uint64_t ops_in, uint64_t ops_out, uint64_t promotions);
  void count_wait_completed(uint64_t latency_ns, bool interrupt, bool fence);
  void count_drain() { bump(drains_); }
  void count_pending(uint64_t pending) { raise_max(pending_max_, pending); }

  StatsSnapshot snapshot() const;

 private:
  static void add(std::atomic<uint64_t> &counter, uint64_t value = 1) {
    counter.fetch_add(value, std::memory_order_relaxed);
  }
  // Single writer at a time (see above); concurrent readers see either value.
  static void bump(std::atomic<uint64_t> &counter, uint64_t value = 1) {
    counter.store(counter.load(std::memory_order_relaxed) + value, std::memory_order_relaxed);
  }
  static void raise_max(std::atomic<uint64_t> &counter, uint64_t value) {
    if (counter.load(std::memory_order_relaxed) < value)
      counter.store(value, std::memory_order_relaxed);
  }

  std::array<std::atomic<uint64_t>, kDescriptorTypeCount> descriptors_by_type_{};
  std::atomic<uint64_t> ops_submitted_{0};
  std::atomic<uint64_t> waits_submitted_{0};
  std::atomic<uint64_t> batches_{0};
  std::atomic<uint64_t> batch_ops_sum_{0};
  std::atomic<uint64_t> batch_ops_max_{0};
  std::atomic<uint64_t> ops_applied_{0};
  std::atomic<uint64_t> coalesced_away_{0};
  std::atomic<uint64_t> promotions_{0};
  std::atomic<uint64_t> waits_completed_{0};
  std::atomic<uint64_t> wait_latency_sum_ns_{0};
  std::atomic<uint64_t> wait_latency_max_ns_{0};
  std::atomic<uint64_t> interrupts_{0};
  std::atomic<uint64_t> fences_{0};
  std::atomic<uint64_t> drains_{0};
  std::atomic<uint64_t> errors_{0};
  std::atomic<uint64_t> pending_max_{0};
};

}  // namespace nestor::invq
