// Event hooks (nestor/events.h) on a real engine: what the events say is checked against what
// the architecture says happened (fault codes, which entries an operation must remove) and
// against the engine's other reports (results, the fault log), never against the emitting code.
#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <vector>

#include "machine.h"
#include "nestor/invalidation.h"
#include "nestor/vtd/faults.h"

namespace nestor::test {
namespace {

// Copies of every event a hook saw (events are only valid during the call).
struct Recorded {
  std::vector<TranslateEvent> translates, faults;
  std::vector<FillEvent> fills;
  struct Invalidation {
    InvalidationEvent ev;
    std::vector<RemovedEntry> entries;
  };
  std::vector<Invalidation> invalidations;
  std::vector<QueueEvent> queue;

  static void on_event(void *user, const Event &e) {
    auto *r = static_cast<Recorded *>(user);
    switch (e.kind) {
      case kEventTranslate:
        r->translates.push_back(*e.translate);
        break;
      case kEventFault:
        r->faults.push_back(*e.translate);
        break;
      case kEventCacheFill:
        r->fills.push_back(*e.fill);
        break;
      case kEventInvalidation:
        r->invalidations.push_back(
            {*e.invalidation, {e.invalidation->entries.begin(), e.invalidation->entries.end()}});
        break;
      case kEventQueue:
        r->queue.push_back(*e.queue);
        break;
      default:
        ADD_FAILURE() << "unexpected event kind " << e.kind;
    }
  }
};

TEST(EventHooks, RegistrationIsCheckedAndRemovalStopsDelivery) {
  Machine m(Mode::kSecondLevel);
  Recorded rec;
  EXPECT_EQ(m.cached->add_event_hook(0, Recorded::on_event, &rec), -EINVAL);
  EXPECT_EQ(m.cached->add_event_hook(1u << 30, Recorded::on_event, &rec), -EINVAL);
  EXPECT_EQ(m.cached->add_event_hook(kEventFault, nullptr, &rec), -EINVAL);
  std::vector<int> ids;
  for (size_t i = 0; i < EventHooks::kMaxHooks; ++i) {
    ids.push_back(m.cached->add_event_hook(kEventFault, Recorded::on_event, &rec));
    ASSERT_GE(ids.back(), 0);
  }
  EXPECT_EQ(m.cached->add_event_hook(kEventFault, Recorded::on_event, &rec), -ENOSPC);
  // Every hook registered for the kind is called.
  m.cached->translate(Machine::request(3, kAccessRead));
  EXPECT_EQ(rec.faults.size(), EventHooks::kMaxHooks);
  for (int id : ids) EXPECT_EQ(m.cached->remove_event_hook(id), 0);
  EXPECT_EQ(m.cached->remove_event_hook(ids[0]), -ENOENT);
  EXPECT_EQ(m.cached->remove_event_hook(-1), -ENOENT);
  m.cached->translate(Machine::request(3, kAccessRead));
  EXPECT_EQ(rec.faults.size(), EventHooks::kMaxHooks);
}

// "Why did this DMA fault": the fault event alone names the VT-d reason, stage, level and
// address. Oracle: VT-d spec, scalable-mode fault reasons (Linux dmar.c's table has the same
// codes): 0x79 "second-level paging entry is not present" (SL entry with R = W = 0), 0x85 a
// write through an entry without write permission; and the engine's fault log, a separate
// report of the same fault.
TEST(EventHooks, FaultEventSaysWhy) {
  Machine m(Mode::kSecondLevel);
  ASSERT_EQ(m.map(0, 0, 12, /*writable=*/false), build::Status::kOk);
  Recorded rec;
  const int id = m.cached->add_event_hook(kEventFault, Recorded::on_event, &rec);
  ASSERT_GE(id, 0);
  const Result ok = m.cached->translate(Machine::request(0, kAccessRead));
  ASSERT_TRUE(ok.ok);
  EXPECT_TRUE(rec.faults.empty()) << "a successful translation is not a fault";

  const Result unmapped = m.cached->translate(Machine::request(1, kAccessRead, 0x10));
  ASSERT_FALSE(unmapped.ok);
  ASSERT_EQ(rec.faults.size(), 1u);
  const TranslateEvent &f = rec.faults[0];
  EXPECT_EQ(uint8_t(f.result.fault.reason), 0x79);
  EXPECT_EQ(f.result.fault.stage, FaultStage::kSecondLevel);
  EXPECT_EQ(f.result.fault.level, 1) << "the 4K leaf table's entry is the one not present";
  EXPECT_EQ(f.result.fault.address, kIovaBase + 4096 + 0x10);
  EXPECT_EQ(f.request.iova, kIovaBase + 4096 + 0x10);
  EXPECT_EQ(f.request.source_id, kSid);
  EXPECT_EQ(f.source, TranslateSource::kWalk);
  EXPECT_EQ(f.domain, kDid);
  EXPECT_FALSE(f.fault_suppressed);

  const Result denied = m.cached->translate(Machine::request(0, kAccessWrite));
  ASSERT_FALSE(denied.ok);
  ASSERT_EQ(rec.faults.size(), 2u);
  EXPECT_EQ(uint8_t(rec.faults[1].result.fault.reason), 0x85);

  // A device with no context entry faults in the structures, before any walk.
  Request stranger = Machine::request(0, kAccessRead);
  stranger.source_id = 0x2300;
  ASSERT_FALSE(m.cached->translate(stranger).ok);
  ASSERT_EQ(rec.faults.size(), 3u);
  EXPECT_EQ(rec.faults[2].source, TranslateSource::kStructures);
  EXPECT_EQ(rec.faults[2].result.fault.stage, FaultStage::kStructures);

  // The fault log recorded the same three faults, in order.
  FaultRecord log[4];
  ASSERT_EQ(m.cached->fault_log().drain(log, 4), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(log[i].fault.reason, rec.faults[i].result.fault.reason) << i;
    EXPECT_EQ(log[i].fault.address, rec.faults[i].result.fault.address) << i;
    EXPECT_EQ(log[i].request.source_id, rec.faults[i].request.source_id) << i;
  }
  EXPECT_EQ(m.cached->remove_event_hook(id), 0);
}

// Translation events say where the answer came from: a walk first, then the cache that kept it.
TEST(EventHooks, TranslateEventsNameTheirSource) {
  Machine m(Mode::kSecondLevel);
  ASSERT_EQ(m.map(0, 5, 12, true), build::Status::kOk);
  Recorded rec;
  const int id = m.cached->add_event_hook(kEventTranslate, Recorded::on_event, &rec);
  ASSERT_GE(id, 0);
  const Request r0 = Machine::request(0, kAccessRead, 0x123);
  const Result first = m.cached->translate(r0);
  const Result second = m.cached->translate(r0);
  AddressSpace handle = m.cached->open(kSid, true, kPasid);
  const Result h1 = handle.translate(r0.iova, kAccessRead);
  const Result h2 = handle.translate(r0.iova, kAccessRead);
  ASSERT_EQ(rec.translates.size(), 4u);
  EXPECT_EQ(rec.translates[0].source, TranslateSource::kWalk);
  EXPECT_EQ(rec.translates[1].source, TranslateSource::kIotlb);
  EXPECT_EQ(rec.translates[2].source, TranslateSource::kIotlb) << "the handle's first look";
  EXPECT_EQ(rec.translates[3].source, TranslateSource::kHandleCache);
  const Result *results[] = {&first, &second, &h1, &h2};
  for (size_t i = 0; i < 4; ++i) {
    const TranslateEvent &t = rec.translates[i];
    EXPECT_TRUE(same(t.result, *results[i])) << i;
    EXPECT_EQ(t.result.t.out, kDataBase + 5 * 4096 + 0x123) << i;
    EXPECT_EQ(t.stages, StageSet::kSecondOnly) << i;
    EXPECT_EQ(t.domain, kDid) << i;
    EXPECT_EQ(t.request.iova, r0.iova) << i;
  }
  // Removed: the same translations report nothing, and still translate.
  EXPECT_EQ(m.cached->remove_event_hook(id), 0);
  EXPECT_TRUE(same(handle.translate(r0.iova, kAccessRead), h2));
  EXPECT_TRUE(same(m.cached->translate(r0), second));
  EXPECT_EQ(rec.translates.size(), 4u);
}

// Fills: one per cache a first nested translation fills (context, PASID, IOTLB, first-level
// and second-level paging-structure entries, nested first-level table pages), all accepted.
TEST(EventHooks, FillEventsCoverEveryCache) {
  Machine m(Mode::kNested);
  ASSERT_EQ(m.map(0, 9, 12, true), build::Status::kOk);
  Recorded rec;
  const int id = m.cached->add_event_hook(kEventCacheFill, Recorded::on_event, &rec);
  ASSERT_GE(id, 0);
  ASSERT_TRUE(m.cached->translate(Machine::request(0, kAccessRead)).ok);
  std::set<EventCache> seen;
  for (const FillEvent &f : rec.fills) {
    seen.insert(f.cache);
    EXPECT_TRUE(f.accepted) << event_cache_name(f.cache);
  }
  EXPECT_EQ(seen.size(), kEventCaches);
  const auto iotlb = std::find_if(rec.fills.begin(), rec.fills.end(),
                                  [](const FillEvent &f) { return f.cache == EventCache::kIotlb; });
  ASSERT_NE(iotlb, rec.fills.end());
  EXPECT_EQ(iotlb->address, kIovaBase);
  EXPECT_EQ(iotlb->output, m.host_page_of(9 * 4096));
  EXPECT_EQ(iotlb->domain, kDid);
  EXPECT_EQ(iotlb->pasid, kPasid);
  // Already cached: a second translation fills nothing.
  const size_t fills = rec.fills.size();
  ASSERT_TRUE(m.cached->translate(Machine::request(0, kAccessRead)).ok);
  EXPECT_EQ(rec.fills.size(), fills);
  EXPECT_EQ(m.cached->remove_event_hook(id), 0);
}

// "What did this invalidation remove": entry by entry, and which of them the operation did not
// require. Oracle: VT-d's PASID-based IOTLB invalidation (6.5.2.4) removes the first-level
// mappings of (DID, PASID) in the 2^AM-page range, and allows more to go; the test knows which
// pages it cached and which it named.
TEST(EventHooks, InvalidationEventListsWhatWasRemoved) {
  EngineConfig cfg;
  cfg.promote_threshold_pages = 8;  // larger ranges widen to the whole PASID
  Machine m(Mode::kFirstLevel, cfg);
  for (uint64_t p = 0; p < 32; ++p) ASSERT_EQ(m.map(p, p, 12, true), build::Status::kOk);
  for (uint64_t p = 0; p < 32; ++p) ASSERT_TRUE(m.cached->translate(Machine::request(p, 1)).ok);
  Recorded rec;
  const int id = m.cached->add_event_hook(kEventInvalidation, Recorded::on_event, &rec);
  ASSERT_GE(id, 0);

  m.invalidate_pages(4, 2, /*leaf=*/true);  // pages 4 and 5
  ASSERT_EQ(rec.invalidations.size(), 1u);
  {
    const auto &[ev, entries] = rec.invalidations[0];
    EXPECT_EQ(ev.op.scope, invq::Scope::kRange);
    EXPECT_EQ(ev.op.addr, kIovaBase + 4 * 4096);
    EXPECT_EQ(ev.op.npages, 2u);
    EXPECT_EQ(ev.removed[size_t(EventCache::kIotlb)], 2u);
    EXPECT_EQ(ev.over[size_t(EventCache::kIotlb)], 0u);
    // IH (leaf): the paging-structure entries stay.
    EXPECT_EQ(ev.removed[size_t(EventCache::kPscFirstLevel)], 0u);
    std::set<uint64_t> pages;
    for (const RemovedEntry &e : entries) {
      ASSERT_EQ(e.cache, EventCache::kIotlb);
      EXPECT_TRUE(e.required);
      EXPECT_EQ(e.key.did, kDid);
      EXPECT_EQ(e.key.pasid, kPasid);
      pages.insert(e.key.page - (kIovaBase >> 12));
    }
    EXPECT_EQ(pages, (std::set<uint64_t>{4, 5}));
  }

  // 16 pages is above the threshold: the engine drops the whole PASID, and says that the 14
  // cached pages outside the range (30 left, minus pages 8..23) went without being named.
  m.invalidate_pages(8, 16, /*leaf=*/true);
  ASSERT_EQ(rec.invalidations.size(), 2u);
  {
    const auto &[ev, entries] = rec.invalidations[1];
    EXPECT_EQ(ev.removed[size_t(EventCache::kIotlb)], 30u);
    EXPECT_EQ(ev.over[size_t(EventCache::kIotlb)], 14u);
    for (const RemovedEntry &e : entries) {
      if (e.cache != EventCache::kIotlb) continue;
      const uint64_t page = e.key.page - (kIovaBase >> 12);
      EXPECT_EQ(e.required, page >= 8 && page < 24) << "page " << page;
    }
  }

  // Nothing cached any more: the next operation removes nothing.
  m.invalidate_scope(invq::Scope::kPasid, invq::kCacheIotlb);
  ASSERT_EQ(rec.invalidations.size(), 3u);
  EXPECT_EQ(rec.invalidations[2].ev.removed[size_t(EventCache::kIotlb)], 0u);
  EXPECT_EQ(m.cached->remove_event_hook(id), 0);
}

// The queue reports each descriptor it decodes, each wait it completes, and the error that
// stops it, with the descriptor's index. Oracle: VT-d 6.5.2 descriptor formats (type in
// bits 3:0 of the low quadword; 0x2 IOTLB invalidate, 0x5 invalidation wait) and IQE for an
// unknown type.
TEST(EventHooks, QueueEventsFollowTheDescriptors) {
  Machine m(Mode::kSecondLevel);
  Recorded rec;
  const int id = m.cached->add_event_hook(kEventQueue, Recorded::on_event, &rec);
  ASSERT_GE(id, 0);
  MachineMemory &mem = m.cached->memory();
  const uint64_t queue_base = kDataBase + (8ull << 20);
  const uint64_t status = queue_base + 4096;
  EngineInvalidation &inv = m.cached->invalidation();
  ASSERT_EQ(inv.qi_configure(queue_base, 256, 128), 0);
  // Domain-selective IOTLB invalidation (granularity 2 in bits 5:4, DID in 31:16), then a wait
  // with a status write (SW, bit 5; data in 63:32, address in the high quadword).
  const uint64_t descs[][2] = {
      {0x2 | (2ull << 4) | (uint64_t(kDid) << 16), 0},
      {0x5 | (1ull << 5) | (0x600DDA7Aull << 32), status},
      {0xF, 0},  // reserved type: the queue stops here
  };
  ASSERT_EQ(mem.write(queue_base, descs, sizeof descs), 0);
  EXPECT_EQ(inv.qi_write_tail(3), -EBUSY);
  std::vector<QueueEventType> types;
  for (const QueueEvent &q : rec.queue) types.push_back(q.type);
  // The wait completes when its batch is processed, after the error stopped the fetching.
  ASSERT_EQ(rec.queue.size(), 5u);
  EXPECT_EQ(rec.queue[0].type, QueueEventType::kDescriptor);
  EXPECT_EQ(rec.queue[0].index, 0u);
  EXPECT_TRUE(rec.queue[0].is_op);
  EXPECT_EQ(rec.queue[0].type_code, 0x2);
  EXPECT_EQ(rec.queue[0].op.scope, invq::Scope::kDomain);
  EXPECT_EQ(rec.queue[0].op.did, kDid);
  EXPECT_EQ(rec.queue[1].type, QueueEventType::kDescriptor);
  EXPECT_TRUE(rec.queue[1].is_wait);
  EXPECT_EQ(rec.queue[1].status_addr, status);
  EXPECT_EQ(rec.queue[1].status_data, 0x600DDA7Au);
  EXPECT_EQ(rec.queue[2].type, QueueEventType::kDescriptor);
  EXPECT_EQ(rec.queue[2].index, 2u);
  EXPECT_FALSE(rec.queue[2].is_op || rec.queue[2].is_wait) << "did not decode";
  EXPECT_EQ(rec.queue[3].type, QueueEventType::kError);
  EXPECT_EQ(rec.queue[3].index, 2u);
  ASSERT_NE(rec.queue[3].error, nullptr);
  EXPECT_EQ(rec.queue[4].type, QueueEventType::kWaitCompleted);
  EXPECT_EQ(rec.queue[4].index, 1u);
  for (const QueueEvent &q : rec.queue) EXPECT_EQ(q.owner_queue, 0u) << "the host's queue";
  uint32_t written = 0;
  ASSERT_EQ(mem.read(status, &written, 4), 0);
  EXPECT_EQ(written, 0x600DDA7Au) << "the completion event came after the status write";
  EXPECT_EQ(m.cached->remove_event_hook(id), 0);
}

}  // namespace
}  // namespace nestor::test
