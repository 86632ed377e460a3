// Fault injection through MachineMemory::set_fail_injector: every structure and table read a
// walk makes, and every A/D compare-exchange, is made to fail in turn. The walk must fault with
// the access fault of that stage (VT-d 0x38/0x40/0x50/0x58/0x70/0x73/0x78), nothing built from
// a failed access may be cached (once the failure is gone the same request translates like the
// uncached reference engine, and the faulting translation added no IOTLB entry), random
// failures under concurrent translation never crash, and the invalidation queue reports a
// descriptor fetch failure without losing the descriptors after it.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <set>
#include <thread>
#include <vector>

#include "../engine_caches/machine.h"
#include "nestor/invalidation.h"

namespace nestor::test {
namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kConcurrentTranslations = 3000;
#else
constexpr int kConcurrentTranslations = 40000;
#endif

constexpr uint64_t kPages = 16;

// Records every access (address, is_write) and fails the ones matching `fail_pa`/`fail_write`.
struct Injector {
  std::vector<std::pair<uint64_t, bool>> trace;
  bool recording = false;
  uint64_t fail_pa = ~uint64_t{0};
  bool fail_write = false;
  static bool fn(void *ctx, uint64_t pa, bool is_write) {
    auto *self = static_cast<Injector *>(ctx);
    if (self->recording) self->trace.emplace_back(pa, is_write);
    return pa == self->fail_pa && is_write == self->fail_write;
  }
};

void flush(Machine &m) {
  m.invalidate_scope(invq::Scope::kGlobal, invq::kAllCaches);
}

uint64_t iotlb_fills(Engine &e) {
  return e.stats().iotlb.fills;
}

// Where a traced read lies, and so which access fault failing it must give. The walk reads, in
// order: root entry (2 words), context entry (4), PASID directory entry (1), PASID entry (8),
// then table entries. First-level tables are identified by address: host tables in FL mode,
// the guest-table window in nested mode; everything else after the structures is second level.
FaultReason expected_read_fault(Mode mode, size_t index, uint64_t pa, bool *first_fl_seen) {
  if (index < 2) return FaultReason::kRootEntryAccess;
  if (index < 6) return FaultReason::kContextEntryAccess;
  if (index < 7) return FaultReason::kPasidDirEntryAccess;
  if (index < 15) return FaultReason::kPasidEntryAccess;
  bool fl = mode == Mode::kFirstLevel;
  if (mode == Mode::kNested) fl = pa >= kDataBase + kGuestTables && pa < kDataBase + kGuestRam;
  if (!fl) return FaultReason::kSecondLevelEntryAccess;
  const bool first = !*first_fl_seen;
  *first_fl_seen = true;
  return first ? FaultReason::kFirstLevelRootAccess : FaultReason::kFirstLevelEntryAccess;
}

class WalkFaults : public ::testing::TestWithParam<Mode> {};

TEST_P(WalkFaults, EveryReadFailsCleanlyAndNothingIsCached) {
  const Mode mode = GetParam();
  Machine m(mode);
  ASSERT_EQ(m.map(0, 3, 12, true), build::Status::kOk);
  const Request req = Machine::request(0, kAccessRead, 0x123);
  const Result want = m.reference->translate(req);
  ASSERT_TRUE(want.ok);

  Injector inj;
  MachineMemory &mem = m.cached->memory();
  flush(m);
  inj.recording = true;
  mem.set_fail_injector(&Injector::fn, &inj);
  ASSERT_TRUE(same(m.cached->translate(req), want));
  mem.set_fail_injector(nullptr, nullptr);
  inj.recording = false;
  ASSERT_GT(inj.trace.size(), 15u);

  std::set<uint64_t> done;
  bool first_fl_seen = false;
  size_t reads = 0;
  for (size_t i = 0; i < inj.trace.size(); ++i) {
    const auto [pa, is_write] = inj.trace[i];
    if (is_write) continue;
    const size_t index = reads++;
    const FaultReason expect = expected_read_fault(mode, index, pa, &first_fl_seen);
    if (!done.insert(pa).second) continue;  // a repeated address already failed at its first read
    SCOPED_TRACE(::testing::Message() << "read #" << index << " at 0x" << std::hex << pa);
    flush(m);
    inj.fail_pa = pa;
    inj.fail_write = false;
    mem.set_fail_injector(&Injector::fn, &inj);
    const uint64_t fills = iotlb_fills(*m.cached);
    const Result r = m.cached->translate(req);
    const uint64_t fills_after = iotlb_fills(*m.cached);
    mem.set_fail_injector(nullptr, nullptr);
    ASSERT_FALSE(r.ok);
    EXPECT_EQ(int(r.fault.reason), int(expect))
        << fault_reason_name(r.fault.reason) << " stage " << int(r.fault.stage);
    EXPECT_EQ(fills_after, fills) << "a faulting walk filled the IOTLB";
    // Failure gone: the same request (caches not flushed) must translate like the reference.
    EXPECT_TRUE(same(m.cached->translate(req), want));
  }
  // And the fault log saw the access faults.
  FaultRecord rec[512];
  EXPECT_GT(m.cached->fault_log().drain(rec, 512), 0u);
}

// A failed A/D compare-exchange: the walk faults and leaves no IOTLB entry; with the failure
// gone the page translates (and gets its A/D bits).
TEST_P(WalkFaults, FailedAccessedDirtyUpdateLeavesNoEntry) {
  const Mode mode = GetParam();
  if (mode == Mode::kSecondLevel) GTEST_SKIP() << "no second-level A/D in this machine";
  Machine m(mode);
  Injector inj;
  MachineMemory &mem = m.cached->memory();
  for (uint8_t access : {kAccessRead, kAccessWrite}) {
    SCOPED_TRACE(int(access));
    // A fresh leaf (no A/D) every round, so the walk must compare-exchange it.
    ASSERT_EQ(m.map(1, 9, 12, true), build::Status::kOk);
    flush(m);
    const Request req = Machine::request(1, access);
    inj.trace.clear();
    inj.recording = true;
    inj.fail_pa = ~uint64_t{0};
    mem.set_fail_injector(&Injector::fn, &inj);
    ASSERT_TRUE(m.cached->translate(req).ok);
    mem.set_fail_injector(nullptr, nullptr);
    inj.recording = false;
    uint64_t leaf_cas = 0;
    for (auto [pa, w] : inj.trace)
      if (w) leaf_cas = pa;  // the last compare-exchange is the leaf's
    ASSERT_NE(leaf_cas, 0u) << "walk did not update A/D; the test would prove nothing";

    ASSERT_EQ(m.map(1, 9, 12, true), build::Status::kOk);  // clear A/D again
    flush(m);
    inj.fail_pa = leaf_cas;
    inj.fail_write = true;
    mem.set_fail_injector(&Injector::fn, &inj);
    const uint64_t fills = iotlb_fills(*m.cached);
    const Result r = m.cached->translate(req);
    const uint64_t fills_after = iotlb_fills(*m.cached);
    mem.set_fail_injector(nullptr, nullptr);
    ASSERT_FALSE(r.ok);
    EXPECT_EQ(int(r.fault.reason), int(FaultReason::kFirstLevelEntryAccess));
    EXPECT_EQ(fills_after, fills) << "a failed A/D update left an IOTLB entry";
    const Result again = m.cached->translate(req);
    EXPECT_TRUE(same(again, m.reference->translate(req)));
    EXPECT_TRUE(again.ok);
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, WalkFaults,
                         ::testing::Values(Mode::kFirstLevel, Mode::kSecondLevel, Mode::kNested),
                         [](const auto &info) { return mode_name(info.param); });

// Random failures at a fixed rate while three threads translate and one invalidates: every
// result is either exactly the reference translation or an access fault; afterwards nothing
// wrong is left in the caches.
struct RandomFail {
  std::atomic<uint64_t> n{0};
  uint32_t per_1024 = 0;
  static bool fn(void *ctx, uint64_t pa, bool) {
    auto *self = static_cast<RandomFail *>(ctx);
    uint64_t x = self->n.fetch_add(1, std::memory_order_relaxed) * 0x9E3779B97F4A7C15ull ^ pa;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return (x & 1023) < self->per_1024;
  }
};

bool is_access_fault(FaultReason r) {
  switch (r) {
    case FaultReason::kRootEntryAccess:
    case FaultReason::kContextEntryAccess:
    case FaultReason::kPasidDirEntryAccess:
    case FaultReason::kPasidEntryAccess:
    case FaultReason::kFirstLevelEntryAccess:
    case FaultReason::kFirstLevelRootAccess:
    case FaultReason::kSecondLevelEntryAccess:
      return true;
    default:
      return false;
  }
}

class RandomFailures : public ::testing::TestWithParam<Mode> {};

TEST_P(RandomFailures, ConcurrentTranslationNeverCrashesOrCachesGarbage) {
  const Mode mode = GetParam();
  Machine m(mode);
  for (uint64_t p = 0; p < kPages; ++p)
    ASSERT_EQ(m.map(p, 100 + p, 12, p % 3 != 0), build::Status::kOk);
  std::vector<Result> want[2];
  for (uint64_t p = 0; p < kPages; ++p)
    for (int w = 0; w < 2; ++w)
      want[w].push_back(
          m.reference->translate(Machine::request(p, w ? kAccessWrite : kAccessRead)));

  for (uint32_t rate : {8u, 128u, 900u}) {  // of 1024 accesses
    SCOPED_TRACE(rate);
    RandomFail rf;
    rf.per_1024 = rate;
    flush(m);
    m.cached->memory().set_fail_injector(&RandomFail::fn, &rf);
    std::atomic<uint64_t> bad{0}, faults{0};
    std::atomic<bool> done{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t)
      threads.emplace_back([&, t] {
        AddressSpace as = m.cached->open(kSid, true, kPasid);
        for (int i = 0; i < kConcurrentTranslations; ++i) {
          const uint64_t p = uint64_t(i * 7 + t) % kPages;
          const int w = (i >> 3) & 1;
          const Result r =
              (i & 1) ? as.translate(Machine::request(p, 0).iova, w ? kAccessWrite : kAccessRead)
                      : m.cached->translate(Machine::request(p, w ? kAccessWrite : kAccessRead));
          if (r.ok || !is_access_fault(r.fault.reason)) {
            if (!same(r, want[w][p])) bad.fetch_add(1);
          } else {
            faults.fetch_add(1, std::memory_order_relaxed);
          }
        }
      });
    threads.emplace_back([&] {  // invalidations keep refilling (and re-failing) the caches
      int i = 0;
      while (!done.load(std::memory_order_relaxed)) {
        m.invalidate_scope(i % 3 ? invq::Scope::kPasid : invq::Scope::kGlobal, invq::kAllCaches);
        ++i;
      }
    });
    for (int t = 0; t < 3; ++t) threads[t].join();
    done.store(true);
    threads[3].join();
    m.cached->memory().set_fail_injector(nullptr, nullptr);
    EXPECT_EQ(bad.load(), 0u) << "results that are neither the reference nor an access fault";
    if (rate >= 128) {
      EXPECT_GT(faults.load(), 0u) << "injector never fired: the test would prove nothing";
    }
    // Failures gone, caches not flushed: everything must match the reference.
    for (uint64_t p = 0; p < kPages; ++p)
      for (int w = 0; w < 2; ++w)
        EXPECT_TRUE(same(m.cached->translate(Machine::request(p, w ? kAccessWrite : kAccessRead)),
                         want[w][p]))
            << "page " << p;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, RandomFailures,
                         ::testing::Values(Mode::kFirstLevel, Mode::kSecondLevel, Mode::kNested),
                         [](const auto &info) { return mode_name(info.param); });

// Queued invalidation: descriptor 1 of 4 cannot be fetched. The queue stops with IQE and head
// on it, descriptors after it are not applied; after clear_error and a tail write the rest is
// processed and the wait's status lands.
TEST(QueueFaults, FetchFailureStopsQueueAndLosesNothing) {
  Machine m(Mode::kFirstLevel);
  constexpr uint64_t kRing = 8ull << 20, kStatus = 9ull << 20;  // unused RAM below the tables
  for (uint64_t p = 0; p < 3; ++p) ASSERT_EQ(m.map(p, 10 + p, 12, true), build::Status::kOk);
  std::vector<Result> old;
  for (uint64_t p = 0; p < 3; ++p) {
    old.push_back(m.cached->translate(Machine::request(p, kAccessRead)));
    ASSERT_TRUE(old.back().ok);
  }
  for (uint64_t p = 0; p < 3; ++p) ASSERT_EQ(m.map(p, 20 + p, 12, true), build::Status::kOk);
  for (uint64_t p = 0; p < 3; ++p)
    ASSERT_TRUE(same(m.cached->translate(Machine::request(p, kAccessRead)), old[p]))
        << "not cached: the test would prove nothing";

  EngineInvalidation &inv = m.cached->invalidation();
  ASSERT_EQ(inv.qi_configure(kRing, 128, 256), 0);
  MachineMemory &mem = m.cached->memory();
  auto put = [&](uint64_t index, uint64_t qw0, uint64_t qw1) {
    const uint64_t qw[4] = {qw0, qw1, 0, 0};  // 0x6 exists only as a 256-bit descriptor
    ASSERT_EQ(mem.write(kRing + index * 32, qw, 32), 0);
  };
  for (uint64_t p = 0; p < 3; ++p)  // PASID-based IOTLB, page-selective (G=3)
    put(p, 0x6 | (3u << 4) | uint64_t(kDid) << 16 | uint64_t(kPasid) << 32, kIovaBase + p * 4096);
  put(3, 0x5 | (1u << 5) | uint64_t(0xC0DE) << 32, kStatus);

  Injector inj;
  inj.fail_pa = kRing + 32;  // descriptor 1
  mem.set_fail_injector(&Injector::fn, &inj);
  EXPECT_NE(inv.qi_write_tail(4), 0);
  mem.set_fail_injector(nullptr, nullptr);
  EXPECT_EQ(inv.queue().error(), invq::QiError::kInvalidDescriptor);
  EXPECT_EQ(inv.queue().fault(), invq::QueueFault::kFetchFailed);
  EXPECT_EQ(inv.queue().head(), 1u);
  uint32_t status = 0;
  ASSERT_EQ(mem.read(kStatus, &status, 4), 0);
  EXPECT_EQ(status, 0u) << "the wait after the bad descriptor completed";
  for (uint64_t p = 1; p < 3; ++p)
    EXPECT_TRUE(same(m.cached->translate(Machine::request(p, kAccessRead)), old[p]))
        << "descriptor " << p << " (after the failed one) was applied";
  // A tail write while stopped is refused and changes nothing.
  EXPECT_EQ(inv.qi_write_tail(4), -EBUSY);
  EXPECT_EQ(inv.queue().head(), 1u);

  inv.queue().clear_error();
  EXPECT_EQ(inv.qi_write_tail(4), 0);
  EXPECT_EQ(inv.queue().head(), 4u);
  ASSERT_EQ(mem.read(kStatus, &status, 4), 0);
  EXPECT_EQ(status, 0xC0DEu);
  for (uint64_t p = 0; p < 3; ++p) {
    const Result r = m.cached->translate(Machine::request(p, kAccessRead));
    EXPECT_TRUE(same(r, m.reference->translate(Machine::request(p, kAccessRead)))) << p;
    EXPECT_EQ(r.t.out, kDataBase + (20 + p) * 4096) << p;
  }
}

}  // namespace
}  // namespace nestor::test
