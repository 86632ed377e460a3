// Bounded nestor-stress runs as ctest cases (label "concurrency": CI runs them under TSan too).
// Each run is time-bounded; sanitizer builds get shorter runs since they translate ~10x slower
// and the point there is the race detector, not the iteration count.
#include <gtest/gtest.h>

#include <memory>
#include <sstream>

#include "nestor/events.h"
#include "stress.h"
#include "stress_internal.h"

namespace nestor::stress {
namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr double kSeconds = 0.8;
constexpr double kSabotageSeconds = 4.0;
#else
constexpr double kSeconds = 1.5;
constexpr double kSabotageSeconds = 5.0;
#endif

Summary expect_clean(Options o) {
  o.seconds = kSeconds;
  const Summary s = run(o);
  std::ostringstream os;
  print_summary(os, o, s);
  EXPECT_EQ(s.violations, 0u) << os.str();
  // The run must have exercised what it claims to check, else a pass proves nothing.
  EXPECT_GT(s.translations, 1000u) << os.str();
  EXPECT_GT(s.mutations, 10u) << os.str();
  EXPECT_GT(s.waits, 10u) << os.str();
  EXPECT_LT(s.unverifiable * 100, s.translations + 100) << os.str();
  return s;
}

TEST(Stress, AllFrontEnds) {
  Options o;
  o.seed = 1;
  const Summary s = expect_clean(o);
  for (unsigned g = 0; g < kGranCount; ++g) {
    EXPECT_GT(s.typed[g], 0u) << granularity_name(g);
    EXPECT_GT(s.qi[g], 0u) << granularity_name(g);
  }
}

// The engine's dependency-tracked GPA invalidation, checked against the nesting contract.
TEST(Stress, GpaDependenciesUnderTheNestingContract) {
  Options o;
  o.seed = 22;
  o.gpa_dependencies = true;
  expect_clean(o);
}

// The host edits the second-level mapping of the nested space's first-level table pages while
// translators run (every Options run does; these runs do little else, which is how the races
// behind docs/STRESS.md finding 7 were found): after the type 0x2 invalidation's wait, no
// translation may still go through an unmapped table page. Both GPA reaches: the
// architectural one and the dependency-tracked one (finding 8 was the checker's).
TEST(Stress, HostEditsOfFirstLevelTablePages) {
  for (const bool dependencies : {false, true}) {
    SCOPED_TRACE(dependencies ? "--gpa-dependencies" : "architectural GPA reach");
    Options o;
    o.seed = 33;
    o.address_spaces = 2;  // nested only
    o.qi = false;
    o.invalidators = 0;  // the edits' own announcements are the only invalidations
    o.gpa_dependencies = dependencies;
    const Summary s = expect_clean(o);
    EXPECT_GT(s.table_edits, 10u);
  }
}

TEST(Stress, Drain) {
  Options o;
  o.seed = 2;
  o.drain = true;
  expect_clean(o);
}

TEST(Stress, DrainBackgroundWorker) {
  Options o;
  o.seed = 3;
  o.drain = true;
  o.background = true;
  expect_clean(o);
}

TEST(Stress, NoCoalesce) {
  Options o;
  o.seed = 4;
  o.coalesce = false;
  expect_clean(o);
}

TEST(Stress, TinyCachesManyPages) {
  Options o;
  o.seed = 5;
  o.pages = 256;
  o.iotlb_entries = 64;
  o.psc_entries = 16;
  expect_clean(o);
}

TEST(Stress, ManyThreads) {
  Options o;
  o.seed = 6;
  o.translators = 3;
  o.mutators = 2;
  o.invalidators = 2;
  o.drain = true;
  expect_clean(o);
}

// The checker must be able to fail: invalidators that publish completion without
// invalidating leave stale IOTLB entries behind, and the run must report them.
// Every event kind hooked: translations take the observed paths (still checked for exactness
// by the run) and every emission site runs against the storm; the hook checks each event.
TEST(Stress, EventHooksOnEveryKind) {
  Options o;
  o.seed = 17;
  o.events = kEventAll;
  const Summary s = expect_clean(o);
  EXPECT_GE(s.events, s.translations) << "each translation is at least one event";
}

TEST(Stress, CatchesSkippedInvalidation) {
  Options o;
  o.table_edits = false;  // edits hold the mutator back: fewer chances to catch it
  o.seed = 7;
  o.qi = false;  // the QI thread would invalidate for real and hide some staleness
  o.sabotage = Sabotage::kSkipInvalidation;
  o.seconds = kSabotageSeconds;
  const Summary s = run(o);
  ASSERT_GT(s.violations, 0u) << "a run without invalidations passed the checker";
  EXPECT_NE(s.report.find("invariant 1"), std::string::npos) << s.report;
  EXPECT_NE(s.report.find("--seed 7"), std::string::npos) << s.report;
  EXPECT_NE(s.report.find("operation log tail"), std::string::npos) << s.report;
  EXPECT_LT(s.seconds, kSabotageSeconds) << "should stop at the first violation";
}

// The in-flight (drain) check must be able to fail too: with the engine's drain off, a
// translation that began before an invalidation and is still running when the wait completes
// returns the removed version, and the check must see it.
TEST(Stress, CatchesMissingDrain) {
  Options o;
  o.table_edits = false;  // edits hold the mutator back: fewer chances to catch it
  o.seed = 8;
  o.sabotage = Sabotage::kDrainCheckWithoutDrain;
  o.seconds = kSabotageSeconds;
  const Summary s = run(o);
  ASSERT_GT(s.violations, 0u) << "translations in flight at a wait were never caught without drain";
  EXPECT_NE(s.report.find("(drain)"), std::string::npos) << s.report;
}

// Dropping the architecture's reach of type 0x2 (the engine keeps first-level and nested
// entries a GPA invalidation of their domain must remove) must be caught. Only GPA ops are
// issued, so nothing else removes the entries the checker credits to them.
TEST(Stress, CatchesNarrowGpaInvalidation) {
  Options o;
  o.table_edits = false;  // edits hold the mutator back: fewer chances to catch it
  o.seed = 23;
  o.granularities = 1u << kGranGpa;
  o.sabotage = Sabotage::kNarrowGpaInvalidation;
  o.seconds = kSabotageSeconds;
  const Summary s = run(o);
  ASSERT_GT(s.violations, 0u) << "type 0x2 narrowed to final-GPA dependents went unnoticed";
  EXPECT_NE(s.report.find("invariant 1"), std::string::npos) << s.report;
}

// The owner-queue world: VMs built through the bind layer invalidate their own first-level
// tables through their own direct queues (docs/STRESS.md, "Owner-direct queues"). Clean, with
// and without the background worker, and every descriptor kind, the hostile ones and every
// owner's queue must have done work.
TEST(Stress, OwnerQueues) {
  for (const bool background : {false, true}) {
    Options o;
    o.seed = 41 + background;
    o.owner_queues = 3;
    o.background = background;
    o.drain = background;
    const Summary s = expect_clean(o);
    std::ostringstream os;
    print_summary(os, o, s);
    for (unsigned g = 0; g < kOwnerGranCount; ++g)
      EXPECT_GT(s.owner[g], 0u) << owner_granularity_name(g) << "\n" << os.str();
    EXPECT_GT(s.hostile, 0u) << os.str();
    ASSERT_EQ(s.owner_queues.size(), 3u);
    for (const OwnerQueueSummary &q : s.owner_queues) {
      EXPECT_GT(q.waits, 0u) << os.str();
      // Every stop was one of the hostile descriptors, refused for the reason it was built for.
      EXPECT_EQ(q.errors, q.refused_not_owned + q.refused_host_only) << os.str();
    }
  }
}

// Owners that write only the wait and still publish completion leave stale entries behind.
TEST(Stress, CatchesSkippedOwnerInvalidation) {
  Options o;
  o.seed = 43;
  o.owner_queues = 2;
  o.invalidators = 0;  // the host's typed invalidations would remove some stale entries
  o.sabotage = Sabotage::kSkipOwnerInvalidation;
  o.seconds = kSabotageSeconds;
  const Summary s = run(o);
  ASSERT_GT(s.violations, 0u) << "owners that never invalidated passed the checker";
  EXPECT_NE(s.report.find("invariant 1"), std::string::npos) << s.report;
  EXPECT_NE(s.report.find("--owner-queues 2"), std::string::npos) << s.report;
}

// The table-page check of the translators (docs/STRESS.md finding 8), replayed step by step on
// one page's history. A translator reads the level's completed version, translates, reads
// `written`, and is descheduled before it reads the history ring; meanwhile the host editor
// unmaps and restores the page kHist / 2 more times. Every version the translator asks about
// has left the ring by then. Before this check knew "unknown", that read as "no version since
// the completed wait was mapped" and a served translation was reported stale.
TEST(StressChecker, TableHistoryOverwrittenWhileDescheduledIsUnknownNotUnmapped) {
  auto vs = std::make_unique<Versioned>();
  vs->hist[1].store(uint64_t{1} << 2 | kReadWrite);
  auto edit = [&](State st) {  // Run::edit_table's order: history entry, change, written
    const uint64_t v = vs->written.load() + 1;
    vs->hist[v % kHist].store(v << 2 | st);
    vs->written.store(v);
    return v;
  };
  auto unmap_and_restore = [&] {
    const uint64_t v = edit(kUnmapped);
    vs->completed.store(v);  // the unmap's wait completed
    edit(kReadWrite);
    vs->completed.store(v + 1);
  };
  unmap_and_restore();
  // The translator reads the completed version, is served through the mapped page, reads
  // `written`, and is descheduled while the editor goes on.
  const uint64_t completed_before = vs->completed.load();
  const uint64_t written_after = vs->written.load();
  for (unsigned i = 0; i < kHist / 2; ++i) unmap_and_restore();
  const HistoryStates s = history_states(*vs, completed_before, written_after);
  EXPECT_FALSE(s.mapped) << "the versions asked about have left the ring";
  EXPECT_TRUE(s.unknown);
  EXPECT_FALSE(history_shows_gone(s)) << "a lost history is no proof that the page was unmapped";

  // What still is a violation: the unmap's wait completed, nothing newer was written, and the
  // history holds that version.
  const uint64_t v = edit(kUnmapped);
  vs->completed.store(v);
  const HistoryStates gone = history_states(*vs, vs->completed.load(), vs->written.load());
  EXPECT_TRUE(gone.unmapped);
  EXPECT_FALSE(gone.mapped);
  EXPECT_FALSE(gone.unknown);
  EXPECT_TRUE(history_shows_gone(gone));
  // And what is not: the restore's history entry is stored before the page is mapped again
  // (and before `written` moves), so a walk that already read the restored mapping is covered.
  vs->hist[(v + 1) % kHist].store((v + 1) << 2 | kReadWrite);
  const HistoryStates restoring = history_states(*vs, v, v);
  EXPECT_TRUE(restoring.mapped);
  EXPECT_FALSE(restoring.unknown);
  EXPECT_FALSE(history_shows_gone(restoring));
}

}  // namespace
}  // namespace nestor::stress
