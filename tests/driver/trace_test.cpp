// Trace format and record/replay: every record type survives a round trip, malformed and
// truncated traces are rejected with a message, and a recorded workload replays with the same
// results (and the replay notices when an invalidation is missing from the trace).
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>

#include "nestor/machine/machine.h"
#include "trace.h"
#include "trace_reject.h"

namespace nestor::trace {
namespace {

TEST(TraceFormat, EveryRecordRoundTrips) {
  Writer w;
  ConfigRecord cfg;
  cfg.host_address_width = 39;
  cfg.first_level_5 = false;
  cfg.second_level_1g = false;
  w.config(cfg);
  w.ram(0x1000, 0x4000'0000);  // covers every write below (the reader checks)
  w.root(0x1234'5000);
  const uint8_t bytes[5] = {9, 8, 7, 6, 5};
  w.write(0x2003, bytes, 5);
  const uint64_t pte = 0x8000'0000'1234'5067ull;
  w.write(0x3008, &pte, 8);
  const std::vector<uint8_t> page(4096, 0);
  w.write(0x7000, page.data(), page.size());
  w.thread(3);
  TranslateRecord ok;
  ok.req = {0x0108, true, 0xFFFFF, 0x7FFF'FFFF'F000ull, kAccessWrite, true};
  ok.expect = Expect::kOk;
  ok.out = 0x4'0000'0123ull;
  ok.perms = 3;
  ok.page_shift = 21;
  w.translate(ok);
  TranslateRecord fault;
  fault.req = {0x0200, false, 0, 0x1000, kAccessRead, false};  // iova goes backwards
  fault.expect = Expect::kFault;
  fault.fault_reason = uint8_t(FaultReason::kFirstLevelEntryNotPresent);
  w.translate(fault);
  TranslateRecord unchecked;
  unchecked.req = {1, true, 0, 0xFFFF'FFFF'FFFF'F000ull, kAccessRead, false};
  w.translate(unchecked);
  invq::InvalidationOp op;
  op.caches = invq::kCacheIotlb | invq::kCachePaging;
  op.scope = invq::Scope::kRange;
  op.did = 0xFFFF;
  op.pasid = invq::kNoPasid;
  op.addr = 0xFFFF'F000;
  op.npages = 512;
  op.leaf = true;
  op.addr_is_gpa = true;
  op.function_mask = 2;
  op.pfsid = 0x300;
  op.max_invs_pending = 7;
  w.invalidate(op);
  w.wait();

  Reader r(w.finish());
  Record rec;
  ASSERT_TRUE(r.next(&rec));
  ASSERT_EQ(rec.tag, Tag::kConfig);
  EXPECT_EQ(rec.config.host_address_width, 39);
  EXPECT_FALSE(rec.config.first_level_5);
  EXPECT_TRUE(rec.config.first_level_1g);
  EXPECT_FALSE(rec.config.second_level_1g);
  ASSERT_TRUE(r.next(&rec));
  ASSERT_EQ(rec.tag, Tag::kRam);
  EXPECT_EQ(rec.addr, 0x1000u);
  EXPECT_EQ(rec.size, 0x4000'0000u);
  ASSERT_TRUE(r.next(&rec));
  ASSERT_EQ(rec.tag, Tag::kRoot);
  EXPECT_EQ(rec.addr, 0x1234'5000u);
  ASSERT_TRUE(r.next(&rec));
  ASSERT_EQ(rec.tag, Tag::kWrite);
  EXPECT_EQ(rec.addr, 0x2003u);
  EXPECT_EQ(rec.bytes, std::vector<uint8_t>(bytes, bytes + 5));
  ASSERT_TRUE(r.next(&rec));
  ASSERT_EQ(rec.tag, Tag::kWrite64);
  EXPECT_EQ(rec.addr, 0x3008u);
  EXPECT_EQ(rec.value, pte);
  ASSERT_TRUE(r.next(&rec));
  ASSERT_EQ(rec.tag, Tag::kZero);
  EXPECT_EQ(rec.addr, 0x7000u);
  EXPECT_EQ(rec.size, 4096u);
  ASSERT_TRUE(r.next(&rec));
  ASSERT_EQ(rec.tag, Tag::kThread);
  EXPECT_EQ(rec.thread, 3u);
  for (const TranslateRecord *want : {&ok, &fault, &unchecked}) {
    ASSERT_TRUE(r.next(&rec));
    ASSERT_EQ(rec.tag, Tag::kTranslate);
    const TranslateRecord &got = rec.translate;
    EXPECT_EQ(got.req.source_id, want->req.source_id);
    EXPECT_EQ(got.req.has_pasid, want->req.has_pasid);
    if (want->req.has_pasid) {
      EXPECT_EQ(got.req.pasid, want->req.pasid);
    }
    EXPECT_EQ(got.req.iova, want->req.iova);
    EXPECT_EQ(got.req.access, want->req.access);
    EXPECT_EQ(got.req.privileged, want->req.privileged);
    EXPECT_EQ(got.expect, want->expect);
    if (want->expect == Expect::kOk) {
      EXPECT_EQ(got.out, want->out);
      EXPECT_EQ(got.perms, want->perms);
      EXPECT_EQ(got.page_shift, want->page_shift);
    }
    if (want->expect == Expect::kFault) {
      EXPECT_EQ(got.fault_reason, want->fault_reason);
    }
  }
  ASSERT_TRUE(r.next(&rec));
  ASSERT_EQ(rec.tag, Tag::kInvalidate);
  EXPECT_EQ(rec.op, op);
  ASSERT_TRUE(r.next(&rec));
  EXPECT_EQ(rec.tag, Tag::kWait);
  EXPECT_FALSE(r.next(&rec));
  EXPECT_FALSE(r.next(&rec));
}

TEST(TraceFormat, SequentialTranslationsAreCompact) {
  Writer w;
  for (uint64_t i = 0; i < 1000; ++i) {
    TranslateRecord t;
    t.req = {0x100, true, 1, 0x10'0000'0000ull + i * 4096, kAccessRead, false};
    t.expect = Expect::kOk;
    t.out = 0x2'0000'0000ull + i * 4096;
    t.perms = 3;
    w.translate(t);
  }
  // After the first: tag, sid (2), pasid, iova delta (2), flags, out delta (2), perms.
  EXPECT_LE(w.finish().size(), 16u + 16u + 999u * 10u + 4u);  // the first record: full values
}

TEST(TraceFormat, MalformedTracesAreRejectedWithAReason) {
  const auto message = reject_reason;
  Writer w;
  w.ram(0, 1 << 20);
  TranslateRecord t;
  t.req.iova = 0x5000;
  t.expect = Expect::kOk;
  t.out = 0x9000;
  w.translate(t);
  const std::vector<uint8_t> good = w.finish();
  EXPECT_EQ(message(good), "");
  std::vector<uint8_t> bad = good;
  bad[0] = 'X';
  EXPECT_NE(message(bad).find("bad magic"), std::string::npos);
  bad = good;
  bad[8] = 9;
  EXPECT_NE(message(bad).find("unsupported version 9"), std::string::npos);
  bad = good;
  bad[16] = 0x55;
  EXPECT_NE(message(bad).find("unknown record type 0x55 at byte 16"), std::string::npos);
  // Every proper prefix is truncated somewhere: never accepted, never read out of bounds.
  for (size_t n = 0; n < good.size(); ++n) {
    const std::string m = message(std::vector<uint8_t>(good.begin(), good.begin() + long(n)));
    EXPECT_FALSE(m.empty()) << "prefix of " << n << " bytes accepted";
  }
  bad = good;
  bad.back() = 7;  // end record count
  EXPECT_NE(message(bad).find("end record says 7 records, read 2"), std::string::npos);
}

// A first-level-only device over engine-owned RAM, built after the recorder is attached so
// the setup writes are in the trace.
struct RecordedMachine {
  static constexpr uint16_t kSid = 0x0110;
  static constexpr uint32_t kPasid = 4;
  static constexpr uint64_t kIova = 0x20'0000'0000ull;
  static constexpr uint64_t kData = 64ull << 20;

  RecordedMachine() : m(layout()) {
    recorder = std::make_unique<Recorder>(m.engine());
    m.place_structures();
    machine::DeviceSpec spec;
    spec.source_id = kSid;
    spec.pasid = kPasid;
    spec.mode = machine::Mode::kFirstLevel;
    spec.did = 3;
    dev = &m.add_device(spec);
  }
  static machine::RamLayout layout() {
    machine::RamLayout l;
    l.ram_size = 128ull << 20;
    l.tables_base = 1ull << 20;
    l.tables_size = 32ull << 20;
    return l;
  }
  void map(uint64_t page, uint64_t target) {
    ASSERT_EQ(dev->map(kIova + page * 4096, kData + target * 4096, 12, kAccessRead | kAccessWrite),
              build::Status::kOk);
  }
  Result translate(uint64_t page, uint8_t access = kAccessRead) {
    Request q{kSid, true, kPasid, kIova + page * 4096 + 0x10, access, false};
    const Result r = m.engine().translate(q);
    recorder->translate(0, q, r);
    return r;
  }
  void invalidate_page(uint64_t page) {
    invq::InvalidationOp op;
    op.caches = invq::kCacheIotlb;
    op.scope = invq::Scope::kRange;
    op.did = 3;
    op.pasid = kPasid;
    op.addr = kIova + page * 4096;
    op.npages = 1;
    op.leaf = true;
    m.engine().invalidate(op);
    recorder->invalidate(0, op);
  }

  machine::Machine m;
  std::unique_ptr<Recorder> recorder;
  machine::Device *dev = nullptr;
};

std::vector<uint8_t> record_remap_workload() {
  RecordedMachine m;
  for (uint64_t p = 0; p < 16; ++p) m.map(p, p);
  for (int round = 0; round < 3; ++round)
    for (uint64_t p = 0; p < 20; ++p) m.translate(p, p % 3 ? kAccessRead : kAccessWrite);
  m.map(5, 100);  // remap: stale until the invalidation below
  m.invalidate_page(5);
  EXPECT_EQ(m.translate(5).t.out, RecordedMachine::kData + 100 * 4096 + 0x10);
  EXPECT_FALSE(m.translate(17).ok);
  return m.recorder->finish();
}

TEST(TraceReplay, RecordedWorkloadReplaysIdentically) {
  const std::vector<uint8_t> bytes = record_remap_workload();
  for (bool caching : {true, false}) {
    Reader r(bytes);
    ReplayOptions o;
    o.caching = caching;
    const ReplayResult res = replay(r, o);
    EXPECT_EQ(res.translations, 62u);
    EXPECT_EQ(res.checked, 62u);
    EXPECT_EQ(res.faults, 3u * 4u + 1u);  // pages 16..19 per round, then page 17
    EXPECT_EQ(res.invalidations, 1u);
    EXPECT_EQ(res.divergences, 0u) << (res.messages.empty() ? "" : res.messages[0]);
    EXPECT_GT(res.writes, 16u);
  }
  // Two passes: the second starts from the setup again and gives the same results.
  Reader r(bytes);
  ReplayOptions o;
  o.repeat = 2;
  const ReplayResult twice = replay(r, o);
  EXPECT_EQ(twice.translations, 124u);
  EXPECT_EQ(twice.divergences, 0u) << (twice.messages.empty() ? "" : twice.messages[0]);
}

TEST(TraceReplay, MissingInvalidationIsReportedAsDivergence) {
  const std::vector<uint8_t> bytes = record_remap_workload();
  // Rewrite the trace without its invalidation record.
  Writer w;
  Reader in(bytes);
  Record rec;
  uint64_t dropped = 0;
  while (in.next(&rec)) {
    if (rec.tag == Tag::kInvalidate)
      ++dropped;
    else
      w.append(rec);
  }
  ASSERT_EQ(dropped, 1u);
  Reader cached_in(w.finish());
  const ReplayResult cached = replay(cached_in);
  EXPECT_EQ(cached.divergences, 1u) << "the stale IOTLB entry for page 5 must be noticed";
  ASSERT_EQ(cached.messages.size(), 1u);
  EXPECT_NE(cached.messages[0].find("iova 0x2000005010"), std::string::npos) << cached.messages[0];
  // The uncached engine never needed the invalidation.
  Reader uncached_in(w.finish());
  ReplayOptions o;
  o.caching = false;
  EXPECT_EQ(replay(uncached_in, o).divergences, 0u);
}

TEST(TraceReplay, OntoAReusedEngineMatchesAFreshOne) {
  const std::vector<uint8_t> bytes = record_remap_workload();
  ReplayOptions o;
  const ReplaySetup setup = replay_setup(Reader(bytes), o);
  ASSERT_TRUE(setup.ram_first);
  ASSERT_FALSE(setup.ram.empty());
  Reader fresh_in(bytes);
  const ReplayResult fresh = replay(fresh_in, o);
  // The first replay adds the trace's RAM; after a reset the next claims those regions.
  Engine engine(setup.engine);
  for (int round = 0; round < 3; ++round) {
    if (round) engine.reset();
    Reader r(bytes);
    const ReplayResult res = replay(r, engine, o);
    EXPECT_EQ(res.translations, fresh.translations);
    EXPECT_EQ(res.faults, fresh.faults);
    EXPECT_EQ(res.checked, fresh.checked);
    EXPECT_EQ(res.divergences, 0u) << (res.messages.empty() ? "" : res.messages[0]);
    EXPECT_EQ(engine.memory().regions().size(), setup.ram.size());
  }
  // A duplicate RAM record still fails on the reused engine, as on a fresh one.
  Writer dup;
  Reader in(bytes);
  Record rec;
  while (in.next(&rec)) {
    dup.append(rec);
    if (rec.tag == Tag::kRam) dup.append(rec);
  }
  const std::vector<uint8_t> dup_bytes = dup.finish();
  Reader dup_fresh(dup_bytes);
  EXPECT_THROW(replay(dup_fresh, o), Error);
  engine.reset();
  Reader dup_reused(dup_bytes);
  EXPECT_THROW(replay(dup_reused, engine, o), Error);
  // RAM declared after other records cannot be taken from an engine that has RAM.
  Writer late;
  Reader in2(bytes);
  std::vector<Record> ram;
  while (in2.next(&rec)) {
    if (rec.tag == Tag::kRam)
      ram.push_back(rec);
    else
      late.append(rec);
  }
  for (const Record &r : ram) late.append(r);
  const std::vector<uint8_t> late_bytes = late.finish();
  // The reader itself refuses writes into RAM not declared before them (docs/LIMITS.md), so
  // neither a fresh nor a reused engine gets to replay such a trace.
  EXPECT_THROW(replay_setup(Reader(late_bytes), o), Error);
  engine.reset();
  Reader late_in(late_bytes);
  EXPECT_THROW(replay(late_in, engine, o), Error);
}

}  // namespace
}  // namespace nestor::trace
