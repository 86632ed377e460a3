// Fuzz target: cross-owner churn through the bind layer's C ABI (issue 13). An attacker owner
// (small PASID quota) runs input-chosen alloc/bind/unbind/free/release sequences, PASIDs often
// 64 apart so each bind needs a fresh PASID table, and tries the victim's device, PASIDs and
// bindings; the host attaches and detaches a device now and then. Checks: every call answers 0
// or a documented errno; every cross-owner call is refused; every few steps and at the end the
// victim's binding still translates into the victim's own memory, and the victim can still bind a
// new PASID and the host can still attach (no owner can starve the others); no crash, leak or UB.
#include <cerrno>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "capi_vm.h"
#include "fuzz_common.h"
#include "nestor.h"

namespace {

constexpr uint64_t kTableBase = 1ull << 20;
// 24 structure pages (a quarter): 15 cover the worst legitimate use (root, two buses' and the
// host's context tables, three one-page PASID directories and RID_PASID tables, the attacker's
// quota of 4 bound PASID tables, one of the victim's); 9 spare, so PASID tables leaked by the
// attacker's churn exhaust them within a few dozen steps.
constexpr uint64_t kTableSize = 384ull << 10;
constexpr uint64_t kVmBase = 4ull << 20;  // VM n's guest RAM: [kVmBase + n * kVmRam, +kVmRam)
constexpr uint64_t kVmRam = 2ull << 20;
constexpr uint64_t kRam = kVmBase + 2 * kVmRam;
constexpr uint64_t kData = nestor::test::kCapiData;  // guest GPA that IOVA 0 maps to
constexpr uint16_t kAttackerSid = 0x0100, kVictimSid = 0x0200, kHostSid = 0x0300;
constexpr int kCheckEvery = 8;  // steps between checks of the victim's binding

bool documented(int rc) {
  static const std::set<int> ok = {-EINVAL, -ENOENT,   -EPERM, -EOPNOTSUPP, -EDQUOT,
                                   -ENOSPC, -EALREADY, -EBUSY, -EEXIST,     -ENOMEM};
  return rc >= 0 || ok.count(rc);
}

// One engine per PASID width for the whole process, reset before each input (a reset engine
// behaves like a new one, so an input still replays alone).
nestor_engine *pooled(uint8_t pasid_bits) {
  struct Destroy {
    void operator()(nestor_engine *e) const { nestor_engine_destroy(e); }
  };
  // Destroyed at exit, so LeakSanitizer sees nothing left behind.
  static std::map<uint8_t, std::unique_ptr<nestor_engine, Destroy>> pool;
  std::unique_ptr<nestor_engine, Destroy> &slot = pool[pasid_bits];
  if (slot) {
    FUZZ_CHECK(nestor_engine_reset(slot.get()) == 0, "reset");
    return slot.get();
  }
  nestor_config c{};
  c.size = sizeof c;
  c.pasid_bits = pasid_bits;
  c.iotlb_entries = 64;
  c.iotlb_shards = 2;
  c.context_cache_entries = 16;
  c.pasid_cache_entries = 16;
  c.psc_entries = 16;
  slot.reset(nestor_engine_create(&c));
  FUZZ_CHECK(slot, "engine: %s", nestor_last_error());
  FUZZ_CHECK(nestor_mem_add_ram(slot.get(), 0, kRam) == 0, "RAM");
  return slot.get();
}

using Vm = nestor::test::CapiVm;

Vm make_vm(nestor_engine *e, nestor_bind *b, int n, uint32_t quota) {
  Vm vm;
  const int rc =
      nestor::test::capi_make_vm(e, b, kVmBase + uint64_t(n) * kVmRam, kVmRam, quota, &vm);
  FUZZ_CHECK(rc == 0, "VM %d: %d", n, rc);
  return vm;
}

nestor_bind_data bind_data() {
  return nestor::test::capi_bind_data();
}

void expect_translates(nestor_engine *e, uint16_t sid, uint32_t pasid, const Vm &vm) {
  nestor_request r{};
  r.source_id = sid;
  r.has_pasid = 1;
  r.pasid = pasid;
  r.access = NESTOR_ACCESS_READ;
  nestor_result res{};
  FUZZ_CHECK(nestor_translate(e, &r, &res) == 0, "translate");
  FUZZ_CHECK(res.fault == 0 && res.hpa == vm.hpa + kData,
             "victim's PASID %u: fault 0x%x hpa 0x%llx", pasid, res.fault,
             (unsigned long long)res.hpa);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider in(data, size);
  // 10 or 12 PASID bits: the allocator covers the whole space per input, and 2^20 would cost
  // more than the sequence; 12 bits still gives 64 PASID tables' worth of PASIDs.
  const uint8_t pasid_bits = in.ConsumeBool() ? 12 : 10;
  const uint32_t pasid_space = 1u << pasid_bits;
  nestor_engine *e = pooled(pasid_bits);
  nestor_bind_config bc{};
  bc.size = sizeof bc;
  bc.table_base = kTableBase;
  bc.table_size = kTableSize;
  int err = 0;
  nestor_bind *b = nestor_bind_create(e, &bc, &err);
  FUZZ_CHECK(b, "bind layer: %d %s", err, nestor_last_error());
  const Vm attacker = make_vm(e, b, 0, in.ConsumeIntegralInRange<uint32_t>(1, 4));
  const Vm victim = make_vm(e, b, 1, 0);
  FUZZ_CHECK(nestor_device_attach(b, kAttackerSid, attacker.did) == 0, "attach attacker");
  FUZZ_CHECK(nestor_device_attach(b, kVictimSid, victim.did) == 0, "attach victim");
  uint32_t vp = 0;
  FUZZ_CHECK(nestor_pasid_alloc(b, victim.owner, 0, NESTOR_NO_GUEST_PASID, &vp) == 0, "v alloc");
  const nestor_bind_data d = bind_data();
  FUZZ_CHECK(nestor_bind_pgtbl(b, victim.owner, kVictimSid, vp, &d) == 0, "v bind");

  std::set<uint32_t> held;  // the attacker's PASIDs
  std::set<uint32_t> bound;
  bool host_attached = false;
  int steps = 0;
  while (in.remaining_bytes() > 0 && ++steps < 400) {
    const uint32_t a = attacker.owner;
    auto pick_held = [&]() -> uint32_t {
      if (held.empty()) return in.ConsumeIntegralInRange<uint32_t>(0, pasid_space);
      auto it = held.begin();
      std::advance(it, in.ConsumeIntegralInRange<size_t>(0, held.size() - 1));
      return *it;
    };
    int rc = 0;
    const int kind = in.ConsumeIntegralInRange<int>(0, 9);
    switch (kind) {
      case 0: {  // alloc: often a fresh PASID table's worth away
        const uint32_t want =
            in.ConsumeBool() ? in.ConsumeIntegralInRange<uint32_t>(1, pasid_space / 64 - 1) * 64
                             : in.ConsumeIntegralInRange<uint32_t>(0, pasid_space);
        uint32_t p = 0;
        rc = nestor_pasid_alloc(b, a, want, NESTOR_NO_GUEST_PASID, &p);
        if (rc == 0) held.insert(p);
        break;
      }
      case 1: {  // the full churn cycle in one step
        uint32_t p = 0;
        const uint32_t want = in.ConsumeIntegralInRange<uint32_t>(1, pasid_space / 64 - 1) * 64;
        rc = nestor_pasid_alloc(b, a, want, NESTOR_NO_GUEST_PASID, &p);
        if (rc != 0) break;
        FUZZ_CHECK(nestor_bind_pgtbl(b, a, kAttackerSid, p, &d) == 0, "churn bind %u", p);
        FUZZ_CHECK(nestor_unbind_pgtbl(b, a, kAttackerSid, p) == 0, "churn unbind %u", p);
        FUZZ_CHECK(nestor_pasid_free(b, a, p) == 0, "churn free %u", p);
        break;
      }
      case 2: {
        const uint32_t p = pick_held();
        rc = nestor_bind_pgtbl(b, a, kAttackerSid, p, &d);
        if (rc == 0) bound.insert(p);
        break;
      }
      case 3: {
        const uint32_t p = pick_held();
        rc = nestor_unbind_pgtbl(b, a, kAttackerSid, p);
        if (rc == 0) bound.erase(p);
        break;
      }
      case 4: {
        const uint32_t p = pick_held();
        rc = nestor_pasid_free(b, a, p);
        if (rc == 0) held.erase(p);
        break;
      }
      case 5:
        rc = nestor_owner_release(b, a);
        FUZZ_CHECK(rc == int(held.size()), "release returned %d, held %zu", rc, held.size());
        held.clear();
        bound.clear();
        break;
      case 6:  // attacks on the victim: every one refused, nothing changes
        FUZZ_CHECK(nestor_bind_pgtbl(b, a, kVictimSid, vp, &d) < 0, "bind on victim's device");
        FUZZ_CHECK(nestor_bind_pgtbl(b, a, kVictimSid, pick_held(), &d) < 0, "victim's device");
        FUZZ_CHECK(nestor_unbind_pgtbl(b, a, kVictimSid, vp) < 0, "unbind victim");
        FUZZ_CHECK(nestor_pasid_free(b, a, vp) < 0, "free victim's PASID");
        FUZZ_CHECK(nestor_domain_map(b, attacker.did, 1ull << 30, kTableBase, 4096,
                                     NESTOR_ACCESS_READ) == -EPERM,
                   "mapping the table range");
        {
          nestor_bind_inv inv{};
          inv.size = sizeof inv;
          inv.caches = NESTOR_BIND_INV_CACHE_IOTLB;
          inv.scope = NESTOR_BIND_INV_SCOPE_PASID;
          inv.source_id = kVictimSid;
          inv.pasid = vp;
          FUZZ_CHECK(nestor_cache_invalidate(b, a, &inv) < 0, "invalidate victim");
        }
        break;
      case 7:  // the host attaches or detaches a device of the victim's domain
        if (host_attached) {
          FUZZ_CHECK(nestor_device_detach(b, kHostSid) == 0, "host detach");
        } else {
          FUZZ_CHECK(nestor_device_attach(b, kHostSid, victim.did) == 0, "host attach");
        }
        host_attached = !host_attached;
        break;
      case 8: {  // the victim binds a PASID of its own far away, then lets it go
        uint32_t p = 0;
        const uint32_t want = in.ConsumeIntegralInRange<uint32_t>(1, pasid_space / 64 - 1) * 64;
        rc = nestor_pasid_alloc(b, victim.owner, want, NESTOR_NO_GUEST_PASID, &p);
        if (rc == -EBUSY) rc = nestor_pasid_alloc(b, victim.owner, 0, NESTOR_NO_GUEST_PASID, &p);
        FUZZ_CHECK(rc == 0 || rc == -ENOSPC, "victim alloc %d", rc);
        if (rc != 0) break;
        FUZZ_CHECK(nestor_bind_pgtbl(b, victim.owner, kVictimSid, p, &d) == 0, "victim bind %u", p);
        expect_translates(e, kVictimSid, p, victim);
        FUZZ_CHECK(nestor_unbind_pgtbl(b, victim.owner, kVictimSid, p) == 0, "victim unbind");
        FUZZ_CHECK(nestor_pasid_free(b, victim.owner, p) == 0, "victim free");
        break;
      }
      case 9: {  // the attacker's bound PASIDs translate into its own memory only
        for (uint32_t p : bound)
          if (p != 0) expect_translates(e, kAttackerSid, p, attacker);
        break;
      }
    }
    FUZZ_CHECK(documented(rc), "undocumented %d", rc);
    // The victim's translation every few steps, not after each: each check is a nested walk
    // (the attacker's invalidations empty the IOTLB), a fifth of an input's time, and what an
    // attacker breaks stays broken (nothing the attacker does rewrites the victim's entries
    // back), so a later check still sees it. The host's attach/detach on the victim's domain
    // is checked at once, and every input ends with a check.
    if (steps % kCheckEvery == 0 || kind == 7) expect_translates(e, kVictimSid, vp, victim);
  }
  expect_translates(e, kVictimSid, vp, victim);
  // Whatever the attacker did, the host can still attach a device.
  if (!host_attached) FUZZ_CHECK(nestor_device_attach(b, kHostSid, victim.did) == 0, "host");
  FUZZ_CHECK(nestor_owner_release(b, attacker.owner) >= 0, "release");
  nestor_bind_destroy(b);
  return 0;
}
