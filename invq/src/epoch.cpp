#include "nestor/invq/epoch.h"

#include <chrono>
#include <thread>

namespace nestor::invq {

namespace {

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// How long a synchronizer spins on one reader before it starts yielding. A running reader
// leaves a translation within a microsecond or so; a yield, on a machine with no idle core,
// gives the CPU away for a whole time slice (milliseconds), which was the whole of a drained
// wait's latency.
constexpr auto kSpinBeforeYield = std::chrono::microseconds(50);

}  // namespace

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
    std::chrono::steady_clock::time_point spin_until{};
    for (unsigned polls = 0;; ++polls) {
      const uint64_t epoch = slot.epoch.load(std::memory_order_acquire);
      if (epoch == kIdle || epoch >= target) break;
      // A reader is inside a translation that began before this grace period. Translations
      // are short: spin for a while (a running reader leaves soon), then yield (a descheduled
      // one needs this CPU to get back on), never block (no notification on the reader side).
      if (polls == 0) spin_until = std::chrono::steady_clock::now() + kSpinBeforeYield;
      if ((polls & 63) != 63 || std::chrono::steady_clock::now() < spin_until) {
        cpu_relax();
        continue;
      }
      std::this_thread::yield();
    }
  }
  return target;
}

}  // namespace nestor::invq
