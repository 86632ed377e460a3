// Pieces the two worlds of nestor-stress share (stress.cpp: the host-built machine;
// owner_queues.cpp: VMs built through the bind layer with owner-direct queues). Not installed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "stress.h"

namespace nestor::stress {

using Clock = std::chrono::steady_clock;

inline constexpr unsigned kHist = 256;   // versions remembered per page
inline constexpr uint64_t kMaxLead = 4;  // versions a page may run ahead of its completion

enum State : uint8_t { kUnmapped = 0, kReadOnly = 1, kReadWrite = 2 };

struct alignas(64) Versioned {
  std::atomic<uint64_t> written{1};
  std::atomic<uint64_t> completed{1};
  std::atomic<uint64_t> hist[kHist];  // [v % kHist] = v << 2 | State
};

inline void fetch_max(std::atomic<uint64_t> &a, uint64_t v) {
  uint64_t cur = a.load(std::memory_order_relaxed);
  while (cur < v &&
         !a.compare_exchange_weak(cur, v, std::memory_order_release, std::memory_order_relaxed)) {
  }
}

// Fast, seedable, thread-local: xorshift64*.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {
    if (!s) s = 1;
  }
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  uint64_t below(uint64_t n) { return next() % n; }
};

// The owner-queue world (--owner-queues N, owner_queues.cpp); `opt` has been validated.
Summary run_owner_queues(const Options &opt);

}  // namespace nestor::stress
