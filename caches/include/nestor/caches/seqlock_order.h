// Memory orders for the payload of a seqlock-protected record (cache sets, RangeLog entries).
#pragma once

#include <atomic>

namespace nestor::caches::seqlock {

#if defined(__SANITIZE_THREAD__)
// TSan cannot model stand-alone fences (GCC rejects them under -fsanitize=thread), so the
// sanitizer build orders the payload words themselves; release/acquire on each word gives
// the reader the same guarantee the fence pair gives in the normal build.
inline constexpr std::memory_order kDataLoad = std::memory_order_acquire;
inline constexpr std::memory_order kDataStore = std::memory_order_release;
inline void read_fence() {}
inline void write_fence() {}
#else
inline constexpr std::memory_order kDataLoad = std::memory_order_relaxed;
inline constexpr std::memory_order kDataStore = std::memory_order_relaxed;
// Reader: between the payload loads and the second sequence load.
inline void read_fence() {
  std::atomic_thread_fence(std::memory_order_acquire);
}
// Writer: between making the sequence odd and the payload stores.
inline void write_fence() {
  std::atomic_thread_fence(std::memory_order_release);
}
#endif

}  // namespace nestor::caches::seqlock
