// Test-only physical memory and table spaces for walker tests that run without the engine.
// FlatMemory implements the PhysicalMemory concept over a flat array of 64-bit words with
// atomic accesses; FlatSpace hands out zeroed 4K table pages from it (a TableSpace).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "nestor/walkers/builder.h"
#include "nestor/walkers/memory.h"

namespace nestor::test {

class FlatMemory {
 public:
  // Backs [base, base + size). Everything else is unbacked: reads and CAS fail.
  FlatMemory(uint64_t base, uint64_t size) : base_(base), words_(size / 8, 0) {}

  uint64_t base() const { return base_; }
  uint64_t size() const { return words_.size() * 8; }
  bool contains(uint64_t pa) const { return pa >= base_ && pa - base_ < size() && !(pa & 7); }

  bool read64(uint64_t pa, uint64_t *out) {
    ++reads;
    if (!contains(pa) || fail_reads.count(pa)) return false;
    *out = std::atomic_ref<uint64_t>(word(pa)).load(std::memory_order_acquire);
    return true;
  }
  CasStatus cas64(uint64_t pa, uint64_t &expected, uint64_t desired) {
    ++cas_calls;
    if (!contains(pa) || fail_writes.count(pa)) return CasStatus::kError;
    if (interfere_once.count(pa)) {  // simulate a concurrent writer changing the entry once
      const uint64_t v = interfere_once[pa];
      interfere_once.erase(pa);
      std::atomic_ref<uint64_t>(word(pa)).store(v);
    }
    return std::atomic_ref<uint64_t>(word(pa)).compare_exchange_strong(expected, desired)
               ? CasStatus::kOk
               : CasStatus::kChanged;
  }

  bool write64(uint64_t pa, uint64_t v) {
    if (!contains(pa)) return false;
    std::atomic_ref<uint64_t>(word(pa)).store(v, std::memory_order_release);
    return true;
  }

  // Plain helpers for tests.
  uint64_t peek(uint64_t pa) const { return words_.at((pa - base_) / 8); }
  void poke(uint64_t pa, uint64_t v) { words_.at((pa - base_) / 8) = v; }
  // Fills the whole memory with pseudo-random words.
  void fill_random(uint64_t seed) {
    uint64_t x = seed | 1;
    for (auto &w : words_) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      w = x;
    }
  }

  uint64_t reads = 0, cas_calls = 0;
  std::set<uint64_t> fail_reads, fail_writes;
  std::map<uint64_t, uint64_t> interfere_once;

 private:
  uint64_t &word(uint64_t pa) { return words_[(pa - base_) / 8]; }
  uint64_t base_;
  std::vector<uint64_t> words_;
};

static_assert(PhysicalMemory<FlatMemory>);

// Host-physical table space: a bump allocator of 4K pages inside FlatMemory.
class FlatSpace {
 public:
  FlatSpace(FlatMemory &mem, uint64_t first, uint64_t end) : mem_(mem), next_(first), end_(end) {}
  uint64_t alloc_table() {
    if (next_ + 4096 > end_) return 0;
    const uint64_t pa = next_;
    next_ += 4096;
    for (uint64_t a = pa; a < pa + 4096; a += 8) mem_.poke(a, 0);
    ++allocated;
    return pa;
  }
  bool read(uint64_t addr, uint64_t *out) { return mem_.read64(addr, out); }
  bool write(uint64_t addr, uint64_t v) {
    if (!mem_.contains(addr)) return false;
    mem_.poke(addr, v);
    return true;
  }
  int allocated = 0;

 private:
  FlatMemory &mem_;
  uint64_t next_, end_;
};

static_assert(build::TableSpace<FlatSpace>);

// A guest-physical table space for nested first-level tables: each table gets a fresh host
// page from `host` and a GPA page from a bump range; the GPA->HPA mapping is entered into the
// second level with `sl_perms`. Reads/writes go through the space's own GPA->HPA map (not the
// walker), so the builders and the walkers under test stay independent.
template <class Mem, class HostSpace>
class GuestSpace {
 public:
  GuestSpace(Mem &mem, HostSpace &host, build::SecondLevelBuilder<HostSpace> &sl,
             uint64_t gpa_first, uint64_t gpa_end, uint8_t sl_perms = kAccessRead | kAccessWrite)
      : mem_(mem), host_(host), sl_(sl), next_(gpa_first), end_(gpa_end), perms_(sl_perms) {}

  uint64_t alloc_table() {
    if (next_ + 4096 > end_) return 0;
    const uint64_t hpa = host_.alloc_table();
    if (!hpa) return 0;
    const uint64_t gpa = next_;
    next_ += 4096;
    if (sl_.map(gpa, hpa, 12, build::sl_leaf_bits(perms_)) != build::Status::kOk) return 0;
    gpa_to_hpa[gpa] = hpa;
    return gpa;
  }
  bool read(uint64_t gpa, uint64_t *out) {
    const uint64_t h = hpa_of(gpa);
    return h != ~0ull && mem_.read64(h, out);
  }
  bool write(uint64_t gpa, uint64_t v) {
    const uint64_t h = hpa_of(gpa);
    return h != ~0ull && mem_.write64(h, v);
  }
  uint64_t hpa_of(uint64_t gpa) const {
    auto it = gpa_to_hpa.find(gpa & ~0xFFFull);
    return it == gpa_to_hpa.end() ? ~0ull : it->second | (gpa & 0xFFF);
  }
  std::map<uint64_t, uint64_t> gpa_to_hpa;

 private:
  Mem &mem_;
  HostSpace &host_;
  build::SecondLevelBuilder<HostSpace> &sl_;
  uint64_t next_, end_;
  uint8_t perms_;
};

}  // namespace nestor::test
