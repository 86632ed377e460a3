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

// Which states a page held from version `from` (its completed version, read before a
// translation) to `written` (its written version, read after it), plus written + 1 when that
// version's history entry is already stored (the writer stores the entry before the change and
// bumps `written` after it). `unknown`: a version in [from, written] is no longer in the ring
// (a version kHist newer took its slot), so what the page held then cannot be told. A reader
// descheduled between reading `written` and reading the ring for as long as the writer takes
// to make kHist more versions finds none of them: that is "unknown", never "unmapped"
// (docs/STRESS.md finding 8).
struct HistoryStates {
  bool mapped = false, unmapped = false, unknown = false;
};

inline HistoryStates history_states(const Versioned &vs, uint64_t from, uint64_t written) {
  HistoryStates s;
  for (uint64_t v = from; v <= written + 1; ++v) {
    const uint64_t e = vs.hist[v % kHist].load(std::memory_order_acquire);
    if ((e >> 2) != v) {
      if (v <= written) s.unknown = true;
      continue;
    }
    (State(e & 3) == kUnmapped ? s.unmapped : s.mapped) = true;
  }
  return s;
}

// The verdict of the translators' table-page check: every version of the window is known and
// none of them was mapped.
inline bool history_shows_gone(const HistoryStates &s) {
  return !s.mapped && !s.unknown;
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
