// Several VMs (owners), each with its own nesting domain, devices and system-wide PASIDs; the
// guests build first-level tables in their GPA space, change them and invalidate. Every
// translation is checked against a reference model, and every HPA must belong to the VM.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include "bind_fixture.h"

namespace nestor::bindtest {
namespace {

constexpr uint64_t k4K = 4096, k2M = 2ull << 20;
constexpr int kVms = 3, kDevicesPerVm = 2, kPasidsPerDevice = 3, kPagesPerPasid = 48;

struct Space {  // one bound (device, PASID)
  int vm;
  uint16_t sid;
  uint32_t pasid;  // host PASID (0: the device's default PASID)
  uint32_t guest_pasid;
  int levels;
  uint64_t root;
  std::map<uint64_t, uint64_t> ref;  // iova page -> GPA page (user, writable)
};

class MultiVm : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int v = 0; v < kVms; ++v) {
      vms.push_back(w.make_vm(v, v == 2 ? 5 : 4));
      for (int d = 0; d < kDevicesPerVm; ++d) {
        const uint16_t sid = uint16_t(((v + 1) << 8) | (d << 3));
        ASSERT_EQ(w.layer().attach_device(sid, vms[v].did), 0);
        for (int p = 0; p < kPasidsPerDevice; ++p) {
          Space s;
          s.vm = v;
          s.sid = sid;
          // Each guest numbers its PASIDs 1, 2, ... in its own namespace; the host's differ.
          s.guest_pasid = uint32_t(1 + d * kPasidsPerDevice + p);
          if (d == 0 && p == 0) {
            s.pasid = kDefaultPasid;  // one default-PASID binding per VM
            s.guest_pasid = PasidAllocator::kNoGuestPasid;
          } else {
            ASSERT_EQ(w.layer().alloc_pasid(vms[v].owner, 0, s.guest_pasid, &s.pasid), 0);
          }
          s.levels = (p == 2) ? 5 : 4;
          s.root = vms[v].space->alloc_table();
          ASSERT_NE(s.root, 0u);
          GuestFl fl(*vms[v].space, s.root, s.levels);
          for (int i = 0; i < kPagesPerPasid; ++i) {
            const uint64_t page = rng() % (kGuestTableGpa / k4K);
            const uint64_t iova = kIovaBase + uint64_t(i) * k4K * 3;
            ASSERT_EQ(fl.map(iova, page * k4K, 12, user_rw()), build::Status::kOk);
            s.ref[iova / k4K] = page;
          }
          BindRequest req = bind_req(s.root, s.levels == 5 ? 57 : 48);
          req.guest_pasid = s.guest_pasid;
          ASSERT_EQ(w.layer().bind(vms[v].owner, sid, s.pasid, req), 0);
          spaces.push_back(std::move(s));
        }
      }
    }
  }

  // Checks every mapped page and some unmapped ones of every space.
  void check_all(const char *when) {
    for (const Space &s : spaces) {
      const Vm &vm = vms[size_t(s.vm)];
      const bool has_pasid = s.pasid != kDefaultPasid;
      for (const auto &[iova_page, gpa_page] : s.ref) {
        const uint64_t off = rng() % k4K;
        Result r = w.translate(s.sid, has_pasid, s.pasid, iova_page * k4K + off, kAccessWrite);
        ASSERT_TRUE(r.ok) << when << " sid " << s.sid << " pasid " << s.pasid << " fault "
                          << int(r.fault.reason);
        ASSERT_EQ(r.t.out, vm.hpa_base + gpa_page * k4K + off) << when;
        ASSERT_TRUE(vm.owns_hpa(r.t.out));
      }
      for (int i = 0; i < 8; ++i) {
        const uint64_t iova = kIovaBase + (rng() % (kPagesPerPasid * 3 + 16)) * k4K;
        if (s.ref.count(iova / k4K)) continue;
        Result r = w.translate(s.sid, has_pasid, s.pasid, iova);
        ASSERT_FALSE(r.ok) << when << " unmapped iova " << std::hex << iova << " -> " << r.t.out;
      }
    }
  }

  void invalidate(const Space &s, uint64_t iova, uint64_t npages) {
    invq::InvalidationOp op;
    op.caches = invq::kCacheIotlb | invq::kCachePaging | invq::kCacheDevTlb;
    op.scope = invq::Scope::kRange;
    op.source_id = s.sid;
    op.addr = iova;
    op.npages = npages;
    uint32_t flags = 0;
    if (s.guest_pasid != PasidAllocator::kNoGuestPasid) {
      op.pasid = s.guest_pasid;  // the guest speaks its own PASID names
      flags = kInvGuestPasid;
    } else {
      op.pasid = s.pasid;
    }
    ASSERT_EQ(w.layer().cache_invalidate(vms[size_t(s.vm)].owner, op, flags), 0);
  }

  std::mt19937_64 rng{2024};
  World w{{}, {}, kVms};
  std::vector<Vm> vms;
  std::vector<Space> spaces;
};

TEST_F(MultiVm, EveryTranslationMatchesTheReference) {
  ASSERT_EQ(spaces.size(), size_t(kVms * kDevicesPerVm * kPasidsPerDevice));
  check_all("initial");
  // PASIDs are system-wide: no two VMs share one.
  std::map<uint32_t, int> pasid_vm;
  for (const Space &s : spaces)
    if (s.pasid != kDefaultPasid) {
      auto [it, fresh] = pasid_vm.emplace(s.pasid, s.vm);
      EXPECT_TRUE(fresh || it->second == s.vm) << s.pasid;
    }
}

TEST_F(MultiVm, GuestsChangeTheirTablesAndInvalidate) {
  for (int round = 0; round < 6; ++round) {
    for (Space &s : spaces) {
      Vm &vm = vms[size_t(s.vm)];
      GuestFl fl(*vm.space, s.root, s.levels);
      for (int k = 0; k < 4; ++k) {
        const uint64_t iova = kIovaBase + (rng() % (kPagesPerPasid * 3)) * k4K;
        const uint64_t page = iova / k4K;
        if (s.ref.count(page) && rng() % 3 == 0) {
          ASSERT_EQ(fl.unmap(iova, 12), build::Status::kOk);
          s.ref.erase(page);
        } else {
          const uint64_t gpa_page = rng() % (kGuestTableGpa / k4K);
          ASSERT_EQ(fl.map(iova, gpa_page * k4K, 12, user_rw()), build::Status::kOk);
          s.ref[page] = gpa_page;
        }
        invalidate(s, iova, 1);
      }
    }
    check_all("after changes");
  }
}

TEST_F(MultiVm, RebindUnbindAndReleaseKeepOthersIntact) {
  // VM 0 rebinds one space to a fresh table, VM 1 unbinds one, VM 2 is released entirely.
  Space &s0 = spaces[1];
  Vm &vm0 = vms[0];
  s0.root = vm0.space->alloc_table();
  GuestFl fl(*vm0.space, s0.root, s0.levels);
  s0.ref.clear();
  ASSERT_EQ(fl.map(kIovaBase, 0x1000, 12, user_rw()), build::Status::kOk);
  s0.ref[kIovaBase / k4K] = 1;
  BindRequest req = bind_req(s0.root, s0.levels == 5 ? 57 : 48);
  req.guest_pasid = s0.guest_pasid;
  ASSERT_EQ(w.layer().bind(vm0.owner, s0.sid, s0.pasid, req), 0);

  const size_t per_vm = size_t(kDevicesPerVm * kPasidsPerDevice);
  Space gone = spaces[per_vm + 1];
  ASSERT_EQ(w.layer().unbind(vms[1].owner, gone.sid, gone.pasid), 0);
  EXPECT_GE(w.layer().release_owner(vms[2].owner), 1);
  std::vector<Space> released(spaces.begin() + long(2 * per_vm), spaces.end());
  spaces.erase(spaces.begin() + long(2 * per_vm), spaces.end());
  spaces.erase(spaces.begin() + long(per_vm + 1));
  check_all("after rebind/unbind/release");
  for (const Space &s : released) {
    for (const auto &kv : s.ref) {
      Result r = w.translate(s.sid, s.pasid != kDefaultPasid, s.pasid, kv.first * k4K);
      EXPECT_FALSE(r.ok);
    }
  }
  for (const auto &kv : gone.ref)
    EXPECT_FALSE(w.translate(gone.sid, true, gone.pasid, kv.first * k4K).ok);
}

}  // namespace
}  // namespace nestor::bindtest
