// The personality seam holds without touching engine/: a second, deliberately un-VT-d
// architecture, written only in this file, runs on EngineCore exactly as docs/ARCHITECTURE.md's
// "adding a personality" checklist says a new one would: its own resolution and fault codes,
// the core instantiated here from engine/src/engine_core.h and translate_pipeline.h, its own
// handle type, and the shared invalidation wiring over its caches. If the core stopped being
// generic (a VT-d type or call in it) this file would stop compiling; if the wiring or the
// core's caching broke for a non-VT-d personality, the expectations below would fail.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <optional>

#include "engine_core.h"
#include "nestor/invalidation.h"
#include "nestor/walkers/builder.h"
#include "translate_pipeline.h"

namespace nestor {
// Named, not anonymous: the explicit instantiation below must emit every member.
namespace seam_test {

// "Flat IOMMU": a device table in memory, one 8-byte entry per source-id: bit 0 valid, bits
// 51:12 the root of a 4-level second-level table (the only stage), the domain tag = the
// source-id. Its fault codes are its own, not VT-d's.
constexpr FaultReason kFlatDeviceInvalid = FaultReason(0xE0);
constexpr FaultReason kFlatNotMapped = FaultReason(0xE1);
constexpr FaultReason kFlatPermission = FaultReason(0xE2);
constexpr FaultReason kFlatOther = FaultReason(0xEF);

struct FlatEntry {
  uint64_t raw = 0;
};

class FlatPersonality {
 public:
  struct Config {
    uint64_t device_table = 0;
  };
  using ContextValue = FlatEntry;
  using PasidValue = FlatEntry;

  FlatPersonality(MachineMemory &mem, const Config &cfg, caches::ContextCache<FlatEntry> *,
                  caches::PasidCache<FlatEntry> *)
      : mem_(mem), cfg_(cfg) {}

  bool resolve(uint64_t, const Request &req, WalkContext *out, Fault *fault, bool *fpd) {
    uint64_t e = 0;
    *fpd = false;
    if (!mem_.read64(cfg_.device_table + uint64_t{req.source_id} * 8, &e) || !(e & 1)) {
      *fault = {kFlatDeviceInvalid, FaultStage::kStructures, 0, req.iova};
      return false;
    }
    WalkContext c;
    c.stages = StageSet::kSecondOnly;
    c.domain = req.source_id;
    c.space = 0;
    c.slc.root = e & 0x000F'FFFF'FFFF'F000ull;
    c.slc.levels = 4;
    c.slc.host_width = 48;
    *out = c;
    return true;
  }

  static constexpr Fault walk_fault(const WalkFault &w) {
    const FaultReason code =
        w.error == WalkError::kNotPresent ? kFlatNotMapped
        : (w.error == WalkError::kReadDenied || w.error == WalkError::kWriteDenied)
            ? kFlatPermission
            : kFlatOther;
    return {code, w.stage, w.level, w.address};
  }

 private:
  MachineMemory &mem_;
  Config cfg_;
};
static_assert(Personality<FlatPersonality>);

}  // namespace seam_test

// The checklist's one line of instantiation.
template class EngineCore<seam_test::FlatPersonality>;

namespace seam_test {
namespace {

// Tables in host memory from a page allocator (the walkers' TableSpace).
struct FlatTableSpace {
  MachineMemory &mem;
  PageAllocator &pages;
  uint64_t alloc_table() { return pages.alloc(); }
  bool read(uint64_t pa, uint64_t *v) { return mem.read64(pa, v); }
  bool write(uint64_t pa, uint64_t v) { return mem.write64(pa, v); }
};

// A handle with AddressSpace's fields, which EngineCore::translate_in works on.
struct FlatHandle {
  using MicroEntry = struct {
    uint64_t page = ~uint64_t{0};
    uint64_t out_page = 0;
    uint64_t generation = ~uint64_t{0};
    uint8_t page_shift = 12;
    uint8_t perms = 0;
    uint8_t allowed = 0;
    uint8_t level = 1;
  };
  static constexpr size_t kMicroEntries = 16;
  Request base_;
  uint64_t generation_ = ~uint64_t{0};
  uint64_t stamp_ = 0;
  WalkContext resolved_;
  std::array<MicroEntry, kMicroEntries> micro_{};
  AddressSpace::HandleStats stats_;
};

constexpr uint64_t kRam = 0x100000, kRamSize = 16 << 20;
constexpr uint64_t kDeviceTable = kRam, kTables = kRam + 0x1000, kData = kRam + 0x800000;
constexpr uint16_t kSid = 0x21;

struct FlatMachine {
  EngineConfig cfg;
  MachineMemory mem;
  FaultLog faults{64};
  PageAllocator pages{mem, kTables, 0x400000};
  FlatTableSpace space{mem, pages};
  build::SecondLevelBuilder<FlatTableSpace> *sl = nullptr;
  std::optional<build::SecondLevelBuilder<FlatTableSpace>> sl_storage;

  FlatMachine() {
    EXPECT_EQ(mem.add_ram(kRam, kRamSize), 0);
    sl_storage.emplace(space, pages.alloc(), 4);
    sl = &*sl_storage;
    EXPECT_TRUE(mem.write64(kDeviceTable + kSid * 8, sl->root() | 1));
  }
};

TEST(PersonalitySeam, ASecondPersonalityTranslatesCachesAndNamesItsFaults) {
  FlatMachine m;
  ASSERT_EQ(m.sl->map(0x4000, kData, 12, build::sl_leaf_bits(kAccessRead)), build::Status::kOk);
  EngineCore<FlatPersonality> core(m.cfg, m.mem, m.faults, {.device_table = kDeviceTable});

  Request req;
  req.source_id = kSid;
  req.iova = 0x4123;
  Result r = core.translate(req);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.out, kData + 0x123);
  const uint64_t misses = core.stats().iotlb.misses;
  EXPECT_TRUE(core.translate(req).ok);
  EXPECT_EQ(core.stats().iotlb.misses, misses) << "the second translation must hit the IOTLB";

  // Faults carry the personality's codes: its own structure fault, and walk faults it named.
  req.source_id = kSid + 1;
  r = core.translate(req);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.fault.reason, kFlatDeviceInvalid);
  req.source_id = kSid;
  req.iova = 0x9000;
  r = core.translate(req);
  EXPECT_EQ(r.fault.reason, kFlatNotMapped);
  EXPECT_EQ(r.fault.stage, FaultStage::kSecondLevel);
  req.iova = 0x4000;
  req.access = kAccessWrite;
  EXPECT_EQ(core.translate(req).fault.reason, kFlatPermission);
  FaultRecord logged[8];
  EXPECT_EQ(m.faults.drain(logged, 8), 3u);
  EXPECT_EQ(logged[0].fault.reason, kFlatDeviceInvalid);
}

TEST(PersonalitySeam, TheSharedInvalidationWiringServesItsCaches) {
  FlatMachine m;
  ASSERT_EQ(m.sl->map(0x4000, kData, 12, build::sl_leaf_bits(kAccessRead)), build::Status::kOk);
  EngineCore<FlatPersonality> core(m.cfg, m.mem, m.faults, {.device_table = kDeviceTable});
  EngineInvalidation inv(m.mem, EngineInvalidation::CacheTarget::of(core.caches()), m.cfg);
  core.attach(&inv);

  FlatHandle h;
  h.base_.source_id = kSid;
  Request req = h.base_;
  req.iova = 0x4000;
  ASSERT_EQ(core.translate_in(h, req).t.out, kData);

  // Remapped without an invalidation: both the handle and the IOTLB still serve the old page,
  // which is what caching means (CACHE_INVLD: the owner must invalidate).
  ASSERT_EQ(m.sl->map(0x4000, kData + 0x1000, 12, build::sl_leaf_bits(kAccessRead)),
            build::Status::kOk);
  EXPECT_EQ(core.translate_in(h, req).t.out, kData);
  EXPECT_EQ(core.translate(req).t.out, kData);

  // A page-selective invalidation of the domain, through the wiring's typed front end.
  invq::InvalidationOp op;
  op.caches = invq::kCacheIotlb | invq::kCachePaging;
  op.scope = invq::Scope::kRange;
  op.did = kSid;
  op.addr = 0x4000;
  op.npages = 1;
  op.addr_is_gpa = true;
  inv.submit(op);
  inv.wait();
  EXPECT_EQ(core.translate_in(h, req).t.out, kData + 0x1000);
  EXPECT_EQ(core.translate(req).t.out, kData + 0x1000);
}

}  // namespace
}  // namespace seam_test
}  // namespace nestor
