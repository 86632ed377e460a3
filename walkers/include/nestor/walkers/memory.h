// What a walker needs from physical memory. Walkers are templates over this concept so that
// an entry read is an inlined load, never a virtual call.
#pragma once

#include <concepts>
#include <cstdint>

namespace nestor {

enum class CasStatus : uint8_t {
  kOk,       // value replaced
  kChanged,  // memory held something else; `expected` now holds it
  kError,    // address not backed (or an injected failure)
};

template <class M>
concept PhysicalMemory = requires(M &m, uint64_t pa, uint64_t &expected, uint64_t desired,
                                  uint64_t *out) {
  // Atomically reads the naturally aligned 64-bit word at pa. False: unbacked / failed read.
  { m.read64(pa, out) } -> std::same_as<bool>;
  // Atomically replaces the word at pa if it still equals `expected`.
  { m.cas64(pa, expected, desired) } -> std::same_as<CasStatus>;
};

}  // namespace nestor
