#include "nestor/invq/epoch.h"

#include <thread>

namespace nestor::invq {

void EpochDomain::Reader::release() {
  if (domain_ == nullptr) return;
  domain_->slots_[index_].epoch.store(kIdle, std::memory_order_release);
  domain_->slots_[index_].claimed.store(false, std::memory_order_release);
  domain_ = nullptr;
  depth_ = 0;
}

std::optional<EpochDomain::Reader> EpochDomain::register_reader() {
  for (size_t i = 0; i < kMaxReaders; ++i) {
    bool expected = false;
    if (slots_[i].claimed.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
      return Reader(this, i);
    }
  }
  return std::nullopt;
}

size_t EpochDomain::registered_readers() const {
  size_t count = 0;
  for (const Slot &slot : slots_) count += slot.claimed.load(std::memory_order_relaxed) ? 1 : 0;
  return count;
}

uint64_t EpochDomain::synchronize() {
  // acq_rel: the removals made before this call are released to readers that load the new
  // epoch in enter().
  const uint64_t target = global_epoch_.fetch_add(1, std::memory_order_acq_rel) + 1;
  // Pairs with the barrier in Reader::enter() (store-buffering pattern).
  store_load_barrier();
  for (const Slot &slot : slots_) {
    for (;;) {
      const uint64_t epoch = slot.epoch.load(std::memory_order_acquire);
      if (epoch == kIdle || epoch >= target) break;
      // A reader is inside a translation that began before this grace period; translations
      // are short, so yielding beats blocking (no lock or notification on the reader side).
      std::this_thread::yield();
    }
  }
  return target;
}

}  // namespace nestor::invq
