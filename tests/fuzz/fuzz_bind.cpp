// Fuzz target (c): bind-layer call sequences decoded from bytes. Arguments are drawn from
// small ranges so valid calls are common (owners 1..4, known DIDs, a few devices, aligned
// GPAs/HPAs) with garbage mixed in. Checks: no crash/hang/UB; every call answers 0 or a
// documented negative errno; a translation through a bound PASID returns an HPA inside the
// device's domain (invariant 3), with the guest's first-level tables written by the input into
// the domain's own memory; destroying everything returns every second-level table page.
#include <cerrno>
#include <set>
#include <vector>

#include "fuzz_common.h"
#include "nestor/bind.h"

using namespace nestor;

namespace {

constexpr uint64_t kRam = 64ull << 20;
constexpr uint64_t kTables = 1ull << 20;  // [1, 9) MiB for the layer's tables
constexpr uint64_t kTablesSize = 8ull << 20;
constexpr uint64_t kHostData = 16ull << 20;  // HPAs domains map: [16, 64) MiB
const uint16_t kSids[] = {0x0100, 0x0108, 0x0200, 0x0310};

bool documented(int rc) {
  static const std::set<int> ok = {-EINVAL, -ENOENT,   -EPERM, -EOPNOTSUPP, -EDQUOT,
                                   -ENOSPC, -EALREADY, -EBUSY, -EEXIST,     -ENOMEM};
  return rc >= 0 || ok.count(rc);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider in(data, size);
  unsigned key = 0;
  EngineConfig cfg = fuzz::small_config(in, &key);
  // 10 PASID bits, not 20: the bind layer's PASID allocator keeps a table over the whole PASID
  // space, and filling 2^20 entries per input would cost more than everything else.
  cfg.pasid_bits = 10;
  Engine &e = fuzz::pooled_engine(cfg, key, kRam);
  BindConfig bc;
  bc.features = in.ConsumeBool() ? kNestingFeatAll : in.ConsumeIntegralInRange<uint32_t>(0, 7);
  bc.table_base = kTables;
  bc.table_size = kTablesSize;
  bc.max_domain_id = in.ConsumeIntegralInRange<uint16_t>(1, 8);
  int err = 0;
  std::unique_ptr<BindLayer> b = BindLayer::create(e, bc, &err);
  if (!b) return 0;
  std::vector<uint32_t> owners;
  std::vector<uint16_t> dids;
  auto owner = [&] {
    return owners.empty() || in.ConsumeIntegralInRange<int>(0, 7) == 0
               ? in.ConsumeIntegralInRange<uint32_t>(0, 5)
               : owners[in.ConsumeIntegralInRange<size_t>(0, owners.size() - 1)];
  };
  auto did = [&] {
    return dids.empty() || in.ConsumeIntegralInRange<int>(0, 7) == 0
               ? in.ConsumeIntegral<uint16_t>()
               : dids[in.ConsumeIntegralInRange<size_t>(0, dids.size() - 1)];
  };
  auto sid = [&] { return kSids[in.ConsumeIntegralInRange<size_t>(0, 3)]; };
  auto pasid = [&] {
    return in.ConsumeBool() ? in.ConsumeIntegralInRange<uint32_t>(0, 8)
                            : in.ConsumeIntegral<uint32_t>();
  };
  auto gpa = [&] {
    return uint64_t(in.ConsumeIntegralInRange<uint32_t>(0, 64)) << 21 |
           (in.ConsumeBool() ? 0 : uint64_t(in.ConsumeIntegralInRange<uint32_t>(0, 511)) << 12);
  };

  while (in.remaining_bytes() > 0) {
    int rc = 0;
    const int call = in.ConsumeIntegralInRange<int>(0, 14);
    switch (call) {
      case 0: {
        uint32_t o = 0;
        rc = b->create_owner(in.ConsumeIntegralInRange<uint32_t>(0, 4), &o);
        if (rc == 0) owners.push_back(o);
        break;
      }
      case 1:
        rc = b->destroy_owner(owner());
        break;
      case 2:
        rc = b->release_owner(owner());
        break;
      case 3: {
        uint32_t p = 0;
        rc = b->alloc_pasid(owner(), pasid(),
                            in.ConsumeBool() ? PasidAllocator::kNoGuestPasid : pasid(), &p);
        break;
      }
      case 4:
        rc = b->free_pasid(owner(), pasid());
        break;
      case 5: {
        DomainConfig dc;
        dc.levels = in.ConsumeIntegralInRange<uint8_t>(2, 6);
        dc.nesting = in.ConsumeBool();
        dc.ad = in.ConsumeBool();
        dc.owner = in.ConsumeBool() ? 0 : owner();
        uint16_t d = 0;
        rc = b->create_domain(dc, &d);
        if (rc == 0) dids.push_back(d);
        break;
      }
      case 6:
        rc = b->destroy_domain(did());
        break;
      case 7: {
        const uint64_t g = gpa();
        const uint64_t hpa =
            kHostData + (uint64_t(in.ConsumeIntegralInRange<uint32_t>(0, 23)) << 21);
        // A 2M map is 512 chunks for the bind layer when the engine lacks 2M pages: one map
        // in four, not one in two, so those splits do not take most of an input's time.
        const uint64_t sz = in.ConsumeIntegralInRange<int>(0, 3) == 0
                                ? (2u << 20)
                                : uint64_t(in.ConsumeIntegralInRange<uint32_t>(1, 16)) << 12;
        rc = b->map(did(), g, hpa, sz, in.ConsumeIntegralInRange<uint8_t>(0, 7));
        break;
      }
      case 8:
        rc = b->unmap(did(), gpa(), in.ConsumeBool() ? (2u << 20) : 4096);
        break;
      case 9:
        rc = b->attach_device(sid(), did());
        break;
      case 10:
        rc = b->detach_device(sid());
        break;
      case 11: {
        BindRequest r;
        r.fl_root_gpa = gpa() & ~0xFFFull;
        r.addr_width =
            in.ConsumeBool() ? 48 : (in.ConsumeBool() ? 57 : in.ConsumeIntegral<uint8_t>());
        r.flags = in.ConsumeIntegralInRange<uint32_t>(0, 63);
        r.guest_pasid = in.ConsumeBool() ? PasidAllocator::kNoGuestPasid : pasid();
        rc = b->bind(owner(), sid(), pasid(), r);
        break;
      }
      case 12:
        rc = b->unbind(owner(), sid(), pasid());
        break;
      case 13: {
        invq::InvalidationOp op;
        op.caches = in.ConsumeIntegral<uint8_t>() & invq::kAllCaches;
        op.scope = static_cast<invq::Scope>(in.ConsumeIntegralInRange<uint8_t>(0, 4));
        op.source_id = sid();
        op.pasid = pasid();
        op.addr = gpa();
        op.npages = in.ConsumeIntegralInRange<uint64_t>(0, 4096);
        op.leaf = in.ConsumeBool();
        op.addr_is_gpa = in.ConsumeIntegralInRange<int>(0, 7) == 0;
        rc = b->cache_invalidate(owner(), op, in.ConsumeIntegralInRange<uint32_t>(0, 3));
        break;
      }
      default: {
        // The guest writes its first-level tables somewhere in a domain's memory, then a
        // device translates; a bound PASID's HPA must come from the device's domain.
        const uint16_t s = sid();
        const uint32_t p = in.ConsumeIntegralInRange<uint32_t>(0, 8);
        BindingInfo bi;
        const bool bound = b->binding(s, p, &bi);
        if (bound) {
          for (int i = in.ConsumeIntegralInRange<int>(0, 8); i > 0; --i) {
            uint64_t hpa = 0;
            if (b->domain_resolve(bi.did, gpa(), &hpa)) {
              const uint64_t v = (in.ConsumeIntegral<uint64_t>() & 0xFFF) | (gpa() & ~0xFFFull) | 1;
              e.memory().write64((hpa & ~7ull), v);
            }
          }
        }
        Request r;
        r.source_id = s;
        r.has_pasid = p != 0 || in.ConsumeBool();
        r.pasid = p;
        r.iova = in.ConsumeBool() ? gpa() : in.ConsumeIntegral<uint64_t>();
        r.access = in.ConsumeIntegralInRange<uint8_t>(1, 7);
        const Result res = e.translate(r);
        if (res.ok && bound) {
          bool inside = false;
          for (auto [base, len] : b->domain_hpa_ranges(bi.did))
            if (res.t.out - base < len) inside = true;
          FUZZ_CHECK(inside, "bound PASID %u of 0x%x translated to 0x%llx outside domain %u", p, s,
                     (unsigned long long)res.t.out, bi.did);
        }
        break;
      }
    }
    FUZZ_CHECK(documented(rc), "call %d returned undocumented %d", call, rc);
  }
  // Tear everything down: every second-level table page must come back.
  for (uint32_t o : owners) b->release_owner(o);
  for (uint16_t s : kSids) b->detach_device(s);
  for (uint16_t d : dids) b->destroy_domain(d);
  FUZZ_CHECK(b->table_pages_in_use() == 0, "%llu second-level table pages leaked",
             (unsigned long long)b->table_pages_in_use());
  return 0;
}
