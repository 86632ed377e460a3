// QEMU-format event text (qemu_trace.h): every line is byte for byte what QEMU's format string
// gives for the same values, the sink's rate limit and prefix behave, and an engine workload
// written by the sink imports back (import_qemu_log) into a trace that replays without
// divergence and gives the original results in order.
#include <gtest/gtest.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <vector>

#include "nestor/vtd/faults.h"
#include "qemu_import.h"
#include "qemu_trace.h"
#include "sink_workload.h"
#include "trace.h"
#include "trace_records.h"

namespace nestor::trace {
namespace {

std::string text_of(const Event &e, bool details = false) {
  std::string out;
  format_qemu_event(e, details, "", &out);
  return out;
}

std::string translate_text(const TranslateEvent &t) {
  Event e;
  e.kind = kEventTranslate;
  e.translate = &t;
  return text_of(e);
}

TranslateEvent translation(uint16_t sid, uint64_t iova, uint64_t out, uint8_t shift, uint8_t perms,
                           TranslateSource source, uint16_t did) {
  TranslateEvent t;
  t.request.source_id = sid;
  t.request.iova = iova;
  t.result.ok = true;
  t.result.t.out = out;
  t.result.t.page_shift = shift;
  t.result.t.perms = perms;
  t.source = source;
  t.domain = did;
  return t;
}

std::string invalidation_text(const invq::InvalidationOp &op, bool details = false) {
  InvalidationEvent ie;
  ie.op = op;
  Event e;
  e.kind = kEventInvalidation;
  e.invalidation = &ie;
  return text_of(e, details);
}

// The expected lines below are written by hand from QEMU's hw/i386/trace-events format strings
// (quoted above each) as its log backend prints them: qemu_log("NAME " FMT "\n", ...).
TEST(QemuText, TranslationLinesMatchQemuFormatStrings) {
  struct Case {
    TranslateEvent event;
    const char *want;
  };
  const Case cases[] = {
      // vtd_iotlb_page_hit "IOTLB page hit sid 0x%"PRIx16" iova 0x%"PRIx64" slpte 0x%"PRIx64
      //   " domain 0x%"PRIx16
      // vtd_dmar_translate "dev %02x:%02x.%02x iova 0x%"PRIx64" -> gpa 0x%"PRIx64
      //   " mask 0x%"PRIx64
      {translation(0x0018, 0x12345678, 0x80345678, 12, kAccessRead | kAccessWrite | kAccessExec,
                   TranslateSource::kIotlb, 0x5),
       "vtd_iotlb_page_hit IOTLB page hit sid 0x18 iova 0x12345678 slpte 0x80345003 domain 0x5\n"
       "vtd_dmar_translate dev 00:03.00 iova 0x12345000 -> gpa 0x80345000 mask 0xfff\n"},
      // A handle-cache answer is a hit too (it sits in front of the IOTLB).
      {translation(0xab1f, 0x7000, 0x9000, 12, kAccessWrite, TranslateSource::kHandleCache, 0xbeef),
       "vtd_iotlb_page_hit IOTLB page hit sid 0xab1f iova 0x7000 slpte 0x9002 domain 0xbeef\n"
       "vtd_dmar_translate dev ab:03.07 iova 0x7000 -> gpa 0x9000 mask 0xfff\n"},
      // vtd_iotlb_page_update "IOTLB page update sid 0x%"PRIx16" iova 0x%"PRIx64
      //   " slpte 0x%"PRIx64" domain 0x%"PRIx16 -- a 2M leaf: PS (bit 7) set, address and
      //   mask of the 2M page; then a 1G one.
      {translation(0x0108, 0x40212345, 0x80012345, 21, kAccessRead, TranslateSource::kWalk, 0x1),
       "vtd_iotlb_page_update IOTLB page update sid 0x108 iova 0x40212345 slpte 0x80000081 "
       "domain 0x1\n"
       "vtd_dmar_translate dev 01:01.00 iova 0x40200000 -> gpa 0x80000000 mask 0x1fffff\n"},
      {translation(0x0108, 0x7fffc0001234, 0x40000001234, 30, kAccessRead | kAccessWrite,
                   TranslateSource::kWalk, 0x1),
       "vtd_iotlb_page_update IOTLB page update sid 0x108 iova 0x7fffc0001234 slpte "
       "0x40000000083 domain 0x1\n"
       "vtd_dmar_translate dev 01:01.00 iova 0x7fffc0000000 -> gpa 0x40000000000 mask "
       "0x3fffffff\n"},
      // vtd_translate_pt "source id 0x%"PRIx16", iova 0x%"PRIx64, then vtd_dmar_translate (4K).
      {translation(0x00fa, 0x1234567, 0x1234567, 12, kAccessRead, TranslateSource::kPassThrough,
                   0x2),
       "vtd_translate_pt source id 0xfa, iova 0x1234000\n"
       "vtd_dmar_translate dev 00:1f.02 iova 0x1234000 -> gpa 0x1234000 mask 0xfff\n"},
  };
  for (const Case &c : cases) EXPECT_EQ(translate_text(c.event), c.want);

  // vtd_dmar_fault "sid 0x%"PRIx16" fault %d addr 0x%"PRIx64" write %d"
  TranslateEvent fault;
  fault.request.source_id = 0x0018;
  fault.request.iova = 0xdead123;
  fault.request.access = kAccessWrite;
  fault.result.fault.reason = FaultReason::kSecondLevelEntryNotPresent;  // 0x79
  fault.source = TranslateSource::kWalk;
  EXPECT_EQ(translate_text(fault), "vtd_dmar_fault sid 0x18 fault 121 addr 0xdead123 write 1\n");
  fault.request.access = kAccessRead;
  fault.result.fault.reason = FaultReason::kContextEntryNotPresent;  // 0x41
  fault.source = TranslateSource::kStructures;
  EXPECT_EQ(translate_text(fault), "vtd_dmar_fault sid 0x18 fault 65 addr 0xdead123 write 0\n");
  // The same event delivered as a fault event reads the same.
  Event as_fault;
  as_fault.kind = kEventFault;
  as_fault.translate = &fault;
  EXPECT_EQ(text_of(as_fault), "vtd_dmar_fault sid 0x18 fault 65 addr 0xdead123 write 0\n");
  // vtd_fault_disabled "Fault processing disabled for context entry"
  fault.fault_suppressed = true;
  EXPECT_EQ(translate_text(fault),
            "vtd_fault_disabled Fault processing disabled for context entry\n");
}

TEST(QemuText, InvalidationLinesMatchQemuFormatStrings) {
  // vtd_inv_desc_iotlb_global "iotlb invalidate global"
  EXPECT_EQ(invalidation_text(make_op(kIotlbPaging, invq::Scope::kGlobal)),
            "vtd_inv_desc_iotlb_global iotlb invalidate global\n");
  // vtd_inv_desc_iotlb_domain "iotlb invalidate whole domain 0x%"PRIx16
  EXPECT_EQ(invalidation_text(make_op(kIotlbPaging, invq::Scope::kDomain, 0x2a)),
            "vtd_inv_desc_iotlb_domain iotlb invalidate whole domain 0x2a\n");
  // vtd_inv_desc_iotlb_pages "iotlb invalidate domain 0x%"PRIx16" addr 0x%"PRIx64" mask 0x%"PRIx8
  invq::InvalidationOp pages = make_op(kIotlbPaging, invq::Scope::kRange, 0x3);
  pages.addr_is_gpa = true;
  pages.addr = 0x40000;
  pages.npages = 16;
  EXPECT_EQ(invalidation_text(pages),
            "vtd_inv_desc_iotlb_pages iotlb invalidate domain 0x3 addr 0x40000 mask 0x4\n");
  // A range no single descriptor names: the aligned blocks a guest would send, in order.
  pages.addr = 0x3000;
  pages.npages = 7;  // pages 3..9
  EXPECT_EQ(invalidation_text(pages),
            "vtd_inv_desc_iotlb_pages iotlb invalidate domain 0x3 addr 0x3000 mask 0x0\n"
            "vtd_inv_desc_iotlb_pages iotlb invalidate domain 0x3 addr 0x4000 mask 0x2\n"
            "vtd_inv_desc_iotlb_pages iotlb invalidate domain 0x3 addr 0x8000 mask 0x1\n");
  // vtd_inv_desc_iotlb_pasid_pages "iotlb invalidate domain 0x%"PRIx16" addr 0x%"PRIx64
  //   " mask 0x%"PRIx8" pasid 0x%"PRIx32
  invq::InvalidationOp fl = make_op(invq::kCacheIotlb, invq::Scope::kRange, 0x7);
  fl.pasid = 0x1234;
  fl.addr = 0x7f0000200000;
  fl.npages = 512;
  fl.leaf = true;
  EXPECT_EQ(invalidation_text(fl),
            "vtd_inv_desc_iotlb_pasid_pages iotlb invalidate domain 0x7 addr 0x7f0000200000 "
            "mask 0x9 pasid 0x1234\n");
  // vtd_inv_desc_iotlb_pasid "iotlb invalidate domain 0x%"PRIx16" pasid 0x%"PRIx32
  invq::InvalidationOp pasid = make_op(kIotlbPaging, invq::Scope::kPasid, 0x7);
  pasid.pasid = 0xfffff;
  EXPECT_EQ(invalidation_text(pasid),
            "vtd_inv_desc_iotlb_pasid iotlb invalidate domain 0x7 pasid 0xfffff\n");
  // vtd_inv_desc_cc_global "context invalidate globally"
  EXPECT_EQ(invalidation_text(make_op(invq::kCacheContext, invq::Scope::kGlobal)),
            "vtd_inv_desc_cc_global context invalidate globally\n");
  // vtd_inv_desc_cc_domain "context invalidate domain 0x%"PRIx16, then QEMU's global one.
  EXPECT_EQ(invalidation_text(
                make_op(invq::kCacheContext | invq::kCachePasid, invq::Scope::kDomain, 0x11)),
            "vtd_inv_desc_cc_domain context invalidate domain 0x11\n"
            "vtd_inv_desc_cc_global context invalidate globally\n");
  // vtd_inv_desc_cc_devices "context invalidate devices sid 0x%"PRIx16" fmask 0x%"PRIx16
  invq::InvalidationOp dev = make_op(invq::kCacheContext, invq::Scope::kDevice);
  dev.source_id = 0x0318;
  dev.function_mask = 3;
  EXPECT_EQ(invalidation_text(dev),
            "vtd_inv_desc_cc_devices context invalidate devices sid 0x318 fmask 0x3\n");
  // vtd_inv_desc_pasid_cache_gsi "" (the backend still prints the space after the name)
  EXPECT_EQ(invalidation_text(make_op(invq::kCachePasid, invq::Scope::kGlobal)),
            "vtd_inv_desc_pasid_cache_gsi \n");
  // vtd_inv_desc_pasid_cache_dsi "Domain selective PC invalidation domain 0x%"PRIx16
  EXPECT_EQ(invalidation_text(make_op(invq::kCachePasid, invq::Scope::kDomain, 0x9)),
            "vtd_inv_desc_pasid_cache_dsi Domain selective PC invalidation domain 0x9\n");
  // vtd_inv_desc_pasid_cache_psi "PASID selective PC invalidation domain 0x%"PRIx16
  //   " pasid 0x%"PRIx32
  invq::InvalidationOp pc = make_op(invq::kCachePasid, invq::Scope::kPasid, 0x9);
  pc.pasid = 0x42;
  EXPECT_EQ(invalidation_text(pc),
            "vtd_inv_desc_pasid_cache_psi PASID selective PC invalidation domain 0x9 pasid "
            "0x42\n");
}

TEST(QemuText, OperationsWithoutQemuEventGetNestorLines) {
  // Device-TLB: QEMU has no event but the raw vtd_inv_desc.
  invq::InvalidationOp devtlb = make_op(invq::kCacheDevTlb, invq::Scope::kRange);
  devtlb.source_id = 0x20;
  devtlb.addr = 0x5000;
  devtlb.npages = 2;
  EXPECT_EQ(invalidation_text(devtlb),
            "nestor_invalidation caches=devtlb scope=range did=0x0 sid=0x20 pasid=none "
            "addr=0x5000 npages=2 leaf=0 gpa=0 fm=0 removed=0 over=0\n");
  // IOTLB by device: no descriptor has that scope.
  invq::InvalidationOp by_dev = make_op(kIotlbPaging, invq::Scope::kDevice);
  by_dev.source_id = 0x20;
  EXPECT_EQ(
      invalidation_text(by_dev).rfind("nestor_invalidation caches=iotlb,paging scope=device", 0),
      0u);
  // Paging caches alone, and a part no line stands for (device TLB next to the IOTLB).
  EXPECT_EQ(invalidation_text(make_op(invq::kCachePaging, invq::Scope::kGlobal))
                .rfind("nestor_invalidation caches=paging scope=global", 0),
            0u);
  const std::string mixed =
      invalidation_text(make_op(kIotlbPaging | invq::kCacheDevTlb, invq::Scope::kGlobal));
  EXPECT_EQ(mixed.rfind("vtd_inv_desc_iotlb_global iotlb invalidate global\n"
                        "nestor_invalidation caches=iotlb,paging,devtlb scope=global",
                        0),
            0u)
      << mixed;
  // With details, every invalidation also says what it removed.
  InvalidationEvent ie;
  ie.op = make_op(kIotlbPaging, invq::Scope::kDomain, 4);
  ie.removed[size_t(EventCache::kIotlb)] = 3;
  ie.removed[size_t(EventCache::kPscSecondLevel)] = 2;
  ie.over[size_t(EventCache::kIotlb)] = 1;
  Event e;
  e.kind = kEventInvalidation;
  e.invalidation = &ie;
  EXPECT_EQ(text_of(e, true),
            "vtd_inv_desc_iotlb_domain iotlb invalidate whole domain 0x4\n"
            "nestor_invalidation caches=iotlb,paging scope=domain did=0x4 sid=0x0 pasid=none "
            "addr=0x0 npages=0 leaf=0 gpa=0 fm=0 removed=5 over=1 removed.iotlb=3 "
            "removed.psc-second-level=2\n");
  EXPECT_EQ(text_of(e, false), "vtd_inv_desc_iotlb_domain iotlb invalidate whole domain 0x4\n");
}

TEST(QemuText, QueueLinesMatchQemuFormatStrings) {
  QueueEvent q;
  q.type = QueueEventType::kDescriptor;
  q.type_code = 0x2;
  q.raw = {0x0000000000010022ull, 0x0000000000100043ull, 0, 0};
  Event e;
  e.kind = kEventQueue;
  e.queue = &q;
  // vtd_inv_desc "invalidate desc type %s high 0x%"PRIx64" low 0x%"PRIx64
  EXPECT_EQ(text_of(e), "vtd_inv_desc invalidate desc type iotlb high 0x100043 low 0x10022\n");
  q.type_code = 0x6;
  q.descriptor_bits = 256;
  EXPECT_EQ(text_of(e), "vtd_inv_desc invalidate desc type p-iotlb high 0x100043 low 0x10022\n");
  // PASID-cache descriptors: QEMU logs no vtd_inv_desc for them.
  q.type_code = 0x7;
  q.raw = {0x17, 0, 0, 0};
  q.index = 4;
  EXPECT_EQ(text_of(e),
            "nestor_queue type=descriptor index=4 code=0x7 qw0=0x17 qw1=0x0 qw2=0x0 qw3=0x0\n");
  // vtd_inv_desc_wait_sw "wait invalidate status write addr 0x%"PRIx64" data 0x%"PRIx32
  QueueEvent w;
  w.type = QueueEventType::kWaitCompleted;
  w.status_write = true;
  w.status_addr = 0x7ff000;
  w.status_data = 0xcafe;
  e.queue = &w;
  EXPECT_EQ(text_of(e),
            "vtd_inv_desc_wait_sw wait invalidate status write addr 0x7ff000 data "
            "0xcafe\n");
  w.status_write = false;
  w.interrupt = true;
  EXPECT_EQ(text_of(e), "nestor_queue type=wait-completed sw=0 if=1 fn=0\n");
  QueueEvent err;
  err.type = QueueEventType::kError;
  err.index = 9;
  err.type_code = 0x2;
  err.error = "reserved bit set";
  e.queue = &err;
  EXPECT_EQ(text_of(e), "nestor_queue type=error index=9 code=0x2 error=\"reserved bit set\"\n");
  // An owner-direct queue's events never take QEMU's lines: an importer would replay them as
  // the host's queue, with guest tags.
  q.owner_queue = 3;
  q.type_code = 0x6;
  q.raw = {0x0000000100010036ull, 0x1000ull, 0, 0};
  q.index = 5;
  e.queue = &q;
  EXPECT_EQ(text_of(e),
            "nestor_queue owner_queue=3 type=descriptor index=5 code=0x6 qw0=0x100010036 "
            "qw1=0x1000 qw2=0x0 qw3=0x0\n");
  w.owner_queue = 3;
  w.status_write = true;
  w.interrupt = false;
  w.index = 6;
  e.queue = &w;
  EXPECT_EQ(text_of(e),
            "nestor_queue owner_queue=3 type=wait-completed index=6 sw=1 "
            "status_gpa=0x7ff000 data=0xcafe if=0 fn=0\n");
  err.owner_queue = 3;
  e.queue = &err;
  EXPECT_EQ(text_of(e),
            "nestor_queue owner_queue=3 type=error index=9 error=\"reserved bit set\"\n");
}

TEST(QemuText, FillAndBindLines) {
  const FillEvent f{.cache = EventCache::kIotlb,
                    .accepted = true,
                    .source_id = 0x10,
                    .pasid = 3,
                    .domain = 2,
                    .page_shift = 21,
                    .perms = 3,
                    .address = 0x200000,
                    .output = 0x4000000};
  EXPECT_EQ(text_of({.kind = kEventCacheFill, .fill = &f}),
            "nestor_fill cache=iotlb accepted=1 sid=0x10 pasid=0x3 domain=0x2 level=0 "
            "page_shift=21 perms=0x3 address=0x200000 output=0x4000000\n");
  const BindEvent b{.type = BindEventType::kMapped,
                    .owner = 7,
                    .domain = 5,
                    .gpa = 0x1000,
                    .hpa = 0x9000,
                    .size = 0x2000,
                    .op = {}};
  EXPECT_EQ(text_of({.kind = kEventBind, .bind = &b}),
            "nestor_bind type=mapped result=0 owner=7 sid=0x0 pasid=0x0 domain=0x5 "
            "gpa=0x1000 hpa=0x9000 size=0x2000\n");
  // An owner's invalidation: its op's keys say they are the op's.
  BindEvent inv{.type = BindEventType::kCacheInvalidate,
                .owner = 1,
                .source_id = 0x108,
                .pasid = 2,
                .op = make_op(kIotlbPaging, invq::Scope::kRange)};
  inv.op.source_id = 0x108;
  inv.op.pasid = 2;
  inv.op.addr = 0x37000;
  inv.op.npages = 8;
  inv.op.leaf = true;
  EXPECT_EQ(text_of({.kind = kEventBind, .bind = &inv}),
            "nestor_bind type=cache-invalidate result=0 owner=1 sid=0x108 pasid=0x2 domain=0x0 "
            "gpa=0x0 hpa=0x0 size=0x0 op.caches=iotlb,paging op.scope=range op.did=0x0 "
            "op.sid=0x108 op.pasid=0x2 op.addr=0x37000 op.npages=8 op.leaf=1 op.gpa=0 op.fm=0\n");
}

TEST(QemuText, ParseEventKinds) {
  EXPECT_EQ(parse_event_kinds("translate"), uint32_t(kEventTranslate));
  EXPECT_EQ(parse_event_kinds("fault,fill,bind"),
            uint32_t(kEventFault | kEventCacheFill | kEventBind));
  EXPECT_EQ(parse_event_kinds("queue,all"), kEventAll);
  EXPECT_EQ(parse_event_kinds("invalidation"), uint32_t(kEventInvalidation));
  EXPECT_THROW(parse_event_kinds("translate,"), std::invalid_argument);
  EXPECT_THROW(parse_event_kinds("tlb"), std::invalid_argument);
  EXPECT_THROW(parse_event_kinds(""), std::invalid_argument);
}

// The sink: rate window, dropped counts per kind, the summary line, the log prefix.
TEST(QemuTextSink, RateLimitCountsWhatItDrops) {
  uint64_t now = 5'000'000'000;  // 5 s
  std::ostringstream out;
  QemuSinkOptions o;
  o.kinds = kEventTranslate | kEventInvalidation | kEventBind;
  o.limit_per_second = 2;
  o.now_ns = [&now] { return now; };
  QemuTextSink sink(out, o);
  const TranslateEvent t =
      translation(0x8, 0x1000, 0x2000, 12, kAccessRead, TranslateSource::kWalk, 1);
  InvalidationEvent ie;
  ie.op = make_op(kIotlbPaging, invq::Scope::kGlobal);
  Event te, inv;
  te.kind = kEventTranslate;
  te.translate = &t;
  inv.kind = kEventInvalidation;
  inv.invalidation = &ie;
  sink.write(te);
  sink.write(inv);
  sink.write(te);      // third in this second: dropped
  sink.write(inv);     // dropped
  sink.write(inv);     // dropped
  now += 999'999'999;  // still the same second
  sink.write(te);      // dropped
  EXPECT_EQ(sink.written(), 2u);
  now += 1;  // the next second
  sink.write(inv);
  EXPECT_EQ(sink.written(), 3u);
  const std::array<uint64_t, kEventKinds> d = sink.dropped();
  EXPECT_EQ(d[0], 2u);  // translate
  EXPECT_EQ(d[3], 2u);  // invalidation
  EXPECT_EQ(d[5], 0u);  // bind
  sink.write_dropped_summary();
  EXPECT_EQ(out.str(),
            "vtd_iotlb_page_update IOTLB page update sid 0x8 iova 0x1000 slpte 0x2001 domain 0x1\n"
            "vtd_dmar_translate dev 00:01.00 iova 0x1000 -> gpa 0x2000 mask 0xfff\n"
            "vtd_inv_desc_iotlb_global iotlb invalidate global\n"
            "vtd_inv_desc_iotlb_global iotlb invalidate global\n"
            "nestor_dropped limit=2/s translate=2 invalidation=2 bind=0 total=4\n");
}

TEST(QemuTextSink, TimestampPrefixIsTheLogBackendsOnEveryLine) {
  // "%d@%zu.%06zu:" with the thread id and gettimeofday's seconds and microseconds; this test
  // runs on the main thread, whose id is the process id.
  std::ostringstream out;
  QemuSinkOptions o;
  o.timestamps = true;
  o.now_ns = [] { return uint64_t{1'700'000'000'000'042'999}; };
  QemuTextSink sink(out, o);
  const TranslateEvent t =
      translation(0x8, 0x1000, 0x2000, 12, kAccessRead, TranslateSource::kIotlb, 1);
  Event e;
  e.kind = kEventTranslate;
  e.translate = &t;
  sink.write(e);
  const std::string p = std::to_string(getpid()) + "@1700000000.000042:";
  EXPECT_EQ(out.str(),
            p + "vtd_iotlb_page_hit IOTLB page hit sid 0x8 iova 0x1000 slpte 0x2001 domain 0x1\n" +
                p + "vtd_dmar_translate dev 00:01.00 iova 0x1000 -> gpa 0x2000 mask 0xfff\n");
}

// ---- Round trip: engine -> sink -> import_qemu_log -> replay ----

// Runs the workload with the sink attached and returns the text it wrote.
std::string record_workload(SinkWorkload &w) {
  std::ostringstream text;
  QemuSinkOptions o;
  o.kinds = kEventTranslate | kEventInvalidation;
  QemuTextSink sink(text, o);
  QemuTextSink::Attachment hook = sink.attach(w.engine());
  constexpr uint64_t kA = 0x10'0000, kB = 0x20'0000, kC = 0x30'0000, kLarge = 0x4000'0000;
  constexpr uint64_t kP = 4096;
  for (uint64_t i = 0; i < 16; ++i) w.map(1, kA + i * kP, SinkWorkload::kHpa + i * kP);
  for (uint64_t i = 0; i < 8; ++i)
    w.map(2, kB + i * kP, SinkWorkload::kHpa + 0x10'0000 + i * kP, 12,
          i < 4 ? kAccessRead | kAccessWrite : kAccessRead);
  w.map(2, kLarge, 0x6000'0000, 21);
  for (uint64_t i = 0; i < 4; ++i) w.map(3, kC + i * kP, SinkWorkload::kHpa + 0x20'0000 + i * kP);

  // Walks, then IOTLB hits (devices of a domain share its second level).
  for (int round = 0; round < 3; ++round) {
    for (uint64_t i = 0; i < 16; ++i)
      w.translate(i % 2 ? 0x0010 : 0x0018, kA + i * kP + 0x10 * i,
                  i % 3 ? kAccessRead : kAccessWrite);
    for (uint64_t i = 0; i < 8; ++i) w.translate(0x0100, kB + i * kP + 8);
    for (uint64_t i = 0; i < 4; ++i) w.translate(0x0208, kC + i * kP);
  }
  // The 2M leaf at several offsets.
  for (uint64_t off : {0x0ull, 0x1234ull, 0x15'0000ull, 0x1f'f008ull})
    w.translate(0x0100, kLarge + off);
  // A handle: its own cache answers the repeats.
  {
    AddressSpace as = w.engine().open(0x0208, false, 0);
    for (int round = 0; round < 3; ++round)
      for (uint64_t i = 0; i < 4; ++i) w.translate_handle(as, 0x0208, kC + i * kP + 0x100);
  }
  // Faults: a write to a read-only page, an unmapped page, a device with no context entry.
  EXPECT_FALSE(w.translate(0x0100, kB + 6 * kP, kAccessWrite).ok);
  EXPECT_FALSE(w.translate(0x0010, kA + 40 * kP).ok);
  EXPECT_FALSE(w.translate(0x0300, kA).ok);

  // Unmap two pages, invalidate them: they fault, their neighbours still hit.
  w.unmap(1, kA + 2 * kP);
  w.unmap(1, kA + 3 * kP);
  w.invalidate_range(1, kA + 2 * kP, 2);
  EXPECT_FALSE(w.translate(0x0010, kA + 2 * kP).ok);
  EXPECT_FALSE(w.translate(0x0018, kA + 3 * kP, kAccessWrite).ok);
  EXPECT_TRUE(w.translate(0x0010, kA + 4 * kP).ok);
  // A remap: page 5 moves; after its invalidation it translates to the new page.
  w.unmap(1, kA + 5 * kP);
  w.map(1, kA + 5 * kP, SinkWorkload::kHpa + 0x80'0000);
  w.invalidate_range(1, kA + 5 * kP, 1);
  EXPECT_EQ(w.translate(0x0018, kA + 5 * kP + 0x44).t.out, SinkWorkload::kHpa + 0x80'0044);
  // Three pages unmapped and invalidated with a range no single descriptor names.
  for (uint64_t i = 9; i < 12; ++i) w.unmap(1, kA + i * kP);
  w.invalidate_range(1, kA + 9 * kP, 3);
  for (uint64_t i = 8; i < 13; ++i) w.translate(0x0010, kA + i * kP);
  // Domain 3: one page unmapped, a domain-selective invalidation, then every page again.
  w.unmap(3, kC + kP);
  w.invalidate(make_op(kIotlbPaging, invq::Scope::kDomain, 3));
  for (uint64_t i = 0; i < 4; ++i) w.translate(0x0208, kC + i * kP);
  // A context-cache invalidation of one device, then a global IOTLB one: everything walks again.
  invq::InvalidationOp cc = make_op(invq::kCacheContext, invq::Scope::kDevice);
  cc.source_id = 0x0018;
  w.invalidate(cc);
  w.translate(0x0018, kA);
  w.invalidate(make_op(kIotlbPaging, invq::Scope::kGlobal));
  for (uint64_t i = 0; i < 8; ++i) w.translate(0x0100, kB + i * kP);
  w.translate(0x0100, kLarge + 0x1234);
  w.translate(0x0010, kA + 15 * kP);
  return text.str();
}

// Lines of the text whose event name starts with `prefix`, counted here, not by the importer.
uint64_t count_lines(const std::string &text, const std::string &prefix) {
  std::istringstream in(text);
  uint64_t n = 0;
  for (std::string line; std::getline(in, line);) n += line.rfind(prefix, 0) == 0;
  return n;
}

TEST(QemuTextSink, EngineWorkloadRoundTripsThroughImport) {
  SinkWorkload w;
  const std::string text = record_workload(w);
  ASSERT_FALSE(HasFailure()) << text;
  const std::vector<Result> &results = w.results();
  const std::vector<Request> &requests = w.requests();
  uint64_t faults = 0;
  for (const Result &r : results) faults += !r.ok;
  ASSERT_GT(faults, 0u);

  std::istringstream in(text);
  QemuImportStats st;
  const std::vector<uint8_t> bytes = import_qemu_log(in, &st);
  SCOPED_TRACE(st.summary());
  EXPECT_EQ(st.inconsistent, 0u);
  // Every line is one the importer uses: each vtd_dmar_translate completes the hit or update
  // before it (same device, the iova in its page), none is left over.
  EXPECT_EQ(st.skipped, 0u);
  EXPECT_EQ(st.events, count_lines(text, "vtd_"));
  EXPECT_EQ(st.translations, results.size());
  EXPECT_EQ(st.faults, faults);
  EXPECT_EQ(st.hits + st.updates, results.size() - faults);
  EXPECT_GT(st.hits, 0u);
  EXPECT_GT(st.updates, 0u);
  // Every operation the workload issued reached the log, and the log never implied a change
  // the importer had to make up: no device changed domains, no mapping changed unannounced.
  EXPECT_GE(st.invalidations, w.invalidations());
  EXPECT_EQ(st.invalidations,
            count_lines(text, "vtd_inv_desc_iotlb_") + count_lines(text, "vtd_inv_desc_cc_"));
  EXPECT_EQ(st.synthesized, 0u);

  // The imported trace replays on a caching engine without divergence...
  const ReplayResult res = replay_bytes(bytes, /*caching=*/true);
  EXPECT_EQ(res.divergences, 0u) << (res.messages.empty() ? "" : res.messages[0]);
  EXPECT_EQ(res.checked, results.size());
  EXPECT_EQ(res.invalidations, st.invalidations + st.synthesized);

  // ... and its translations are the original ones, in order, with the original outputs.
  const std::vector<TranslateRecord> recs = translations(bytes);
  ASSERT_EQ(recs.size(), results.size());
  for (size_t i = 0; i < recs.size(); ++i) {
    SCOPED_TRACE("translation " + std::to_string(i));
    EXPECT_EQ(recs[i].req.source_id, requests[i].source_id);
    EXPECT_EQ(recs[i].req.iova, requests[i].iova);
    EXPECT_FALSE(recs[i].req.has_pasid);
    if (results[i].ok) {
      ASSERT_EQ(recs[i].expect, Expect::kOk);
      EXPECT_EQ(recs[i].out, results[i].t.out);
      EXPECT_EQ(recs[i].perms & (kAccessRead | kAccessWrite),
                results[i].t.perms & (kAccessRead | kAccessWrite));
    } else {
      EXPECT_EQ(recs[i].expect, Expect::kFault);
      // Faults say whether the device wrote; hits and updates do not (the importer reads).
      EXPECT_EQ(recs[i].req.access, requests[i].access);
    }
  }
}

// Removing a hook stops the text: an engine outliving its sink's attachment is not written to.
TEST(QemuTextSink, DetachedSinkWritesNothing) {
  SinkWorkload w;
  w.map(1, 0x10'0000, SinkWorkload::kHpa);
  std::ostringstream text;
  QemuTextSink sink(text);
  {
    QemuTextSink::Attachment hook = sink.attach(w.engine());
    w.translate(0x0010, 0x10'0000);
  }
  const std::string before = text.str();
  EXPECT_EQ(count_lines(before, "vtd_iotlb_page_"), 1u) << before;
  w.translate(0x0010, 0x10'0000);
  EXPECT_EQ(text.str(), before);
}

}  // namespace
}  // namespace nestor::trace
