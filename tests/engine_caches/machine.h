// The engine-level cache tests' machine (built with tests/machine): one device whose tables
// the tests edit, a cached engine and an uncached reference engine over the same RAM.
#pragma once

#include <cstdint>
#include <string>

#include <gtest/gtest.h>

#include "nestor/machine/machine.h"

namespace nestor::test {

using machine::Mode;
using machine::mode_name;

inline constexpr uint64_t kRamSize = 64ull << 20;
inline constexpr uint64_t kTablesBase = 16ull << 20;   // host tables [16, 32) MiB
inline constexpr uint64_t kDataBase = 32ull << 20;     // host data / guest RAM [32, 64) MiB
inline constexpr uint64_t kGuestRam = 16ull << 20;     // nested: GPA [0, 16) MiB -> kDataBase
inline constexpr uint64_t kGuestTables = 12ull << 20;  // guest FL tables at GPA [12, 16) MiB
inline constexpr uint16_t kSid = 0x0108;
inline constexpr uint32_t kPasid = 5;
inline constexpr uint16_t kDid = 7;
inline constexpr uint64_t kIovaBase = 0x40'0000'0000ull;

// One device (kSid, kPasid) in `mode`, seen by a cached engine and by an uncached reference
// engine over the same RAM.
class Machine {
 public:
  explicit Machine(Mode mode, EngineConfig cached_cfg = {}) : m_(layout(), cached_cfg) {
    EngineConfig ref_cfg = cached_cfg;
    ref_cfg.caching = false;
    cached = &m_.engine();
    reference = &m_.add_engine(ref_cfg);
    m_.place_structures();
    domain_ = &m_.add_domain(kDid);
    machine::DeviceSpec spec;
    spec.source_id = kSid;
    spec.pasid = kPasid;
    spec.mode = mode;
    spec.did = kDid;
    spec.sre = spec.ere = true;
    if (mode == Mode::kNested) {
      domain_->map(0, kDataBase, kGuestRam);
      guest_ = &m_.add_guest(domain_->slc, kGuestTables, kGuestRam - kGuestTables);
      spec.guest = guest_;
    }
    if (mode != Mode::kFirstLevel) spec.domain = domain_;
    dev_ = &m_.add_device(spec);
    pasid_entry = dev_->entry;
    fl_host = dev_->fl;
    fl_guest = dev_->guest_fl;
  }

  // Maps iova page `page` to output page `target` (a host page for FL/SL, a guest page for
  // nested) with size 2^shift. First-level leaves are executable, second-level ones not.
  build::Status map(uint64_t page, uint64_t target, unsigned shift, bool writable) {
    const uint8_t perms = kAccessRead | (writable ? kAccessWrite : 0) |
                          (dev_->mode == Mode::kSecondLevel ? 0 : kAccessExec);
    const uint64_t base = dev_->mode == Mode::kNested ? 0 : kDataBase;
    return dev_->map(kIovaBase + page * 4096, base + target * 4096, shift, perms);
  }
  build::Status unmap(uint64_t page, unsigned shift) {
    return dev_->unmap(kIovaBase + page * 4096, shift);
  }
  // Nested only: the host page the second level maps guest page `gpa` to (0 if unmapped).
  uint64_t host_page_of(uint64_t gpa) {
    uint64_t hpa = 0;
    return guest_ && guest_->resolve(gpa & ~0xFFFull, &hpa) ? hpa & ~0xFFFull : 0;
  }
  build::Status map_guest_page_to(uint64_t gpa, uint64_t hpa) {
    return domain_->tables.map(gpa & ~0xFFFull, hpa, 12, build::sl_leaf_bits(7));
  }
  build::Status unmap_guest_page(uint64_t gpa) {
    return domain_->tables.unmap(gpa & ~0xFFFull, 12);
  }
  // Nested only: moves guest page `gpa_page` to another host page.
  build::Status remap_guest_page(uint64_t gpa_page, uint64_t host_page) {
    return map_guest_page_to(gpa_page * 4096, kDataBase + host_page * 4096);
  }
  // The invalidation a driver sends after changing the leaf of `npages` pages at `page`.
  void invalidate_pages(uint64_t page, uint64_t npages, bool leaf) {
    invq::InvalidationOp op;
    op.caches = invq::kCacheIotlb | invq::kCachePaging;
    op.scope = invq::Scope::kRange;
    op.did = kDid;
    op.pasid = kPasid;
    op.addr = kIovaBase + page * 4096;
    op.npages = npages;
    op.leaf = leaf;
    if (dev_->mode == Mode::kSecondLevel) op.addr_is_gpa = true;
    cached->invalidate(op);
    cached->invalidate_wait();
  }
  void invalidate_gpa(uint64_t gpa_page, uint64_t npages) {
    invq::InvalidationOp op;
    op.caches = invq::kCacheIotlb | invq::kCachePaging;
    op.scope = invq::Scope::kRange;
    op.did = kDid;
    op.addr = gpa_page * 4096;
    op.npages = npages;
    op.addr_is_gpa = true;
    cached->invalidate(op);
    cached->invalidate_wait();
  }
  void invalidate_scope(invq::Scope scope, uint8_t caches) {
    invq::InvalidationOp op;
    op.caches = caches;
    op.scope = scope;
    op.did = kDid;
    op.pasid = kPasid;
    op.source_id = kSid;
    cached->invalidate(op);
    cached->invalidate_wait();
  }
  // Another PASID of the same device (and, with pe.did = kDid, of the same domain).
  void set_other_pasid_entry(uint32_t pasid, const vtd::PasidEntry &pe) {
    m_.set_pasid_entry(kSid, pasid, pe);
  }
  void rewrite_pasid_entry(const vtd::PasidEntry &pe) {
    pasid_entry = pe;
    m_.set_pasid_entry(kSid, kPasid, pe);
  }
  uint64_t alloc_host_table() { return m_.alloc_table(); }

  static Request request(uint64_t page, uint8_t access, uint64_t offset = 0) {
    return machine::request(kSid, kPasid, kIovaBase + page * 4096 + offset, access);
  }

  Engine *cached = nullptr, *reference = nullptr;
  machine::HostFl *fl_host = nullptr;    // first-level mode
  machine::GuestFl *fl_guest = nullptr;  // nested mode
  vtd::PasidEntry pasid_entry;

 private:
  static machine::RamLayout layout() {
    machine::RamLayout l;
    l.ram_size = kRamSize;
    l.tables_base = kTablesBase;
    l.tables_size = kDataBase - kTablesBase;
    l.shared = true;
    return l;
  }

  machine::Machine m_;
  machine::Domain *domain_ = nullptr;
  GuestTableSpace *guest_ = nullptr;
  machine::Device *dev_ = nullptr;
};

// Same outcome: translated to the same address with the same page size and permissions, or
// the same fault.
inline ::testing::AssertionResult same(const Result &a, const Result &b) {
  if (a.ok != b.ok)
    return ::testing::AssertionFailure()
           << "cached ok=" << a.ok << " reference ok=" << b.ok << " (faults 0x" << std::hex
           << int(a.fault.reason) << " / 0x" << int(b.fault.reason) << ")";
  if (!a.ok) {
    if (a.fault.reason != b.fault.reason)
      return ::testing::AssertionFailure()
             << "fault 0x" << std::hex << int(a.fault.reason) << " vs 0x" << int(b.fault.reason);
    return ::testing::AssertionSuccess();
  }
  if (a.t.out != b.t.out || a.t.page_shift != b.t.page_shift || a.t.perms != b.t.perms)
    return ::testing::AssertionFailure()
           << std::hex << "cached out=0x" << a.t.out << " shift=" << std::dec << int(a.t.page_shift)
           << " perms=" << int(a.t.perms) << std::hex << "; reference out=0x" << b.t.out << std::dec
           << " shift=" << int(b.t.page_shift) << " perms=" << int(b.t.perms);
  return ::testing::AssertionSuccess();
}

}  // namespace nestor::test
