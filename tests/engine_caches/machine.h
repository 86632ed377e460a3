// A small machine shared by the engine-level cache tests: one host RAM buffer seen by a cached
// engine and by an uncached reference engine, VT-d structures written by StructuresWriter and
// page tables written by the builders.
#pragma once

#include <sys/mman.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "nestor/engine.h"
#include "nestor/vtd/structures_writer.h"
#include "nestor/walkers/builder.h"

namespace nestor::test {

enum class Mode { kFirstLevel, kSecondLevel, kNested };

// Test-name suffix for parameterised tests over Mode.
inline std::string mode_name(Mode m) {
  return m == Mode::kFirstLevel ? "FirstLevel" : m == Mode::kSecondLevel ? "SecondLevel" : "Nested";
}

inline constexpr uint64_t kRamSize = 64ull << 20;
inline constexpr uint64_t kTablesBase = 16ull << 20;   // host tables [16, 32) MiB
inline constexpr uint64_t kDataBase = 32ull << 20;     // host data / guest RAM [32, 64) MiB
inline constexpr uint64_t kGuestRam = 16ull << 20;     // nested: GPA [0, 16) MiB -> kDataBase
inline constexpr uint64_t kGuestTables = 12ull << 20;  // guest FL tables at GPA [12, 16) MiB
inline constexpr uint16_t kSid = 0x0108;
inline constexpr uint32_t kPasid = 5;
inline constexpr uint16_t kDid = 7;
inline constexpr uint64_t kIovaBase = 0x40'0000'0000ull;

class SharedRam {
 public:
  SharedRam() {
    void *p = mmap(nullptr, kRamSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap");
    ptr_ = p;
  }
  ~SharedRam() { munmap(ptr_, kRamSize); }
  SharedRam(const SharedRam &) = delete;
  SharedRam &operator=(const SharedRam &) = delete;
  void *ptr() const { return ptr_; }

 private:
  void *ptr_;
};

class Machine {
 public:
  explicit Machine(Mode mode, EngineConfig cached_cfg = {}) : mode_(mode) {
    EngineConfig ref_cfg = cached_cfg;
    ref_cfg.caching = false;
    cached = std::make_unique<Engine>(cached_cfg);
    reference = std::make_unique<Engine>(ref_cfg);
    for (Engine *e : {cached.get(), reference.get()})
      if (e->memory().add_host_ram(0, kRamSize, ram_.ptr()) != 0)
        throw std::runtime_error("add_host_ram");
    MachineMemory &mem = cached->memory();
    pages_ = std::make_unique<PageAllocator>(mem, kTablesBase, kDataBase - kTablesBase);
    host_ = std::make_unique<HostTableSpace>(mem, *pages_);
    structures_ = std::make_unique<StructuresWriter>(mem, *pages_);
    cached->set_root_table(structures_->root_table());
    reference->set_root_table(structures_->root_table());

    slc_.root = pages_->alloc();
    slc_.levels = 4;
    sl = std::make_unique<build::SecondLevelBuilder<HostTableSpace>>(*host_, slc_.root, 4);
    vtd::PasidEntry pe;
    pe.present = true;
    pe.did = kDid;
    pe.aw = 2;
    pe.sre = pe.ere = true;
    pe.fl_levels = 4;
    if (mode == Mode::kNested) {
      for (uint64_t gpa = 0; gpa < kGuestRam; gpa += 4096)
        check(sl->map(gpa, kDataBase + gpa, 12, build::sl_leaf_bits(7)));
      guest_ = std::make_unique<GuestTableSpace>(mem, slc_, kGuestTables, kGuestRam - kGuestTables);
      pe.fl_root = guest_->alloc_table();
      fl_guest =
          std::make_unique<build::FirstLevelBuilder<GuestTableSpace>>(*guest_, pe.fl_root, 4);
      pe.pgtt = vtd::Pgtt::kNested;
      pe.sl_root = slc_.root;
    } else if (mode == Mode::kFirstLevel) {
      pe.fl_root = pages_->alloc();
      fl_host = std::make_unique<build::FirstLevelBuilder<HostTableSpace>>(*host_, pe.fl_root, 4);
      pe.pgtt = vtd::Pgtt::kFirstLevel;
    } else {
      pe.pgtt = vtd::Pgtt::kSecondLevel;
      pe.sl_root = slc_.root;
    }
    pasid_entry = pe;
    if (structures_->attach(kSid, 0) != 0 || structures_->set_pasid_entry(kSid, kPasid, pe) != 0)
      throw std::runtime_error("structures");
  }

  // Maps iova page `page` to output page `target` (a host page for FL/SL, a guest page for
  // nested) with size 2^shift.
  build::Status map(uint64_t page, uint64_t target, unsigned shift, bool writable) {
    const uint64_t iova = kIovaBase + page * 4096;
    switch (mode_) {
      case Mode::kFirstLevel:
        return fl_host->map(iova, kDataBase + target * 4096, shift,
                            build::fl_leaf_bits(writable, true, true));
      case Mode::kNested:
        return fl_guest->map(iova, target * 4096, shift, build::fl_leaf_bits(writable, true, true));
      case Mode::kSecondLevel:
        return sl->map(iova, kDataBase + target * 4096, shift,
                       build::sl_leaf_bits(writable ? 3 : 1));
    }
    return build::Status::kMemoryError;
  }
  build::Status unmap(uint64_t page, unsigned shift) {
    const uint64_t iova = kIovaBase + page * 4096;
    switch (mode_) {
      case Mode::kFirstLevel:
        return fl_host->unmap(iova, shift);
      case Mode::kNested:
        return fl_guest->unmap(iova, shift);
      case Mode::kSecondLevel:
        return sl->unmap(iova, shift);
    }
    return build::Status::kMemoryError;
  }
  // Nested only: the host page the second level maps guest page `gpa` to (0 if unmapped).
  uint64_t host_page_of(uint64_t gpa) {
    uint64_t hpa = 0;
    return guest_ && guest_->resolve(gpa & ~0xFFFull, &hpa) ? hpa & ~0xFFFull : 0;
  }
  build::Status map_guest_page_to(uint64_t gpa, uint64_t hpa) {
    return sl->map(gpa & ~0xFFFull, hpa, 12, build::sl_leaf_bits(7));
  }
  build::Status unmap_guest_page(uint64_t gpa) { return sl->unmap(gpa & ~0xFFFull, 12); }
  // Nested only: moves guest page `gpa_page` to another host page.
  build::Status remap_guest_page(uint64_t gpa_page, uint64_t host_page) {
    return sl->map(gpa_page * 4096, kDataBase + host_page * 4096, 12, build::sl_leaf_bits(7));
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
    if (mode_ == Mode::kSecondLevel) op.addr_is_gpa = true;
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
  int set_other_pasid_entry(uint32_t pasid, const vtd::PasidEntry &pe) {
    return structures_->set_pasid_entry(kSid, pasid, pe);
  }
  int rewrite_pasid_entry(const vtd::PasidEntry &pe) {
    pasid_entry = pe;
    return structures_->set_pasid_entry(kSid, kPasid, pe);
  }
  uint64_t alloc_host_table() { return pages_->alloc(); }
  HostTableSpace &host_space() { return *host_; }
  GuestTableSpace *guest_space() { return guest_.get(); }

  static Request request(uint64_t page, uint8_t access, uint64_t offset = 0) {
    Request r;
    r.source_id = kSid;
    r.has_pasid = true;
    r.pasid = kPasid;
    r.iova = kIovaBase + page * 4096 + offset;
    r.access = access;
    return r;
  }

  std::unique_ptr<Engine> cached, reference;
  std::unique_ptr<build::SecondLevelBuilder<HostTableSpace>> sl;
  std::unique_ptr<build::FirstLevelBuilder<HostTableSpace>> fl_host;
  std::unique_ptr<build::FirstLevelBuilder<GuestTableSpace>> fl_guest;
  vtd::PasidEntry pasid_entry;

 private:
  static void check(build::Status s) {
    if (s != build::Status::kOk) throw std::runtime_error(build::status_name(s));
  }
  Mode mode_;
  SharedRam ram_;
  std::unique_ptr<PageAllocator> pages_;
  std::unique_ptr<HostTableSpace> host_;
  std::unique_ptr<StructuresWriter> structures_;
  std::unique_ptr<GuestTableSpace> guest_;
  sl::Config slc_;
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
