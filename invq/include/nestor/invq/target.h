// What invq needs from the rest of the system. The engine implements these; invq never sees
// the caches themselves.
#pragma once

#include <cstdint>
#include <span>

#include "nestor/invq/op.h"

namespace nestor::invq {

class InvalidationTarget {
 public:
  virtual ~InvalidationTarget() = default;
  // Removes at least every entry covers(op, entry) selects. Called from one thread at a time.
  virtual void apply(const InvalidationOp &op) = 0;
  // The ops of one batch (those between two waits, after coalescing), in order. A target may
  // apply them as one operation; the default applies them one by one.
  virtual void apply_batch(std::span<const InvalidationOp> ops) {
    for (const InvalidationOp &op : ops) apply(op);
  }
  // Returns once every translation that started before the call has finished (the batch's
  // grace period). Called after the batch's ops were applied, when drain is enabled.
  virtual void drain() {}
};

class StatusWriter {
 public:
  virtual ~StatusWriter() = default;
  // Writes the 32-bit wait status into machine memory. False if `pa` is not backed.
  virtual bool write_status(uint64_t pa, uint32_t data) = 0;
};

}  // namespace nestor::invq
