// Fuzz target: random descriptor streams into an owner's direct invalidation queue
// (BindLayer::owner_queue_*, DIRECT_INVLD). Owner A has the queue; owner B has a device, a
// PASID whose first-level table maps one page, and a cached translation of it that B's guest
// then makes stale by moving the page without invalidating. The input writes raw bytes or
// shaped descriptors (every type, aimed at A's, B's or nobody's tags) into A's queue and
// status pages, moves the tail, clears errors, recreates the queue with arbitrary geometry and
// takes queue pages away. Checks: no crash, hang or UB; every call answers 0 or a documented
// errno; a tail write that succeeded leaves head == tail, a refused one leaves IQE; nothing A
// does reaches B: B's stale translation is still cached (nothing of B was invalidated) and
// neither B's memory nor the host's outside A changed.
#include <cerrno>
#include <cstring>
#include <set>
#include <vector>

#include "fuzz_common.h"
#include "nestor/bind.h"

using namespace nestor;

namespace {

constexpr uint64_t kRam = 32ull << 20;
constexpr uint64_t kTables = 1ull << 20, kTablesSize = 4ull << 20;  // [1, 5) MiB
constexpr uint64_t kHpaA = 8ull << 20, kHpaB = 16ull << 20;         // guest RAM, 4 MiB each
constexpr uint64_t kGuestRam = 4ull << 20;
constexpr uint64_t kSentinel = 24ull << 20;  // host RAM no guest maps: must never change
constexpr uint64_t kQueueGpa = 0x10000, kStatusGpa = 0x30000;
constexpr uint64_t kIova = 0x40000000;
constexpr uint16_t kSidA = 0x0100, kSidB = 0x0200;

bool documented(int rc) {
  static const std::set<int> ok = {0, -EINVAL, -ENOENT, -EPERM, -EOPNOTSUPP, -EBUSY, -ENOMEM};
  return ok.count(rc) != 0;
}

// B's guest: a 4-level first-level table at GPA 0x100000.. mapping kIova -> `data_gpa`.
void write_fl(MachineMemory &mem, uint64_t data_gpa) {
  const uint64_t t[4] = {0x100000, 0x101000, 0x102000, 0x103000};
  for (int l = 0; l < 3; ++l)
    mem.write64(kHpaB + t[l] + ((kIova >> (39 - 9 * l)) & 511) * 8, t[l + 1] | 7);
  mem.write64(kHpaB + t[3] + ((kIova >> 12) & 511) * 8, data_gpa | 7);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider in(data, size);
  unsigned key = 0;
  EngineConfig cfg = fuzz::small_config(in, &key);
  cfg.pasid_bits = 10;  // the allocator's table covers the PASID space: keep it small
  Engine &e = fuzz::pooled_engine(cfg, key, kRam);
  MachineMemory &mem = e.memory();
  BindConfig bc;
  bc.features = kNestingFeatAll | kNestingFeatDirectInvld;
  bc.table_base = kTables;
  bc.table_size = kTablesSize;
  int err = 0;
  std::unique_ptr<BindLayer> b = BindLayer::create(e, bc, &err);
  FUZZ_CHECK(b, "bind layer: %d", err);

  uint32_t owner_a = 0, owner_b = 0, pasid_a = 0, pasid_b = 0;
  uint16_t did_a = 0, did_b = 0;
  DomainConfig dc;
  dc.nesting = true;
  FUZZ_CHECK(b->create_owner(0, &owner_a) == 0 && b->create_owner(0, &owner_b) == 0, "owners");
  dc.owner = owner_a;
  FUZZ_CHECK(b->create_domain(dc, &did_a) == 0, "domain A");
  dc.owner = owner_b;
  FUZZ_CHECK(b->create_domain(dc, &did_b) == 0, "domain B");
  FUZZ_CHECK(b->map(did_a, 0, kHpaA, kGuestRam, kAccessRead | kAccessWrite) == 0, "map A");
  FUZZ_CHECK(b->map(did_b, 0, kHpaB, kGuestRam, kAccessRead | kAccessWrite) == 0, "map B");
  FUZZ_CHECK(b->attach_device(kSidA, did_a) == 0 && b->attach_device(kSidB, did_b) == 0, "attach");
  // Both guests call their PASID 1.
  FUZZ_CHECK(b->alloc_pasid(owner_a, 0, 1, &pasid_a) == 0, "pasid A");
  FUZZ_CHECK(b->alloc_pasid(owner_b, 0, 1, &pasid_b) == 0, "pasid B");
  write_fl(mem, 0x200000);
  BindRequest req;
  req.fl_root_gpa = 0x100000;
  req.guest_pasid = 1;
  FUZZ_CHECK(b->bind(owner_b, kSidB, pasid_b, req) == 0, "bind B");
  // A's table is empty (zeroed RAM): its translations fault, its invalidations still apply.
  FUZZ_CHECK(b->bind(owner_a, kSidA, pasid_a, req) == 0, "bind A");
  Request rb;
  rb.source_id = kSidB;
  rb.has_pasid = true;
  rb.pasid = pasid_b;
  rb.iova = kIova;
  const Result before = e.translate(rb);
  FUZZ_CHECK(before.ok && before.t.out == kHpaB + 0x200000, "B's first translation");
  write_fl(mem, 0x300000);  // B's guest moves the page and does not invalidate
  const uint64_t sentinel = 0x5E5E5E5E5E5E5E5Eull;
  mem.write64(kSentinel, sentinel);
  mem.write64(kHpaB + kStatusGpa, sentinel);

  uint32_t queue = 0;
  unsigned bits = 256;
  uint64_t entries = 128;
  // Where the guest writes its next descriptor, as a driver does: after the last one. Shaped
  // descriptors written at arbitrary slots would nearly always sit behind a zero (invalid) slot
  // and never be reached.
  uint64_t prod = 0;
  FUZZ_CHECK(b->owner_queue_create(owner_a, did_a, kQueueGpa, entries, bits, &queue) == 0, "queue");
  auto pick_did = [&] {
    const uint16_t dids[] = {did_a, did_b, 0, 1};
    return in.ConsumeBool() ? in.ConsumeIntegral<uint16_t>()
                            : dids[in.ConsumeIntegral<uint8_t>() % 4];
  };
  auto pick_pasid = [&]() -> uint64_t {
    const uint32_t p[] = {1, pasid_a, pasid_b, 0};
    return in.ConsumeBool() ? in.ConsumeIntegral<uint32_t>() & 0xFFFFF
                            : p[in.ConsumeIntegral<uint8_t>() % 4];
  };
  auto pick_sid = [&] {
    const uint16_t s[] = {kSidA, kSidB};
    return in.ConsumeBool() ? in.ConsumeIntegral<uint16_t>() : s[in.ConsumeBool()];
  };
  while (in.remaining_bytes() > 0) {
    int rc = 0;
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
      case 0: {  // raw bytes into A's queue or status page
        const uint64_t gpa =
            (in.ConsumeBool() ? kQueueGpa : kStatusGpa) + (in.ConsumeIntegral<uint16_t>() & 0xFFF0);
        const std::vector<uint8_t> bytes =
            in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(1, 64));
        if (gpa + bytes.size() <= kGuestRam) mem.write(kHpaA + gpa, bytes.data(), bytes.size());
        break;
      }
      case 1: {  // a shaped descriptor: a known type with tags aimed anywhere
        const unsigned type = in.ConsumeIntegralInRange<unsigned>(1, 8);
        uint64_t qw0 = type | (uint64_t(in.ConsumeIntegralInRange<unsigned>(0, 3)) << 4);
        uint64_t qw1 = 0;
        switch (type) {
          case 0x3:
            qw0 |= uint64_t(pick_sid()) << 32;
            qw1 = (kIova & ~0xFFFull) | (in.ConsumeBool() ? 1 : 0);
            qw0 &= ~uint64_t{0x30};
            break;
          case 0x5:
            qw0 = 0x5 | (uint64_t(in.ConsumeIntegralInRange<unsigned>(1, 7)) << 4) |
                  (uint64_t(in.ConsumeIntegral<uint32_t>()) << 32);
            qw1 = in.ConsumeBool() ? kStatusGpa + (in.ConsumeIntegral<uint16_t>() & 0xFFC)
                                   : in.ConsumeIntegral<uint64_t>() & ~uint64_t{3};
            break;
          case 0x8:
            qw0 = 0x8 | (uint64_t(pick_sid()) << 16) | (pick_pasid() << 32);
            qw1 = kIova | (in.ConsumeBool() ? 1u << 11 : 0);
            break;
          default:
            qw0 |= (uint64_t(pick_did()) << 16) | (type >= 6 ? pick_pasid() << 32 : 0);
            if (type == 0x1) qw0 |= uint64_t(pick_sid()) << 32;
            qw1 = type == 0x2 || type == 0x6 ? (kIova | in.ConsumeIntegralInRange<unsigned>(0, 20))
                                             : 0;
            break;
        }
        const uint64_t qw[4] = {qw0, qw1, 0, 0};
        const uint64_t index = in.ConsumeIntegralInRange<int>(0, 7) == 0
                                   ? in.ConsumeIntegral<uint8_t>() % entries
                                   : prod;
        mem.write(kHpaA + kQueueGpa + index * (bits / 8), qw, bits / 8);
        if (index == prod) prod = (prod + 1) % entries;
        break;
      }
      case 2: {  // tail write
        const int how = in.ConsumeIntegralInRange<int>(0, 3);
        const uint64_t tail = how == 0   ? in.ConsumeIntegral<uint8_t>() % entries
                              : how == 1 ? in.ConsumeIntegral<uint64_t>()
                                         : prod;
        rc = b->owner_queue_write_tail(queue, tail);
        OwnerQueueState s;
        if (b->owner_queue_state(queue, &s) == 0) {
          FUZZ_CHECK(s.head < entries, "head %llu", (unsigned long long)s.head);
          if (rc == 0) FUZZ_CHECK(s.head == s.tail, "ok tail write, head != tail");
          if (rc == -EBUSY)
            FUZZ_CHECK(s.error == invq::QiError::kInvalidDescriptor, "refused without IQE");
        }
        break;
      }
      case 3: {  // the guest's IQE handler: maybe replace the bad descriptor, then clear
        OwnerQueueState s;
        if (in.ConsumeBool() && b->owner_queue_state(queue, &s) == 0) {
          const uint64_t fence[4] = {0x5 | (1u << 6), 0, 0, 0};  // wait, FN only
          mem.write(kHpaA + kQueueGpa + s.head * (bits / 8), fence, bits / 8);
        }
        rc = b->owner_queue_clear_error(queue);
        break;
      }
      case 4: {  // recreate with arbitrary geometry, in A's domain or B's (refused)
        rc = b->owner_queue_destroy(queue);
        const unsigned nbits = in.ConsumeBool() ? 128 : 256;
        const uint64_t nentries = in.ConsumeBool()
                                      ? uint64_t{1} << in.ConsumeIntegralInRange<int>(0, 16)
                                      : in.ConsumeIntegral<uint64_t>();
        const bool at_queue = in.ConsumeBool();
        const uint64_t base = at_queue ? kQueueGpa : in.ConsumeIntegral<uint64_t>();
        const uint16_t d = in.ConsumeBool() ? did_a : did_b;
        int r = b->owner_queue_create(owner_a, d, base, nentries, nbits, &queue);
        FUZZ_CHECK(documented(r), "create: %d", r);
        FUZZ_CHECK(r != 0 || d == did_a, "a queue in B's domain");
        if (r == 0 && at_queue && nentries * (nbits / 8) <= 0x20000 - kQueueGpa) {
          bits = nbits;  // shaped descriptors keep landing in its ring
          entries = nentries;
          prod = 0;
        } else {
          if (r == 0) FUZZ_CHECK(b->owner_queue_destroy(queue) == 0, "destroy");
          r = b->owner_queue_create(owner_a, did_a, kQueueGpa, 128, 256, &queue);
          FUZZ_CHECK(r == 0, "default create: %d", r);
          bits = 256;
          entries = 128;
          prod = 0;
        }
        break;
      }
      case 5: {  // the host takes a 2M chunk of A's RAM away and gives it back
        const uint64_t gpa = uint64_t(in.ConsumeIntegralInRange<int>(0, 1)) << 21;
        rc = b->unmap(did_a, gpa, 2ull << 20);
        if (rc == 0) rc = b->map(did_a, gpa, kHpaA + gpa, 2ull << 20, kAccessRead | kAccessWrite);
        break;
      }
      case 6: {  // A's device translates
        Request r;
        r.source_id = kSidA;
        r.has_pasid = true;
        r.pasid = pasid_a;
        r.iova = kIova;
        (void)e.translate(r);
        break;
      }
      default: {
        OwnerQueueStats st;
        rc = b->owner_queue_stats(queue, &st);
        break;
      }
    }
    FUZZ_CHECK(documented(rc), "rc %d", rc);
  }

  // Nothing A's queue did reached B or the host.
  const Result after = e.translate(rb);
  if (cfg.caching)
    FUZZ_CHECK(after.ok && after.t.out == before.t.out, "B's cached translation went: %d 0x%llx",
               after.ok, (unsigned long long)after.t.out);
  uint64_t host_word = 0, b_word = 0;
  FUZZ_CHECK(mem.read64(kSentinel, &host_word) && host_word == sentinel, "host memory written");
  FUZZ_CHECK(mem.read64(kHpaB + kStatusGpa, &b_word) && b_word == sentinel, "B's memory written");
  return 0;
}
