// Hashing and small bit helpers shared by every cache.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace nestor::caches {

// Murmur3's 64-bit finaliser: keys differ mostly in low page-number bits and in small DIDs, so
// every input bit must reach the set-index bits or neighbouring pages would pile into one set.
constexpr uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

constexpr size_t round_up_pow2(size_t n) {
  return n <= 1 ? 1 : std::bit_ceil(n);
}

// Spinning writers share two cores with readers and other writers; pause keeps the spin cheap
// for the sibling hyperthread.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace nestor::caches
