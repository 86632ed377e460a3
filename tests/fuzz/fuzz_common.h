// Shared helpers for the libFuzzer targets (tests/fuzz). Failures call FUZZ_CHECK, which
// prints what broke and aborts so libFuzzer records the input as a crash.
#pragma once

#include <cstdio>
#include <cstdlib>

#include <fuzzer/FuzzedDataProvider.h>

#include "nestor/engine.h"

#define FUZZ_CHECK(cond, ...)                                              \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "FUZZ_CHECK failed: %s (%s:%d): ", #cond, __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                          \
      std::abort();                                                        \
    }                                                                      \
  } while (0)

namespace nestor::fuzz {

// Engines are created per input: small caches keep that cheap, the structure is the same.
inline EngineConfig small_config(FuzzedDataProvider &in) {
  EngineConfig c;
  c.iotlb_entries = 64;
  c.iotlb_shards = 2;
  c.context_cache_entries = 16;
  c.pasid_cache_entries = 16;
  c.psc_entries = 16;
  c.fault_log_entries = 8;
  const uint8_t f = in.ConsumeIntegral<uint8_t>();
  c.first_level_5 = f & 1;
  c.first_level_1g = f & 2;
  c.second_level_2m = f & 4;
  c.second_level_1g = f & 8;
  c.first_level_ad = f & 16;
  c.drain = f & 32;
  c.coalesce = f & 64;
  c.caching = !(f & 128);
  return c;
}

}  // namespace nestor::fuzz
