// Event hooks through the C ABI (issue 18): every kind registered with nestor_event_hook_add,
// the engine driven through nestor_* calls only, and the C events' fields checked against the
// architecture and against what the test itself built and asked for -- never against the
// engine's own answers alone.
//
// The oracle for fault reasons is VT-d's scalable-mode fault-reason table as Linux's dmar.c
// prints it (drivers/iommu/intel/dmar.c, dma_remap_sm_fault_reasons): 0x71 "SM: Present bit in
// first-level paging entry is clear"; 0x79 "SM: Read/Write permission error in second-level
// paging entry" (a second-level entry is not present when R = W = 0); 0x41 "SM: Present bit in
// Context Entry is clear". The fault level is the paging level whose entry the walk found not
// present (PML4E = 4, PDPE = 3, PDE = 2, PTE = 1), which the test decides by which entries it
// wrote.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "capi_fixture.h"
#include "capi_vm.h"
#include "flat_memory.h"
#include "nestor.h"
#include "nestor/walkers/builder.h"
#include "qi_descriptors.h"

namespace nestor {
namespace {

using test::BumpSpace;
using test::CapiEngine;
using CMem = test::CapiEngine::Mem;
using FlB = build::FirstLevelBuilder<BumpSpace<CMem>>;
using SlB = build::SecondLevelBuilder<BumpSpace<CMem>>;
using namespace test::qi;  // descriptor encoders

constexpr uint64_t kOut = 0x0000'0066'0000'0000ull;
constexpr uint8_t R = NESTOR_ACCESS_READ, W = NESTOR_ACCESS_WRITE, X = NESTOR_ACCESS_EXEC;
constexpr uint64_t kUserRW = build::fl_leaf_bits(true, true, true);
constexpr uint16_t kSid = 0x0210;
constexpr uint16_t kDid = 5;
constexpr uint32_t kPasid = 1;
constexpr uint64_t kRing = 0x3F0'0000;  // away from the fixture's bump allocators
constexpr uint64_t kStatus = 0x3F8'0000;

// Pages at iova 0x10000.. (eight unless a test says), each on its own (scattered) host page.
constexpr uint64_t kBase = 0x10000;
constexpr unsigned kPages = 8;
uint64_t host_page(unsigned i) {
  return kOut + uint64_t(7 * i + 3) * 0x1000;
}

// A deep copy of one C event: the event and what it points to die with the call.
struct Copied {
  uint32_t kind = 0;
  std::optional<nestor_event_translate> translate;
  std::optional<nestor_event_fill> fill;
  std::optional<nestor_event_invalidation> invalidation;
  std::vector<nestor_event_removed> removed;
  std::optional<nestor_event_queue> queue;
  std::string queue_error;
  std::optional<nestor_event_bind> bind;
};

// Records every event of a hook, checking the envelope's contract on the way: size, exactly
// one member set, and that it is the member `kind` names.
struct Recorder {
  static void fn(void *user, const nestor_event *ev) {
    auto *self = static_cast<Recorder *>(user);
    EXPECT_EQ(ev->size, sizeof(nestor_event));
    const int members = (ev->translate != nullptr) + (ev->fill != nullptr) +
                        (ev->invalidation != nullptr) + (ev->queue != nullptr) +
                        (ev->bind != nullptr);
    EXPECT_EQ(members, 1) << nestor_event_kind_name(ev->kind);
    Copied c;
    c.kind = ev->kind;
    if (ev->translate) {
      EXPECT_TRUE(ev->kind == NESTOR_EVENT_TRANSLATE || ev->kind == NESTOR_EVENT_FAULT);
      EXPECT_EQ(ev->translate->size, sizeof(nestor_event_translate));
      c.translate = *ev->translate;
    }
    if (ev->fill) {
      EXPECT_EQ(ev->kind, NESTOR_EVENT_FILL);
      EXPECT_EQ(ev->fill->size, sizeof(nestor_event_fill));
      c.fill = *ev->fill;
    }
    if (const nestor_event_invalidation *inv = ev->invalidation) {
      EXPECT_EQ(ev->kind, NESTOR_EVENT_INVALIDATION);
      EXPECT_EQ(inv->size, sizeof(nestor_event_invalidation));
      EXPECT_EQ(inv->entry_size, sizeof(nestor_event_removed));
      c.invalidation = *inv;
      for (uint64_t i = 0; i < inv->entry_count; ++i)
        c.removed.push_back(*nestor_event_removed_at(inv, i));
      c.invalidation->entries = nullptr;  // dangling after the call
    }
    if (ev->queue) {
      EXPECT_EQ(ev->kind, NESTOR_EVENT_QUEUE);
      EXPECT_EQ(ev->queue->size, sizeof(nestor_event_queue));
      c.queue = *ev->queue;
      if (ev->queue->error) c.queue_error = ev->queue->error;
      c.queue->error = nullptr;
    }
    if (ev->bind) {
      EXPECT_EQ(ev->kind, NESTOR_EVENT_BIND);
      EXPECT_EQ(ev->bind->size, sizeof(nestor_event_bind));
      c.bind = *ev->bind;
    }
    self->events.push_back(std::move(c));
  }
  std::vector<Copied> of(uint32_t kind) const {
    std::vector<Copied> out;
    for (const Copied &c : events)
      if (c.kind == kind) out.push_back(c);
    return out;
  }
  std::vector<Copied> events;
};

class Events : public ::testing::Test {
 protected:
  // A first-level-only address space for (kSid, kPasid) in domain kDid.
  FlB &first_level() {
    fl_.emplace(x.tables, x.tables.alloc_table(), 4);
    x.layout.device(kSid);
    vtdw_pasid_entry pe = test::pe_first_level(fl_->root());
    pe.did = kDid;
    x.layout.pasid(kSid, kPasid, pe);
    return *fl_;
  }
  // A first-level space with `n` pages at kBase (page i on host_page(i)), settled.
  void map_pages(unsigned n) {
    FlB &fl = first_level();
    for (unsigned i = 0; i < n; ++i)
      ASSERT_EQ(fl.map(kBase + i * 0x1000, host_page(i), 12, kUserRW), build::Status::kOk);
    settle();
  }
  // Translates pages [0, n) (a walk and an IOTLB fill each, the first time).
  void use_pages(unsigned n) {
    for (unsigned i = 0; i < n; ++i) ASSERT_EQ(tr(kBase + i * 0x1000).hpa, host_page(i));
  }
  // An IOTLB invalidation of (kDid, kPasid) at `scope`, to fill in further.
  static nestor_inv_op iotlb_op(uint8_t scope) {
    nestor_inv_op op{};
    op.cache = NESTOR_CACHE_IOTLB;
    op.scope = scope;
    op.did = kDid;
    op.pasid = kPasid;
    return op;
  }
  // The fixture replaces its engine on the first translation after memory writes; after this
  // the engine is final, hooks can be added and the test writes no more structures through it.
  // Its fault is drained from the log.
  void settle() {
    x.fault(kSid, true, kPasid, 0xFFFF'F000);
    x.drain();
  }
  int hook(uint32_t kinds, Recorder *r) {
    int id = -1;
    EXPECT_EQ(nestor_event_hook_add(x.e, kinds, &Recorder::fn, r, &id), 0);
    return id;
  }
  // Direct translation: x.tr() could replace the engine (and its hooks).
  nestor_result tr(uint64_t iova, uint8_t access = R, uint16_t sid = kSid) {
    nestor_result r{};
    EXPECT_GE(vtdw_translate(x.e, sid, 1, kPasid, iova, access, 0, &r), 0);
    return r;
  }

  CapiEngine x;
  std::optional<FlB> fl_;
};

// ---- translation and fault events ------------------------------------------------------------

TEST_F(Events, NotPresentFaultGivesReasonStageAndLevelOfTheMissingEntry) {
  FlB &fl = first_level();
  // One 4K page: PML4E[0] -> PDPTE[1] -> PDE[0] -> PTE[0] present, nothing else.
  ASSERT_EQ(fl.map(0x4000'0000, kOut, 12, kUserRW), build::Status::kOk);
  settle();
  Recorder faults;
  hook(NESTOR_EVENT_FAULT, &faults);

  struct Case {
    uint64_t iova;
    uint8_t level;  // the level whose entry is not present
  };
  const Case cases[] = {{0x4000'1000, 1},      // PTE[1] in the present page table
                        {0x4020'0000, 2},      // PDE[1]
                        {0x8000'0000, 3},      // PDPTE[2]
                        {0x80'0000'0000, 4}};  // PML4E[1]
  for (const Case &c : cases) {
    SCOPED_TRACE(testing::Message() << std::hex << "iova 0x" << c.iova);
    faults.events.clear();
    const nestor_result r = tr(c.iova + 0x123, W);
    ASSERT_EQ(r.fault, NESTOR_FAULT_FL_ENTRY_NOT_PRESENT);
    ASSERT_EQ(faults.events.size(), 1u);
    const Copied &ev = faults.events[0];
    ASSERT_EQ(ev.kind, NESTOR_EVENT_FAULT);
    const nestor_event_translate &t = *ev.translate;
    EXPECT_EQ(t.result.fault, 0x71);
    EXPECT_STREQ(nestor_fault_name(t.result.fault),
                 "SM: Present bit in first-level paging entry is clear");
    EXPECT_EQ(t.fault_stage, NESTOR_STAGE_FIRST_LEVEL);
    EXPECT_STREQ(nestor_fault_stage_name(t.fault_stage), "first-level");
    EXPECT_EQ(t.result.level, c.level);
    EXPECT_EQ(t.fault_address, c.iova + 0x123);  // first-level faults name the input address
    EXPECT_EQ(t.result.hpa, 0u);
    // The request as the device made it.
    EXPECT_EQ(t.request.source_id, kSid);
    EXPECT_EQ(t.request.has_pasid, 1);
    EXPECT_EQ(t.request.pasid, kPasid);
    EXPECT_EQ(t.request.iova, c.iova + 0x123);
    EXPECT_EQ(t.request.access, W);
    EXPECT_EQ(t.request.privileged, 0);
    // The address space the PASID entry names.
    EXPECT_EQ(t.source, NESTOR_TRANSLATE_SOURCE_WALK);
    EXPECT_EQ(t.stages, NESTOR_STAGES_FIRST_ONLY);
    EXPECT_EQ(t.domain, kDid);
    EXPECT_EQ(t.space, kPasid);
    EXPECT_EQ(t.fault_suppressed, 0);
    // The same fault went to the log (FPD clear).
    const auto log = x.drain();
    ASSERT_EQ(log.size(), 1u);
    EXPECT_EQ(log[0].reason, t.result.fault);
    EXPECT_EQ(log[0].level, t.result.level);
    EXPECT_EQ(log[0].address, t.fault_address);
  }
  // A translation that succeeds is no fault event.
  faults.events.clear();
  EXPECT_EQ(tr(0x4000'0000).fault, 0);
  EXPECT_TRUE(faults.events.empty());
}

TEST_F(Events, TranslateEventCarriesResultAndWhereItCameFrom) {
  FlB &fl = first_level();
  ASSERT_EQ(fl.map(0x5000, kOut + 0x7000, 12, kUserRW), build::Status::kOk);
  settle();
  Recorder all, faults, both;
  hook(NESTOR_EVENT_TRANSLATE, &all);
  hook(NESTOR_EVENT_FAULT, &faults);
  hook(NESTOR_EVENT_TRANSLATE | NESTOR_EVENT_FAULT, &both);
  ASSERT_EQ(tr(0x5abc, R | W).hpa, kOut + 0x7abc);  // walks, fills the IOTLB
  ASSERT_EQ(tr(0x5def).hpa, kOut + 0x7def);         // IOTLB hit
  ASSERT_EQ(tr(0x6000).fault, NESTOR_FAULT_FL_ENTRY_NOT_PRESENT);
  const auto ev = all.of(NESTOR_EVENT_TRANSLATE);
  ASSERT_EQ(ev.size(), 3u) << "every translation, faults included";
  const nestor_event_translate &walk = *ev[0].translate, &hit = *ev[1].translate;
  EXPECT_EQ(walk.source, NESTOR_TRANSLATE_SOURCE_WALK);
  EXPECT_STREQ(nestor_translate_source_name(walk.source), "walk");
  EXPECT_EQ(walk.result.fault, 0);
  EXPECT_EQ(walk.result.hpa, kOut + 0x7abc);
  EXPECT_EQ(walk.result.page_size, 4096u);
  EXPECT_EQ(walk.result.level, 1);
  EXPECT_EQ(walk.result.perms & (R | W), R | W);
  EXPECT_EQ(walk.fault_stage, NESTOR_STAGE_NONE);
  EXPECT_EQ(walk.request.access, R | W);
  EXPECT_EQ(hit.source, NESTOR_TRANSLATE_SOURCE_IOTLB);
  EXPECT_EQ(hit.result.hpa, kOut + 0x7def);
  EXPECT_EQ(hit.request.iova, 0x5defu);
  EXPECT_EQ(ev[2].translate->result.fault, NESTOR_FAULT_FL_ENTRY_NOT_PRESENT);
  // A hook for faults only saw the fault; one for both kinds saw the fault once as each.
  ASSERT_EQ(faults.events.size(), 1u);
  EXPECT_EQ(faults.events[0].translate->request.iova, 0x6000u);
  EXPECT_EQ(both.of(NESTOR_EVENT_TRANSLATE).size(), 3u);
  ASSERT_EQ(both.of(NESTOR_EVENT_FAULT).size(), 1u);
  EXPECT_EQ(both.of(NESTOR_EVENT_FAULT)[0].translate->request.iova, 0x6000u);
}

TEST_F(Events, HandleTranslationsAreReportedToo) {
  FlB &fl = first_level();
  ASSERT_EQ(fl.map(0x5000, kOut + 0x7000, 12, kUserRW), build::Status::kOk);
  settle();
  Recorder all;
  hook(NESTOR_EVENT_TRANSLATE, &all);
  nestor_handle *h = nestor_handle_open(x.e, kSid, 1, kPasid, 0);
  ASSERT_NE(h, nullptr);
  nestor_result r{};
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(nestor_handle_translate(h, 0x5010, R, &r), 0);
    ASSERT_EQ(r.hpa, kOut + 0x7010);
  }
  nestor_handle_close(h);
  ASSERT_EQ(all.events.size(), 3u);
  for (const Copied &c : all.events) {
    EXPECT_EQ(c.translate->request.source_id, kSid);
    EXPECT_EQ(c.translate->request.pasid, kPasid);
    EXPECT_EQ(c.translate->request.iova, 0x5010u);
    EXPECT_EQ(c.translate->result.hpa, kOut + 0x7010);
  }
  EXPECT_EQ(all.events[0].translate->source, NESTOR_TRANSLATE_SOURCE_WALK);
  EXPECT_EQ(all.events[2].translate->source, NESTOR_TRANSLATE_SOURCE_HANDLE_CACHE);
}

TEST_F(Events, StructureFaultHasNoAddressSpace) {
  first_level();
  settle();
  Recorder faults;
  hook(NESTOR_EVENT_FAULT, &faults);
  // Same bus and context table, another function: its context entry was never written.
  const uint16_t other = kSid + 1;
  ASSERT_EQ(tr(0x1000, R, other).fault, NESTOR_FAULT_CONTEXT_ENTRY_NOT_PRESENT);
  ASSERT_EQ(faults.events.size(), 1u);
  const nestor_event_translate &t = *faults.events[0].translate;
  EXPECT_STREQ(nestor_fault_name(t.result.fault), "SM: Present bit in Context Entry is clear");
  EXPECT_EQ(t.source, NESTOR_TRANSLATE_SOURCE_STRUCTURES);
  EXPECT_EQ(t.fault_stage, NESTOR_STAGE_STRUCTURES);
  EXPECT_EQ(t.request.source_id, other);
}

TEST_F(Events, NestedSecondLevelFaultNamesTheGpa) {
  // Nested (kSid, kPasid): IOVA 0x7000'0000 (2M first-level page) -> GPA 0x2000'0000; the
  // second level maps only GPA 0x2000'3000.
  SlB sl(x.tables, x.tables.alloc_table(), 4);
  test::GuestSpace<CMem, BumpSpace<CMem>> guest(x.mem, x.tables, sl, 0x1000'0000, 0x1100'0000);
  build::FirstLevelBuilder<decltype(guest)> fl(guest, guest.alloc_table(), 4);
  ASSERT_EQ(fl.map(0x7000'0000, 0x2000'0000, 21, kUserRW), build::Status::kOk);
  ASSERT_EQ(sl.map(0x2000'3000, kOut + 0x9000, 12, build::sl_leaf_bits(R | W | X)),
            build::Status::kOk);
  x.layout.device(kSid);
  vtdw_pasid_entry pe = test::pe_nested(fl.root(), sl.root());
  pe.did = kDid;
  x.layout.pasid(kSid, kPasid, pe);
  settle();
  Recorder faults;
  hook(NESTOR_EVENT_FAULT, &faults);
  ASSERT_EQ(tr(0x7000'3456).hpa, kOut + 0x9456);
  // GPA 0x2000'5000: its second-level page table exists (it holds 0x2000'3000), its PTE not.
  ASSERT_EQ(tr(0x7000'5678).fault, NESTOR_FAULT_SL_ENTRY_NOT_PRESENT);
  ASSERT_EQ(faults.events.size(), 1u);
  const nestor_event_translate &t = *faults.events[0].translate;
  EXPECT_STREQ(nestor_fault_name(t.result.fault),
               "SM: Read/Write permission error in second-level paging entry");
  EXPECT_EQ(t.fault_stage, NESTOR_STAGE_SECOND_LEVEL);
  EXPECT_EQ(t.result.level, 1);
  EXPECT_EQ(t.fault_address, 0x2000'5678u) << "a second-level fault names the GPA";
  EXPECT_EQ(t.request.iova, 0x7000'5678u);
  EXPECT_EQ(t.stages, NESTOR_STAGES_NESTED);
  EXPECT_EQ(t.domain, kDid);
}

// ---- fill and invalidation events --------------------------------------------------------------

TEST_F(Events, FillsReportTheIotlbEntriesTheWalksMade) {
  map_pages(kPages);
  Recorder fills;
  hook(NESTOR_EVENT_FILL, &fills);
  use_pages(kPages);
  std::vector<nestor_event_fill> iotlb;
  for (const Copied &c : fills.events) {
    EXPECT_LT(c.fill->cache, NESTOR_EVENT_CACHES);
    if (c.fill->cache == NESTOR_EVENT_CACHE_IOTLB) iotlb.push_back(*c.fill);
  }
  ASSERT_EQ(iotlb.size(), kPages);
  for (unsigned i = 0; i < kPages; ++i) {
    SCOPED_TRACE(i);
    const nestor_event_fill &f = iotlb[i];
    EXPECT_STREQ(nestor_event_cache_name(f.cache), "iotlb");
    EXPECT_EQ(f.accepted, 1);
    EXPECT_EQ(f.address >> 12, (kBase >> 12) + i);
    EXPECT_EQ(f.output >> 12, host_page(i) >> 12);
    EXPECT_EQ(f.page_shift, 12);
    EXPECT_EQ(f.perms & (R | W), R | W);
    EXPECT_EQ(f.domain, kDid);
    EXPECT_EQ(f.pasid, kPasid);
  }
  // Hits fill nothing.
  fills.events.clear();
  ASSERT_EQ(tr(kBase).hpa, host_page(0));
  EXPECT_TRUE(fills.events.empty());
}

TEST_F(Events, RangeInvalidationReportsExactlyTheEntriesInTheRange) {
  map_pages(kPages);
  use_pages(kPages);
  Recorder inv, trs;
  hook(NESTOR_EVENT_INVALIDATION, &inv);

  // Pages 2, 3, 4 of the eight: a leaf (IH) range invalidation of the IOTLB.
  nestor_inv_op op = iotlb_op(NESTOR_SCOPE_RANGE);
  op.addr = kBase + 2 * 0x1000;
  op.npages = 3;
  op.leaf = 1;
  ASSERT_EQ(nestor_inv_submit(x.e, &op), 0);
  EXPECT_TRUE(inv.events.empty()) << "submitting only queues";
  ASSERT_EQ(nestor_inv_wait(x.e), 0);

  ASSERT_EQ(inv.events.size(), 1u);
  const nestor_event_invalidation &ev = *inv.events[0].invalidation;
  EXPECT_EQ(ev.op.cache, NESTOR_CACHE_IOTLB);
  EXPECT_EQ(ev.op.scope, NESTOR_SCOPE_RANGE);
  EXPECT_EQ(ev.op.did, kDid);
  EXPECT_EQ(ev.op.pasid, kPasid);
  EXPECT_EQ(ev.op.addr, op.addr);
  EXPECT_EQ(ev.op.npages, 3u);
  EXPECT_EQ(ev.op.leaf, 1);
  EXPECT_EQ(ev.op.addr_is_gpa, 0);
  // Exactly the three IOTLB entries the test filled in the range; nothing was over-invalidated.
  std::set<uint64_t> pages;
  uint64_t per_cache[NESTOR_EVENT_CACHE_SLOTS] = {}, over[NESTOR_EVENT_CACHE_SLOTS] = {};
  for (const nestor_event_removed &r : inv.events[0].removed) {
    ASSERT_LT(r.cache, NESTOR_EVENT_CACHES);
    ++per_cache[r.cache];
    over[r.cache] += !r.required;
    if (r.cache != NESTOR_EVENT_CACHE_IOTLB) continue;
    pages.insert(r.page);
    EXPECT_EQ(r.did, kDid);
    EXPECT_EQ(r.pasid, kPasid);
    EXPECT_EQ(r.pages, 1u);
    EXPECT_EQ(r.required, 1);
    EXPECT_EQ(r.second_level, 0);
    EXPECT_EQ(r.nested, 0);
  }
  const uint64_t first = (kBase >> 12) + 2;
  EXPECT_EQ(pages, (std::set<uint64_t>{first, first + 1, first + 2}));
  EXPECT_EQ(ev.removed[NESTOR_EVENT_CACHE_IOTLB], 3u);
  EXPECT_EQ(ev.over[NESTOR_EVENT_CACHE_IOTLB], 0u);
  EXPECT_EQ(ev.entry_count, inv.events[0].removed.size());
  for (unsigned c = 0; c < NESTOR_EVENT_CACHE_SLOTS; ++c) {
    EXPECT_EQ(ev.removed[c], per_cache[c]) << "cache " << c;
    EXPECT_EQ(ev.over[c], over[c]) << "cache " << c;
  }

  // The event told the truth: the pages outside the range still hit, the ones inside walk.
  hook(NESTOR_EVENT_TRANSLATE, &trs);
  use_pages(kPages);
  const auto t = trs.of(NESTOR_EVENT_TRANSLATE);
  ASSERT_EQ(t.size(), kPages);
  for (unsigned i = 0; i < kPages; ++i)
    EXPECT_EQ(t[i].translate->source,
              i >= 2 && i < 5 ? NESTOR_TRANSLATE_SOURCE_WALK : NESTOR_TRANSLATE_SOURCE_IOTLB)
        << "page " << i;
}

TEST_F(Events, LargeInvalidationDeliversEveryRemovedEntry) {
  // More entries than the trampoline's stack buffer: the heap path must deliver them all.
  constexpr unsigned kMany = 100;
  map_pages(kMany);
  use_pages(kMany);
  Recorder inv;
  hook(NESTOR_EVENT_INVALIDATION, &inv);
  const nestor_inv_op op = iotlb_op(NESTOR_SCOPE_PASID);
  ASSERT_EQ(nestor_inv_submit(x.e, &op), 0);
  ASSERT_EQ(nestor_inv_wait(x.e), 0);
  ASSERT_EQ(inv.events.size(), 1u);
  std::set<uint64_t> pages;
  for (const nestor_event_removed &r : inv.events[0].removed)
    if (r.cache == NESTOR_EVENT_CACHE_IOTLB) pages.insert(r.page);
  ASSERT_EQ(pages.size(), kMany);
  EXPECT_EQ(*pages.begin(), kBase >> 12);
  EXPECT_EQ(*pages.rbegin(), (kBase >> 12) + kMany - 1);
  EXPECT_EQ(inv.events[0].invalidation->removed[NESTOR_EVENT_CACHE_IOTLB], kMany);
}

// ---- queue events ------------------------------------------------------------------------------

TEST_F(Events, QueueReportsDescriptorsWaitsAndTheBadDescriptor) {
  first_level();
  settle();
  ASSERT_EQ(nestor_qi_configure(x.e, kRing, 256, 128), 0);
  Recorder q;
  hook(NESTOR_EVENT_QUEUE, &q);
  const Desc good[] = {iotlb_domain(kDid), wait_status(kStatus, 0xC0DE)};
  Desc bad = iotlb_domain(kDid);
  bad.qw0 |= uint64_t{1} << 8;  // reserved in the IOTLB invalidate descriptor: IQE
  const Desc ring[] = {good[0], good[1], bad};
  for (unsigned i = 0; i < 3; ++i) {
    const uint64_t qw[2] = {ring[i].qw0, ring[i].qw1};
    ASSERT_EQ(nestor_mem_write(x.e, kRing + i * 16, qw, 16), 0);
  }

  ASSERT_EQ(nestor_qi_write_tail(x.e, 2), 0);
  const auto ev = q.of(NESTOR_EVENT_QUEUE);
  ASSERT_GE(ev.size(), 3u);
  const nestor_event_queue &d0 = *ev[0].queue, &d1 = *ev[1].queue;
  EXPECT_EQ(d0.type, NESTOR_QUEUE_EVENT_DESCRIPTOR);
  EXPECT_STREQ(nestor_queue_event_name(d0.type), "descriptor");
  EXPECT_EQ(d0.index, 0u);
  EXPECT_EQ(d0.descriptor_bits, 128);
  EXPECT_EQ(d0.raw[0], good[0].qw0);
  EXPECT_EQ(d0.raw[1], good[0].qw1);
  EXPECT_EQ(d0.type_code, 0x2);
  EXPECT_EQ(d0.is_op, 1);
  EXPECT_EQ(d0.is_wait, 0);
  EXPECT_EQ(d0.op.scope, NESTOR_SCOPE_DOMAIN);  // G = 10b: domain-selective
  EXPECT_EQ(d0.op.did, kDid);
  EXPECT_TRUE(d0.op.cache & NESTOR_CACHE_IOTLB);
  EXPECT_EQ(d1.type, NESTOR_QUEUE_EVENT_DESCRIPTOR);
  EXPECT_EQ(d1.index, 1u);
  EXPECT_EQ(d1.type_code, 0x5);
  EXPECT_EQ(d1.is_wait, 1);
  EXPECT_EQ(d1.is_op, 0);
  EXPECT_EQ(d1.status_write, 1);
  EXPECT_EQ(d1.status_addr, kStatus);
  EXPECT_EQ(d1.status_data, 0xC0DEu);
  EXPECT_EQ(d1.interrupt, 0);
  EXPECT_EQ(d1.fence, 0);
  const nestor_event_queue &done = *ev.back().queue;
  EXPECT_EQ(done.type, NESTOR_QUEUE_EVENT_WAIT_COMPLETED);
  EXPECT_EQ(done.status_addr, kStatus);
  EXPECT_EQ(done.status_data, 0xC0DEu);
  uint32_t status = 0;
  ASSERT_EQ(nestor_mem_read(x.e, kStatus, &status, 4), 0);
  EXPECT_EQ(status, 0xC0DEu) << "the wait-completed event means its status write landed";

  // The bad descriptor: the queue stops on it (IQE) and says so.
  q.events.clear();
  EXPECT_EQ(nestor_qi_write_tail(x.e, 3), -EBUSY);
  uint64_t head = 0;
  int err = 0;
  ASSERT_EQ(nestor_qi_state(x.e, &head, &err), 0);
  ASSERT_EQ(err, NESTOR_QI_ERR_IQE);
  ASSERT_EQ(head, 2u);
  // The descriptor as fetched, decoded to nothing, then the error that stopped the queue there.
  ASSERT_EQ(q.events.size(), 2u);
  const nestor_event_queue &fetched = *q.events[0].queue;
  EXPECT_EQ(fetched.type, NESTOR_QUEUE_EVENT_DESCRIPTOR);
  EXPECT_EQ(fetched.index, 2u);
  EXPECT_EQ(fetched.raw[0], bad.qw0);
  EXPECT_EQ(fetched.raw[1], bad.qw1);
  EXPECT_EQ(fetched.is_op, 0);
  EXPECT_EQ(fetched.is_wait, 0);
  const Copied &e = q.events[1];
  EXPECT_EQ(e.queue->type, NESTOR_QUEUE_EVENT_ERROR);
  EXPECT_STREQ(nestor_queue_event_name(e.queue->type), "error");
  EXPECT_EQ(e.queue->index, 2u) << "head stays on the bad descriptor";
  EXPECT_FALSE(e.queue_error.empty()) << "the error event says what stopped the queue";
}

// ---- bind events -------------------------------------------------------------------------------

TEST(EventsBind, BindLayerReportsThroughTheEngineHooks) {
  nestor_engine *e = nullptr;
  nestor_bind *b = nullptr;
  ASSERT_EQ(test::capi_make_bind_engine(&e, &b), 0);
  Recorder rec, inv_rec;
  int id = -1;
  ASSERT_EQ(nestor_event_hook_add(e, NESTOR_EVENT_BIND, &Recorder::fn, &rec, &id), 0);

  constexpr uint64_t kHpa = 256ull << 20, kRam = 64ull << 20;
  constexpr uint16_t kDev = 0x0100;
  test::CapiVm vm;
  ASSERT_EQ(test::capi_make_vm(e, b, kHpa, kRam, 0, &vm), 0);
  ASSERT_EQ(nestor_device_attach(b, kDev, vm.did), 0);
  uint32_t pasid = 0;
  ASSERT_EQ(nestor_pasid_alloc(b, vm.owner, 0, NESTOR_NO_GUEST_PASID, &pasid), 0);
  const nestor_bind_data bd = test::capi_bind_data();
  ASSERT_EQ(nestor_bind_pgtbl(b, vm.owner, kDev, pasid, &bd), 0);
  int inv_id = -1;
  ASSERT_EQ(nestor_event_hook_add(e, NESTOR_EVENT_INVALIDATION, &Recorder::fn, &inv_rec, &inv_id),
            0);
  nestor_bind_inv inv{};
  inv.size = sizeof inv;
  inv.caches = NESTOR_BIND_INV_CACHE_IOTLB;
  inv.scope = NESTOR_BIND_INV_SCOPE_RANGE;
  inv.source_id = kDev;
  inv.pasid = pasid;
  inv.addr = 0x3000;
  inv.npages = 2;
  ASSERT_EQ(nestor_cache_invalidate(b, vm.owner, &inv), 0);

  std::vector<nestor_event_bind> ev;
  for (const Copied &c : rec.events) ev.push_back(*c.bind);
  auto find = [&](unsigned type) -> const nestor_event_bind * {
    for (const nestor_event_bind &x : ev)
      if (x.type == type) return &x;
    return nullptr;
  };
  const nestor_event_bind *owner = find(NESTOR_BIND_EVENT_OWNER_CREATED);
  ASSERT_NE(owner, nullptr);
  EXPECT_EQ(owner->owner, vm.owner);
  const nestor_event_bind *domain = find(NESTOR_BIND_EVENT_DOMAIN_CREATED);
  ASSERT_NE(domain, nullptr);
  EXPECT_EQ(domain->domain, vm.did);
  EXPECT_EQ(domain->owner, vm.owner);
  const nestor_event_bind *mapped = find(NESTOR_BIND_EVENT_MAPPED);
  ASSERT_NE(mapped, nullptr);
  EXPECT_STREQ(nestor_bind_event_name(mapped->type), "mapped");
  EXPECT_EQ(mapped->domain, vm.did);
  EXPECT_EQ(mapped->gpa, 0u);
  EXPECT_EQ(mapped->hpa, kHpa);
  EXPECT_EQ(mapped->length, kRam);
  const nestor_event_bind *attached = find(NESTOR_BIND_EVENT_DEVICE_ATTACHED);
  ASSERT_NE(attached, nullptr);
  EXPECT_EQ(attached->source_id, kDev);
  EXPECT_EQ(attached->domain, vm.did);
  const nestor_event_bind *alloc = find(NESTOR_BIND_EVENT_PASID_ALLOCATED);
  ASSERT_NE(alloc, nullptr);
  EXPECT_EQ(alloc->pasid, pasid);
  EXPECT_EQ(alloc->owner, vm.owner);
  const nestor_event_bind *bound = find(NESTOR_BIND_EVENT_BOUND);
  ASSERT_NE(bound, nullptr);
  EXPECT_EQ(bound->source_id, kDev);
  EXPECT_EQ(bound->pasid, pasid);
  EXPECT_EQ(bound->gpa, test::kCapiFlRoot) << "BOUND names the first-level root";
  // The owner's request as it made it (it names no DID) ...
  const nestor_event_bind *flush = find(NESTOR_BIND_EVENT_CACHE_INVALIDATE);
  ASSERT_NE(flush, nullptr);
  EXPECT_EQ(flush->owner, vm.owner);
  EXPECT_EQ(flush->source_id, kDev);
  EXPECT_EQ(flush->op.cache, NESTOR_CACHE_IOTLB);
  EXPECT_EQ(flush->op.scope, NESTOR_SCOPE_RANGE);
  EXPECT_EQ(flush->op.pasid, pasid);
  EXPECT_EQ(flush->op.addr, 0x3000u);
  EXPECT_EQ(flush->op.npages, 2u);
  for (const nestor_event_bind &x : ev) EXPECT_EQ(x.result, 0) << nestor_bind_event_name(x.type);
  // ... and the host operation it became, with the domain the host chose.
  ASSERT_EQ(inv_rec.events.size(), 1u);
  const nestor_event_op &host = inv_rec.events[0].invalidation->op;
  EXPECT_EQ(host.did, vm.did);
  EXPECT_EQ(host.pasid, pasid);
  EXPECT_EQ(host.scope, NESTOR_SCOPE_RANGE);
  EXPECT_EQ(host.addr, 0x3000u);
  EXPECT_EQ(host.npages, 2u);

  // A refused call is reported too, with the errno it returned.
  rec.events.clear();
  EXPECT_EQ(nestor_pasid_free(b, vm.owner, pasid), -EBUSY);  // still bound
  ASSERT_EQ(rec.events.size(), 1u);
  EXPECT_EQ(rec.events[0].bind->type, NESTOR_BIND_EVENT_PASID_FREED);
  EXPECT_EQ(rec.events[0].bind->result, -EBUSY);
  EXPECT_EQ(rec.events[0].bind->pasid, pasid);
  EXPECT_EQ(nestor_event_hook_remove(e, inv_id), 0);

  EXPECT_EQ(nestor_event_hook_remove(e, id), 0);
  nestor_bind_destroy(b);
  nestor_engine_destroy(e);
}

// ---- registration ------------------------------------------------------------------------------

TEST_F(Events, RemoveStopsDeliveryAndArgumentsAreChecked) {
  FlB &fl = first_level();
  ASSERT_EQ(fl.map(0x5000, kOut, 12, kUserRW), build::Status::kOk);
  settle();
  Recorder a, b;
  const int ida = hook(NESTOR_EVENT_TRANSLATE, &a);
  const int idb = hook(NESTOR_EVENT_TRANSLATE | NESTOR_EVENT_FILL, &b);
  EXPECT_NE(ida, idb);
  ASSERT_EQ(tr(0x5000).hpa, kOut);
  EXPECT_EQ(a.events.size(), 1u);
  EXPECT_GE(b.of(NESTOR_EVENT_FILL).size(), 1u) << "one hook, two kinds";
  EXPECT_EQ(b.of(NESTOR_EVENT_TRANSLATE).size(), 1u);

  ASSERT_EQ(nestor_event_hook_remove(x.e, ida), 0);
  ASSERT_EQ(tr(0x5000).hpa, kOut);
  EXPECT_EQ(a.events.size(), 1u) << "delivered after remove";
  EXPECT_EQ(b.of(NESTOR_EVENT_TRANSLATE).size(), 2u) << "the other hook stays";
  EXPECT_EQ(nestor_event_hook_remove(x.e, ida), -ENOENT);
  EXPECT_EQ(nestor_event_hook_remove(x.e, -1), -ENOENT);
  EXPECT_EQ(nestor_event_hook_remove(x.e, 1000), -ENOENT);
  EXPECT_EQ(nestor_event_hook_remove(nullptr, idb), -EINVAL);
  ASSERT_EQ(nestor_event_hook_remove(x.e, idb), 0);
  ASSERT_EQ(tr(0x5000).hpa, kOut);
  EXPECT_EQ(b.of(NESTOR_EVENT_TRANSLATE).size(), 2u);

  int id = 77;
  EXPECT_EQ(nestor_event_hook_add(nullptr, NESTOR_EVENT_ALL, &Recorder::fn, &a, &id), -EINVAL);
  EXPECT_EQ(nestor_event_hook_add(x.e, NESTOR_EVENT_ALL, nullptr, &a, &id), -EINVAL);
  EXPECT_EQ(nestor_event_hook_add(x.e, 0, &Recorder::fn, &a, &id), -EINVAL);
  EXPECT_EQ(nestor_event_hook_add(x.e, NESTOR_EVENT_ALL + 1, &Recorder::fn, &a, &id), -EINVAL);
  EXPECT_EQ(id, 77) << "a refused add leaves *hook_id alone";
  // 16 hooks, then -ENOSPC; a removed one frees its slot.
  std::vector<int> ids;
  for (int i = 0; i < 16; ++i) {
    ASSERT_EQ(nestor_event_hook_add(x.e, NESTOR_EVENT_BIND, &Recorder::fn, &a, &id), 0);
    ids.push_back(id);
  }
  EXPECT_EQ(nestor_event_hook_add(x.e, NESTOR_EVENT_BIND, &Recorder::fn, &a, nullptr), -ENOSPC);
  ASSERT_EQ(nestor_event_hook_remove(x.e, ids[5]), 0);
  EXPECT_EQ(nestor_event_hook_add(x.e, NESTOR_EVENT_BIND, &Recorder::fn, &a, nullptr), 0);
}

TEST(EventsReset, HooksSurviveAReset) {
  nestor_engine *e = nestor_engine_create(nullptr);
  ASSERT_NE(e, nullptr);
  Recorder rec;
  ASSERT_EQ(nestor_event_hook_add(e, NESTOR_EVENT_FAULT, &Recorder::fn, &rec, nullptr), 0);
  ASSERT_EQ(nestor_engine_reset(e), 0);
  nestor_request req{};
  req.iova = 0x1000;
  req.access = NESTOR_ACCESS_READ;
  nestor_result res{};
  ASSERT_EQ(nestor_translate(e, &req, &res), 0);
  EXPECT_NE(res.fault, 0) << "no root table";
  ASSERT_EQ(rec.events.size(), 1u);
  EXPECT_EQ(rec.events[0].translate->result.fault, res.fault);
  nestor_engine_destroy(e);
}

TEST(EventsNames, EveryConstantHasItsName) {
  EXPECT_STREQ(nestor_event_kind_name(NESTOR_EVENT_TRANSLATE), "translate");
  EXPECT_STREQ(nestor_event_kind_name(NESTOR_EVENT_FAULT), "fault");
  EXPECT_STREQ(nestor_event_kind_name(NESTOR_EVENT_FILL), "fill");
  EXPECT_STREQ(nestor_event_kind_name(NESTOR_EVENT_INVALIDATION), "invalidation");
  EXPECT_STREQ(nestor_event_kind_name(NESTOR_EVENT_QUEUE), "queue");
  EXPECT_STREQ(nestor_event_kind_name(NESTOR_EVENT_BIND), "bind");
  EXPECT_STREQ(nestor_event_kind_name(NESTOR_EVENT_ALL), "unknown");
  EXPECT_STREQ(nestor_event_cache_name(NESTOR_EVENT_CACHE_CONTEXT), "context");
  EXPECT_STREQ(nestor_event_cache_name(NESTOR_EVENT_CACHE_PSC_SECOND_LEVEL), "psc-second-level");
  EXPECT_STREQ(nestor_event_cache_name(NESTOR_EVENT_CACHE_NESTED_TABLE), "nested-table");
  EXPECT_STREQ(nestor_event_cache_name(NESTOR_EVENT_CACHES), "unknown");
  EXPECT_STREQ(nestor_event_cache_name(0x100 + NESTOR_EVENT_CACHE_IOTLB), "unknown");
  EXPECT_STREQ(nestor_translate_source_name(NESTOR_TRANSLATE_SOURCE_HANDLE_CACHE), "handle-cache");
  EXPECT_STREQ(nestor_translate_source_name(0x103), "unknown");
  EXPECT_STREQ(nestor_fault_stage_name(NESTOR_STAGE_NESTED_TABLE), "nested-table");
  EXPECT_STREQ(nestor_fault_stage_name(-1), "unknown");
  EXPECT_STREQ(nestor_queue_event_name(NESTOR_QUEUE_EVENT_WAIT_COMPLETED), "wait-completed");
  EXPECT_STREQ(nestor_queue_event_name(3), "unknown");
  EXPECT_STREQ(nestor_bind_event_name(NESTOR_BIND_EVENT_CACHE_INVALIDATE), "cache-invalidate");
  EXPECT_STREQ(nestor_bind_event_name(13), "unknown");
  EXPECT_STREQ(nestor_bind_event_name(0x100 + NESTOR_BIND_EVENT_BOUND), "unknown");
}

}  // namespace
}  // namespace nestor
