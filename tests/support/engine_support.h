// Test helpers for engine tests: table spaces over engine memory (C ABI or C++), and a small
// layout manager that places root/context/PASID structures with the C99 vtd_writer.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <utility>

#include <gtest/gtest.h>

#include "flat_memory.h"
#include "nestor.h"
#include "nestor/walkers/builder.h"
#include "vtd_writer.h"

namespace nestor::test {

// read64/write64 over the C ABI, so C ABI tests build tables without the C++ engine.
struct CapiMem {
  nestor_engine *e;
  bool read64(uint64_t pa, uint64_t *out) { return nestor_mem_read(e, pa, out, 8) == 0; }
  bool write64(uint64_t pa, uint64_t v) { return nestor_mem_write(e, pa, &v, 8) == 0; }
};

// Bump-allocated zeroed 4K tables in [first, end) of any memory with read64/write64.
template <class Mem>
class BumpSpace {
 public:
  BumpSpace(Mem &mem, uint64_t first, uint64_t end) : mem_(mem), next_(first), end_(end) {}
  uint64_t alloc_table() {
    if (next_ + 4096 > end_) return 0;
    const uint64_t pa = next_;
    next_ += 4096;
    for (uint64_t a = pa; a < pa + 4096; a += 8)
      if (!mem_.write64(a, 0)) return 0;
    return pa;
  }
  bool read(uint64_t addr, uint64_t *out) { return mem_.read64(addr, out); }
  bool write(uint64_t addr, uint64_t v) { return mem_.write64(addr, v); }
  Mem &mem() { return mem_; }

 private:
  Mem &mem_;
  uint64_t next_, end_;
};

// Places VT-d structures: a root table, context tables per bus half, one PASID directory per
// source-id and PASID tables per directory slot, all from `alloc` (zeroed pages).
class VtdLayout {
 public:
  VtdLayout(vtdw_writer w, std::function<uint64_t()> alloc) : w_(w), alloc_(std::move(alloc)) {
    root_ = alloc_();
  }
  uint64_t root() const { return root_; }

  // Writes the root entry and context entry for sid (PASIDE=1, PDTS=7 unless overridden).
  uint64_t device(uint16_t sid, vtdw_context c = default_context()) {
    const unsigned bus = sid >> 8, devfn = sid & 0xFF;
    auto &ct = ctx_tables_[bus];
    uint64_t &half = devfn < 128 ? ct.first : ct.second;
    if (!half) half = alloc_();
    vtdw_root(&w_, root_, bus, ct.first, ct.second, 0, 0);
    if (!c.pasid_dir) {
      uint64_t &dir = dirs_[sid];
      if (!dir) {
        // 2^(PDTS+7) 8-byte entries: up to 32 contiguous pages (the allocator is a bump one).
        const unsigned pages = c.pdts >= 2 ? 1u << (c.pdts - 2) : 1u;
        dir = alloc_();
        for (unsigned i = 1; i < pages; ++i) EXPECT_EQ(alloc_(), dir + 4096ull * i);
      }
      c.pasid_dir = dir;
    }
    dirs_[sid] = c.pasid_dir;
    vtdw_context_entry(&w_, half, devfn, &c);
    return half;
  }
  static vtdw_context default_context() {
    vtdw_context c{};
    c.present = 1;
    c.paside = 1;
    c.pdts = 7;
    return c;
  }
  // Writes the PASID directory entry and PASID table entry for (sid, pasid).
  uint64_t pasid(uint16_t sid, uint32_t pasid, const vtdw_pasid_entry &pe) {
    uint64_t &table = tables_[{sid, pasid >> 6}];
    if (!table) table = alloc_();
    vtdw_pasid_dir_entry(&w_, dirs_.at(sid), pasid, table, 1, 0, 0);
    vtdw_pasid_entry_write(&w_, table, pasid, &pe);
    return table;
  }
  uint64_t context_table(uint16_t sid) const {
    auto &ct = ctx_tables_.at(sid >> 8);
    return (sid & 0xFF) < 128 ? ct.first : ct.second;
  }
  uint64_t pasid_dir(uint16_t sid) const { return dirs_.at(sid); }
  uint64_t pasid_table(uint16_t sid, uint32_t pasid) const { return tables_.at({sid, pasid >> 6}); }
  const vtdw_writer &writer() const { return w_; }

 private:
  vtdw_writer w_;
  std::function<uint64_t()> alloc_;
  uint64_t root_ = 0;
  std::map<unsigned, std::pair<uint64_t, uint64_t>> ctx_tables_;
  std::map<uint16_t, uint64_t> dirs_;
  std::map<std::pair<uint16_t, uint32_t>, uint64_t> tables_;
};

// PASID-entry bits the C writer has no named field for (VT-d 9.6), set through `extra`:
// SLEE (bit 5), NXE (bit 133), SMEP (bit 134).
inline constexpr uint64_t kPeSlee = uint64_t{1} << 5;  // extra[0]
inline constexpr uint64_t kPeNxe = uint64_t{1} << 5;   // extra[2]
inline constexpr uint64_t kPeSmep = uint64_t{1} << 6;  // extra[2]

// The helpers write what an x86-64 driver using XD writes: NXE and SMEP on, SL X honoured.
inline vtdw_pasid_entry pe_first_level(uint64_t fl_root, bool five = false) {
  vtdw_pasid_entry pe{};
  pe.present = 1;
  pe.pgtt = 1;
  pe.aw = 2;
  pe.fl_root = fl_root;
  pe.flpm = five ? 1 : 0;
  pe.sre = 1;
  pe.ere = 1;
  pe.extra[2] = kPeNxe | kPeSmep;
  return pe;
}
inline vtdw_pasid_entry pe_second_level(uint64_t sl_root, unsigned aw = 2) {
  vtdw_pasid_entry pe{};
  pe.present = 1;
  pe.pgtt = 2;
  pe.aw = aw;
  pe.sl_root = sl_root;
  pe.extra[0] = kPeSlee;
  return pe;
}
inline vtdw_pasid_entry pe_nested(uint64_t fl_root_gpa, uint64_t sl_root, unsigned aw = 2,
                                  bool five = false) {
  vtdw_pasid_entry pe = pe_first_level(fl_root_gpa, five);
  pe.pgtt = 3;
  pe.aw = aw;
  pe.sl_root = sl_root;
  pe.extra[0] = kPeSlee;
  return pe;
}
inline vtdw_pasid_entry pe_pass_through() {
  vtdw_pasid_entry pe{};
  pe.present = 1;
  pe.pgtt = 4;
  pe.aw = 2;
  return pe;
}

}  // namespace nestor::test
