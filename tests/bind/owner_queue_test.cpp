// Owner-direct invalidation queues (DIRECT_INVLD). Two VMs with the same guest PASID names
// (1 and 2, different host PASIDs); each guest changes its first-level tables without
// invalidating, so the cached engine keeps answering the old translations while an uncached
// engine over the same memory (the model: every translation walks) answers the new ones. A
// descriptor that takes effect makes the cached answers equal the model's; one that must not
// leaves them as they were. The oracle is the architecture's: VT-d 6.5.2.4 (PASID-based
// IOTLB invalidation removes the (DID, PASID) translations, page-selective ones the pages in
// range), 6.5.2.8 (a wait's status write lands when the descriptors before it completed), and
// the queue's rule that an invalid descriptor stops it with IQE, head on it (10.4.24).
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "bind_fixture.h"
#include "nestor/invalidation.h"
#include "nestor/machine/machine.h"
#include "qi_descriptors.h"

namespace nestor::bindtest {
namespace {

constexpr uint64_t k4K = 4096;
constexpr uint64_t kQueueGpa = 0x20000, kStatusGpa = 0x30000, kDataGpa = 0x100000;
constexpr uint64_t kRemap = 0x800000;  // where the guests move their pages
constexpr unsigned kPages = 8;
constexpr unsigned kEntries = 128;  // 256-bit descriptors: one 4K page

using test::qi::Desc;

// Descriptors qi_descriptors.h does not have (VT-d 6.5.2; docs/INVQ.md's field table).
Desc iotlb_global() {
  return {0x2 | (1u << 4), 0};  // G 5:4 = 01b
}
Desc devtlb(uint16_t sid, uint64_t addr) {
  return {0x3 | (uint64_t(sid) << 32), addr};  // SID 47:32, ADDR 63:12, S 0 clear
}
Desc iec_global() {
  return {0x4, 0};  // G (bit 4) = 0: global
}
Desc piotlb_pasid(uint16_t did, uint32_t pasid) {
  return {0x6 | (2u << 4) | (uint64_t(did) << 16) | (uint64_t(pasid) << 32), 0};
}
Desc pasid_cache_domain(uint16_t did) {
  return {0x7 | (uint64_t(did) << 16), 0};  // G = 00b
}
Desc pasid_cache_global() {
  return {0x7 | (3u << 4), 0};
}
Desc pdevtlb(uint16_t sid, uint32_t pasid, uint64_t addr) {
  return {0x8 | (uint64_t(sid) << 16) | (uint64_t(pasid) << 32), addr};  // SID 31:16, PASID 51:32
}

struct Space {
  int vm;
  uint16_t sid;
  uint32_t guest, host;
  std::unique_ptr<GuestFl> fl;
};

class OwnerQueue : public ::testing::Test {
 protected:
  static machine::RamLayout layout() {
    machine::RamLayout l;
    l.ram_size = kVmHpaBase + 2 * kGuestRam;
    l.tables_base = kTableBase;
    l.tables_size = kTableSize;
    l.shared = true;  // the model engine reads the same bytes
    return l;
  }

  void SetUp() override {
    BindConfig bc;
    bc.features = kNestingFeatAll | kNestingFeatDirectInvld;
    m.place_bind_layer(bc);
    EngineConfig uncached;
    uncached.caching = false;
    model = &m.add_engine(uncached);
    for (int v = 0; v < 2; ++v) {
      machine::VmSpec spec;
      spec.hpa_base = kVmHpaBase + uint64_t(v) * kGuestRam;
      spec.ram = kGuestRam;
      spec.tables_gpa = kGuestTableGpa;
      spec.tables_size = kGuestTables;
      vms.push_back(m.add_vm(spec));
      const uint16_t sid = uint16_t((v + 1) << 8);
      ASSERT_EQ(layer().attach_device(sid, vms[v].did), 0);
      for (uint32_t g = 1; g <= 2; ++g) {
        auto s = std::make_unique<Space>();
        s->vm = v;
        s->sid = sid;
        s->guest = g;
        ASSERT_EQ(layer().alloc_pasid(vms[v].owner, 0, g, &s->host), 0);
        const uint64_t root = vms[v].space->alloc_table();
        s->fl = std::make_unique<GuestFl>(*vms[v].space, root, 4);
        for (unsigned i = 0; i < kPages; ++i)
          ASSERT_EQ(s->fl->map(iova(i), kDataGpa + i * k4K, 12, user_rw()), build::Status::kOk);
        BindRequest req = bind_req(root);
        req.guest_pasid = g;
        ASSERT_EQ(layer().bind(vms[v].owner, sid, s->host, req), 0);
        spaces.push_back(std::move(s));
      }
      ASSERT_EQ(
          layer().owner_queue_create(vms[v].owner, vms[v].did, kQueueGpa, kEntries, 256, &queue[v]),
          0);
    }
    // Guest PASIDs 1 and 2 name different host PASIDs in the two VMs.
    ASSERT_NE(space(0, 1).host, space(1, 1).host);
  }

  BindLayer &layer() { return m.bind(); }
  Engine &cached() { return m.engine(); }
  static uint64_t iova(unsigned i) { return kIovaBase + uint64_t(i) * k4K; }
  Space &space(int vm, uint32_t guest) { return *spaces[size_t(vm * 2) + guest - 1]; }

  void put(int vm, size_t index, Desc d) {
    const uint64_t qw[4] = {d.qw0, d.qw1, 0, 0};
    ASSERT_EQ(cached().memory().write(vms[vm].hpa_base + kQueueGpa + index * 32, qw, sizeof qw), 0);
  }
  uint32_t status(int vm) {
    uint32_t v = 0;
    EXPECT_EQ(cached().memory().read(vms[vm].hpa_base + kStatusGpa, &v, sizeof v), 0);
    return v;
  }
  OwnerQueueState state(int vm) {
    OwnerQueueState s;
    EXPECT_EQ(layer().owner_queue_state(queue[vm], &s), 0);
    return s;
  }

  static uint64_t xlate(Engine &e, const Space &s, unsigned i) {
    const Result r = e.translate(machine::request(s.sid, s.host, iova(i) + 0x10));
    return r.ok ? r.t.out : ~uint64_t{0};
  }
  // Every page of every space, as `e` answers.
  std::vector<uint64_t> answers(Engine &e, int only_vm = -1) {
    std::vector<uint64_t> out;
    for (const auto &s : spaces)
      if (only_vm < 0 || s->vm == only_vm)
        for (unsigned i = 0; i < kPages; ++i) out.push_back(xlate(e, *s, i));
    return out;
  }
  // Caches warm, then every guest moves every page without invalidating.
  void warm_then_remap() {
    answers(cached());
    for (auto &s : spaces)
      for (unsigned i = 0; i < kPages; ++i) {
        ASSERT_EQ(s->fl->unmap(iova(i), 12), build::Status::kOk);
        ASSERT_EQ(s->fl->map(iova(i), kRemap + i * k4K, 12, user_rw()), build::Status::kOk);
      }
  }

  machine::Machine m{layout()};
  Engine *model = nullptr;
  std::vector<Vm> vms;
  std::vector<std::unique_ptr<Space>> spaces;
  uint32_t queue[2] = {};
};

TEST_F(OwnerQueue, OwnersDescriptorsMakeItsOwnTranslationsExact) {
  warm_then_remap();
  const std::vector<uint64_t> stale = answers(cached());
  ASSERT_NE(stale, answers(*model));  // the caches really hold what the guests changed
  // Guest DIDs are the guest's own numbers (0x77, 5): they name nothing on the host.
  put(0, 0, piotlb_pasid(0x77, 1));
  put(0, 1, test::qi::piotlb_page(5, 2, iova(3)));
  put(0, 2, test::qi::wait_status(kStatusGpa, 0xA1));
  ASSERT_EQ(layer().owner_queue_write_tail(queue[0], 3), 0);
  EXPECT_EQ(status(0), 0xA1u);  // landed in VM 0's memory before the call returned
  EXPECT_EQ(state(0).head, 3u);
  for (unsigned i = 0; i < kPages; ++i)
    EXPECT_EQ(xlate(cached(), space(0, 1), i), xlate(*model, space(0, 1), i)) << i;
  EXPECT_EQ(xlate(cached(), space(0, 2), 3), xlate(*model, space(0, 2), 3));
  // Nothing of VM 1 went: same guest PASID numbers, other owner.
  EXPECT_EQ(answers(cached(), 1), std::vector<uint64_t>(stale.begin() + 2 * kPages, stale.end()));
  OwnerQueueStats st;
  ASSERT_EQ(layer().owner_queue_stats(queue[0], &st), 0);
  EXPECT_EQ(st.descriptors, 3u);
  EXPECT_EQ(st.ops_submitted, 2u);
  EXPECT_EQ(st.waits, 1u);
  EXPECT_EQ(st.descriptors_by_type[6], 2u);
  EXPECT_EQ(st.errors, 0u);
}

// Every descriptor type and scope, aimed at the other VM's DIDs, PASIDs, devices and memory
// or at host-only state. The bad ones stop VM 0's queue with IQE on exactly that descriptor
// while VM 1's queue and the host's keep running; the ones the architecture makes global or
// domain-wide are accepted and confined to VM 0's bindings. At the end no translation of VM 1
// changed and no status write reached its memory.
TEST_F(OwnerQueue, ForeignAndHostOnlyDescriptorsNeverReachAnotherOwner) {
  warm_then_remap();
  const std::vector<uint64_t> stale1 = answers(cached(), 1);
  ASSERT_NE(stale1, answers(*model, 1));
  const Space &b1 = space(1, 1), &b2 = space(1, 2);
  const uint16_t b_did = vms[1].did, a_sid = space(0, 1).sid;
  ASSERT_NE(b1.host, 1u);  // VM 0 cannot name VM 1's host PASIDs by its own guest names
  ASSERT_NE(b1.host, 2u);
  ASSERT_NE(b2.host, 1u);
  ASSERT_NE(b2.host, 2u);
  // Host-owned memory and the layout of the host's queue (128-bit, one page).
  constexpr uint64_t kHostQueue = 0x200000, kHostStatus = 0x201000;
  ASSERT_EQ(cached().invalidation().qi_configure(kHostQueue, 256, 128), 0);
  size_t host_tail = 0;

  struct Case {
    const char *what;
    Desc d;
    OwnerQueueFault fault;  // kNone: accepted
  };
  const uint64_t b_status_hpa = vms[1].hpa_base + kStatusGpa;
  const Case cases[] = {
      {"context global", test::qi::context_global(), OwnerQueueFault::kHostOnly},
      {"context device", test::qi::context_device(b1.sid, b_did), OwnerQueueFault::kHostOnly},
      {"iotlb global", iotlb_global(), OwnerQueueFault::kHostOnly},
      {"iotlb domain", test::qi::iotlb_domain(b_did), OwnerQueueFault::kHostOnly},
      {"iotlb page gpa", test::qi::iotlb_page_gpa(b_did, kDataGpa), OwnerQueueFault::kHostOnly},
      {"interrupt entry cache", iec_global(), OwnerQueueFault::kHostOnly},
      {"piotlb pasid, B's host PASID", piotlb_pasid(b_did, b1.host), OwnerQueueFault::kNotOwned},
      {"piotlb page, B's host PASID", test::qi::piotlb_page(b_did, b2.host, iova(1)),
       OwnerQueueFault::kNotOwned},
      {"pasid cache pasid, B's host PASID", test::qi::pasid_cache_pasid(b_did, b1.host),
       OwnerQueueFault::kNotOwned},
      {"devtlb, B's device", devtlb(b1.sid, iova(0)), OwnerQueueFault::kNotOwned},
      {"pasid devtlb, B's device", pdevtlb(b1.sid, 1, iova(0)), OwnerQueueFault::kNotOwned},
      {"pasid devtlb, unnamed PASID", pdevtlb(a_sid, b1.host, iova(0)), OwnerQueueFault::kNotOwned},
      {"wait, B's HPA as status", test::qi::wait_status(b_status_hpa, 0xBAD),
       OwnerQueueFault::kStatusAddress},
      {"wait, status past guest RAM", test::qi::wait_status(kGuestRam + 0x1000, 0xBAD),
       OwnerQueueFault::kStatusAddress},
      // Accepted: a guest DID equal to B's host DID names nothing; these mean "all of mine".
      {"pasid cache domain, B's DID", pasid_cache_domain(b_did), OwnerQueueFault::kNone},
      {"pasid cache global", pasid_cache_global(), OwnerQueueFault::kNone},
      {"piotlb pasid, B's DID, own guest PASID", piotlb_pasid(b_did, 1), OwnerQueueFault::kNone},
      {"devtlb, own device", devtlb(a_sid, iova(0)), OwnerQueueFault::kNone},
      {"pasid devtlb, own device", pdevtlb(a_sid, 2, iova(0)), OwnerQueueFault::kNone},
  };
  size_t head = 0;
  uint32_t b_seq = 0;
  for (const Case &c : cases) {
    SCOPED_TRACE(c.what);
    put(0, head, c.d);
    const int r = layer().owner_queue_write_tail(queue[0], head + 1);
    if (c.fault == OwnerQueueFault::kNone) {
      ASSERT_EQ(r, 0);
      ++head;
      continue;
    }
    ASSERT_EQ(r, -EBUSY);
    OwnerQueueState s = state(0);
    EXPECT_EQ(s.error, invq::QiError::kInvalidDescriptor);
    EXPECT_EQ(s.fault, c.fault);
    EXPECT_EQ(s.head, head);  // stopped on the bad descriptor
    // VM 1's queue keeps running...
    put(1, b_seq, test::qi::wait_status(kStatusGpa, 0xB000 + b_seq));
    ASSERT_EQ(layer().owner_queue_write_tail(queue[1], b_seq + 1), 0);
    EXPECT_EQ(status(1), 0xB000 + b_seq);
    ++b_seq;
    // ... and so does the host's.
    const uint64_t host_wait[2] = {test::qi::wait_status(kHostStatus, uint32_t(host_tail)).qw0,
                                   kHostStatus};
    ASSERT_EQ(cached().memory().write(kHostQueue + host_tail * 16, host_wait, sizeof host_wait), 0);
    ASSERT_EQ(cached().invalidation().qi_write_tail(++host_tail), 0);
    // A stopped queue takes nothing more until the error is cleared, as VT-d's IQE.
    EXPECT_EQ(layer().owner_queue_write_tail(queue[0], head + 1), -EBUSY);
    // The guest replaces the bad descriptor, clears the error and moves on.
    put(0, head, test::qi::wait_status(kStatusGpa, uint32_t(head)));
    ASSERT_EQ(layer().owner_queue_clear_error(queue[0]), 0);
    ASSERT_EQ(layer().owner_queue_write_tail(queue[0], head + 1), 0);
    EXPECT_EQ(status(0), head);
    ++head;
  }
  // VM 1: every cached translation is still the one it had before its guest remapped.
  EXPECT_EQ(answers(cached(), 1), stale1);
  EXPECT_EQ(status(1), 0xB000 + b_seq - 1);  // only VM 1's own status writes
  // VM 0: the accepted PASID-selective one (guest PASID 1) made its translations exact.
  for (unsigned i = 0; i < kPages; ++i)
    EXPECT_EQ(xlate(cached(), space(0, 1), i), xlate(*model, space(0, 1), i));
  OwnerQueueStats st;
  ASSERT_EQ(layer().owner_queue_stats(queue[0], &st), 0);
  EXPECT_EQ(st.refused_host_only, 6u);
  EXPECT_EQ(st.refused_not_owned, 6u);
  EXPECT_EQ(st.refused_status, 2u);
  EXPECT_EQ(st.errors, 14u);
}

TEST_F(OwnerQueue, QueueErrorsOfTheQueueItself) {
  // A reserved bit (type 0x6 qw0 bit 8, docs/INVQ.md) is the decoder's IQE.
  put(0, 0, {piotlb_pasid(1, 1).qw0 | (1u << 8), 0});
  EXPECT_EQ(layer().owner_queue_write_tail(queue[0], 1), -EBUSY);
  EXPECT_EQ(state(0).fault, OwnerQueueFault::kDecode);
  EXPECT_EQ(state(0).decode_error, invq::DecodeError::kReservedBit);
  ASSERT_EQ(layer().owner_queue_clear_error(queue[0]), 0);
  put(0, 0, piotlb_pasid(1, 1));
  EXPECT_EQ(layer().owner_queue_write_tail(queue[0], kEntries), -EBUSY);  // beyond the queue
  EXPECT_EQ(state(0).fault, OwnerQueueFault::kTail);
  ASSERT_EQ(layer().owner_queue_clear_error(queue[0]), 0);
  EXPECT_EQ(layer().owner_queue_write_tail(queue[0], 1), 0);
  // The host takes the queue page away: the next fetch fails (IQE), nothing else breaks.
  ASSERT_EQ(layer().unmap(vms[0].did, 0, 2ull << 20), 0);
  put(0, 1, piotlb_pasid(1, 1));  // the host can still write the (now unmapped) page
  EXPECT_EQ(layer().owner_queue_write_tail(queue[0], 2), -EBUSY);
  EXPECT_EQ(state(0).fault, OwnerQueueFault::kFetch);
  EXPECT_EQ(state(0).head, 1u);
}

// An owner's queue reports through the engine's queue events like the host queue: each
// descriptor decoded (with its index and the op as decoded, in the guest's tags), then the
// error that stopped it at the bad descriptor's index.
TEST_F(OwnerQueue, ReportsQueueEvents) {
  std::vector<QueueEvent> seen;
  auto record = [](void *user, const Event &e) {
    static_cast<std::vector<QueueEvent> *>(user)->push_back(*e.queue);
  };
  const int id = cached().add_event_hook(kEventQueue, record, &seen);
  ASSERT_GE(id, 0);
  put(0, 0, piotlb_pasid(1, 1));
  put(0, 1, {piotlb_pasid(1, 1).qw0 | (1u << 8), 0});  // reserved bit 8 of type 0x6: IQE
  EXPECT_EQ(layer().owner_queue_write_tail(queue[0], 2), -EBUSY);
  ASSERT_EQ(cached().remove_event_hook(id), 0);
  ASSERT_EQ(seen.size(), 3u);
  for (const QueueEvent &q : seen) EXPECT_EQ(q.owner_queue, queue[0]) << "names its queue";
  EXPECT_EQ(seen[0].type, QueueEventType::kDescriptor);
  EXPECT_EQ(seen[0].index, 0u);
  EXPECT_TRUE(seen[0].is_op);
  EXPECT_EQ(seen[0].type_code, 0x6);
  EXPECT_EQ(seen[0].descriptor_bits, 256u);
  EXPECT_EQ(seen[1].type, QueueEventType::kDescriptor);
  EXPECT_EQ(seen[1].index, 1u);
  EXPECT_FALSE(seen[1].is_op) << "did not decode";
  EXPECT_EQ(seen[2].type, QueueEventType::kError);
  EXPECT_EQ(seen[2].index, 1u);
  EXPECT_NE(seen[2].error, nullptr);
}

// A wait's completion is reported once its status is in the guest's memory (VT-d 6.5.2.8:
// the status write lands after the descriptors before it completed), in the guest's terms:
// the status GPA it wrote, the slot, and the queue's id; the other VM's queue reports its own.
TEST_F(OwnerQueue, ReportsWaitCompletionAfterTheStatusLands) {
  struct Seen {
    MachineMemory *mem;
    uint32_t queue0;
    uint64_t status_hpa[2];
    std::vector<QueueEvent> events;
    std::vector<uint32_t> status_then;  // the guest's status dword when the event arrived
  } seen{&cached().memory(),
         queue[0],
         {vms[0].hpa_base + kStatusGpa, vms[1].hpa_base + kStatusGpa},
         {},
         {}};
  auto record = [](void *user, const Event &e) {
    auto *s = static_cast<Seen *>(user);
    if (e.queue->type != QueueEventType::kWaitCompleted) return;
    s->events.push_back(*e.queue);
    uint32_t v = 0;
    s->mem->read(s->status_hpa[e.queue->owner_queue == s->queue0 ? 0 : 1], &v, sizeof v);
    s->status_then.push_back(v);
  };
  const int id = cached().add_event_hook(kEventQueue, record, &seen);
  ASSERT_GE(id, 0);
  put(0, 0, piotlb_pasid(1, 1));
  put(0, 1, test::qi::wait_status(kStatusGpa, 0xA1));
  put(1, 0, test::qi::wait_status(kStatusGpa, 0xB1));
  EXPECT_EQ(layer().owner_queue_write_tail(queue[0], 2), 0);
  EXPECT_EQ(layer().owner_queue_write_tail(queue[1], 1), 0);
  ASSERT_EQ(cached().remove_event_hook(id), 0);
  ASSERT_EQ(seen.events.size(), 2u);
  EXPECT_EQ(seen.events[0].owner_queue, queue[0]);
  EXPECT_EQ(seen.events[0].index, 1u);
  EXPECT_TRUE(seen.events[0].status_write);
  EXPECT_EQ(seen.events[0].status_addr, kStatusGpa) << "the guest's address, not the host's";
  EXPECT_EQ(seen.events[0].status_data, 0xA1u);
  EXPECT_EQ(seen.status_then[0], 0xA1u) << "reported after the status write";
  EXPECT_EQ(seen.events[1].owner_queue, queue[1]);
  EXPECT_EQ(seen.events[1].index, 0u);
  EXPECT_EQ(seen.events[1].status_data, 0xB1u);
  EXPECT_EQ(seen.status_then[1], 0xB1u);
}

TEST_F(OwnerQueue, LifetimeAndOwnership) {
  uint32_t q;
  // Another owner's domain, unknown owner or domain.
  EXPECT_EQ(layer().owner_queue_create(vms[0].owner, vms[1].did, kQueueGpa, 128, 256, &q), -EPERM);
  EXPECT_EQ(layer().owner_queue_create(999, vms[0].did, kQueueGpa, 128, 256, &q), -ENOENT);
  EXPECT_EQ(layer().owner_queue_create(vms[0].owner, 999, kQueueGpa, 128, 256, &q), -ENOENT);
  // IQA geometry: 2^QS pages (QS <= 7), 128/256-bit, 4K aligned, every page mapped.
  EXPECT_EQ(layer().owner_queue_create(vms[0].owner, vms[0].did, kQueueGpa, 96, 256, &q), -EINVAL);
  EXPECT_EQ(layer().owner_queue_create(vms[0].owner, vms[0].did, kQueueGpa, 128, 64, &q), -EINVAL);
  EXPECT_EQ(layer().owner_queue_create(vms[0].owner, vms[0].did, kQueueGpa + 8, 128, 256, &q),
            -EINVAL);
  EXPECT_EQ(layer().owner_queue_create(vms[0].owner, vms[0].did, kQueueGpa, 256u << 7, 128, &q),
            0);  // 128 pages
  EXPECT_EQ(layer().owner_queue_create(vms[0].owner, vms[0].did, kQueueGpa, 512u << 7, 128, &q),
            -EINVAL);
  EXPECT_EQ(layer().owner_queue_create(vms[0].owner, vms[0].did, kGuestRam - k4K, 256, 256, &q),
            -EINVAL);  // second page beyond guest RAM
  // The queue pins its domain and owner.
  EXPECT_EQ(layer().destroy_owner(vms[0].owner), -EBUSY);
  // Direct queues replace forwarding: cache_invalidate is refused in this configuration.
  invq::InvalidationOp op;
  op.caches = invq::kCacheIotlb;
  op.scope = invq::Scope::kGlobal;
  EXPECT_EQ(layer().cache_invalidate(vms[0].owner, op), -EOPNOTSUPP);
  const NestingInfo info = layer().nesting_info();
  EXPECT_NE(info.features & kNestingFeatDirectInvld, 0u);
  EXPECT_EQ(info.features & kNestingFeatCacheInvld, 0u);
  EXPECT_EQ(layer().owner_queue_destroy(queue[0]), 0);
  EXPECT_EQ(layer().owner_queue_destroy(queue[0]), -ENOENT);
  EXPECT_EQ(layer().owner_queue_write_tail(queue[0], 1), -ENOENT);
  EXPECT_EQ(layer().owner_queue_destroy(q), 0);
}

// With a background worker a tail write returns before the status is written. The status GPA
// was translated when the wait was fetched; an unmap of that page waits for the processor
// (its own invalidation's wait comes after the queued one), so when the unmap returns the
// status is in the page the owner had, and a later wait aimed at it is IQE.
TEST(OwnerQueueWorker, StatusLandsBeforeAnUnmapOfItsPageReturns) {
  EngineConfig ec;
  ec.background_invalidation = true;
  BindConfig bc;
  bc.features = kNestingFeatAll | kNestingFeatDirectInvld;
  World w(ec, bc, 1);
  Vm vm = w.make_vm(0);
  uint32_t q = 0;
  ASSERT_EQ(w.layer().owner_queue_create(vm.owner, vm.did, kQueueGpa, kEntries, 256, &q), 0);
  constexpr uint64_t kLateStatus = 0x300000;  // in the 2M chunk [2M, 4M)
  auto put = [&](size_t index, Desc d) {
    const uint64_t qw[4] = {d.qw0, d.qw1, 0, 0};
    ASSERT_EQ(w.mem().write(vm.hpa_base + kQueueGpa + index * 32, qw, sizeof qw), 0);
  };
  put(0, test::qi::wait_status(kLateStatus, 0x77));
  ASSERT_EQ(w.layer().owner_queue_write_tail(q, 1), 0);
  ASSERT_EQ(w.layer().unmap(vm.did, 2ull << 20, 2ull << 20), 0);
  uint32_t status = 0;
  ASSERT_EQ(w.mem().read(vm.hpa_base + kLateStatus, &status, sizeof status), 0);
  EXPECT_EQ(status, 0x77u);
  put(1, test::qi::wait_status(kLateStatus, 0x88));
  EXPECT_EQ(w.layer().owner_queue_write_tail(q, 2), -EBUSY);
  OwnerQueueState s;
  ASSERT_EQ(w.layer().owner_queue_state(q, &s), 0);
  EXPECT_EQ(s.fault, OwnerQueueFault::kStatusAddress);
  EXPECT_EQ(s.head, 1u);
  w.engine().invalidation().wait();
  ASSERT_EQ(w.mem().read(vm.hpa_base + kLateStatus, &status, sizeof status), 0);
  EXPECT_EQ(status, 0x77u);  // the refused wait wrote nothing
  EXPECT_EQ(w.layer().owner_queue_destroy(q), 0);
}

TEST(OwnerQueueFeature, WithoutDirectInvldEveryCallIsRefused) {
  World w;  // default features: the v2 series' three
  Vm vm = w.make_vm(0);
  EXPECT_EQ(w.layer().nesting_info().features & kNestingFeatDirectInvld, 0u);
  EXPECT_NE(w.layer().nesting_info().features & kNestingFeatCacheInvld, 0u);
  uint32_t q = 0;
  OwnerQueueState s;
  OwnerQueueStats st;
  EXPECT_EQ(w.layer().owner_queue_create(vm.owner, vm.did, kQueueGpa, 128, 256, &q), -EOPNOTSUPP);
  EXPECT_EQ(w.layer().owner_queue_write_tail(1, 0), -EOPNOTSUPP);
  EXPECT_EQ(w.layer().owner_queue_state(1, &s), -EOPNOTSUPP);
  EXPECT_EQ(w.layer().owner_queue_clear_error(1), -EOPNOTSUPP);
  EXPECT_EQ(w.layer().owner_queue_stats(1, &st), -EOPNOTSUPP);
  EXPECT_EQ(w.layer().owner_queue_destroy(1), -EOPNOTSUPP);
}

}  // namespace
}  // namespace nestor::bindtest
