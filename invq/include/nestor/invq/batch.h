// Batching and coalescing of the operations between two waits.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "nestor/invq/op.h"

namespace nestor::invq {

struct CoalesceOptions {
  bool enabled = true;
  // Ranges longer than this many pages become one PASID-scope op (domain scope for GPA
  // ranges): cheaper for generation-tagged caches, at the price of over-invalidation.
  // 0 disables promotion.
  uint64_t promote_threshold_pages = 512;
};

struct CoalesceCounters {
  uint64_t input_ops = 0;
  uint64_t output_ops = 0;
  uint64_t promotions = 0;
};

// Returns a list whose combined effect (see covers()) equals that of `ops` — or is broader only
// where a range was promoted, which `counters->promotions` counts. Order inside a batch does
// not matter: every op of the batch is applied before the wait that closes it completes.
std::vector<InvalidationOp> coalesce(std::span<const InvalidationOp> ops,
                                     const CoalesceOptions &options = {},
                                     CoalesceCounters *counters = nullptr);
// The same into `out` (cleared first), whose storage a caller that coalesces every batch
// keeps from one batch to the next.
void coalesce_into(std::span<const InvalidationOp> ops, const CoalesceOptions &options,
                   CoalesceCounters *counters, std::vector<InvalidationOp> &out);

// Operations collected up to the next wait. Not thread-safe: one owner (the processor).
class Batch {
 public:
  void add(const InvalidationOp &op) { ops_.push_back(op); }
  size_t size() const { return ops_.size(); }
  bool empty() const { return ops_.empty(); }
  void clear() { ops_.clear(); }
  const std::vector<InvalidationOp> &ops() const { return ops_; }

  std::vector<InvalidationOp> coalesce(const CoalesceOptions &options = {},
                                       CoalesceCounters *counters = nullptr) const {
    return invq::coalesce(ops_, options, counters);
  }
  void coalesce_into(const CoalesceOptions &options, CoalesceCounters *counters,
                     std::vector<InvalidationOp> &out) const {
    invq::coalesce_into(ops_, options, counters, out);
  }

 private:
  std::vector<InvalidationOp> ops_;
};

}  // namespace nestor::invq
