// nestor-stress: translating, table-mutating and invalidating threads run together against one
// cached engine while a checker proves DESIGN.md invariants 1 (no stale translation after a
// completed wait; with drain, also none from translations in flight at the wait), 3 (nested
// HPAs stay inside the bound second-level domain) and the permission contract.
//
// Every mapping carries a version encoded in its target address, so a translation result says
// which version of the page table produced it. The library is shared by the CLI tool
// (main.cpp) and the ctest runs (stress_test.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace nestor::stress {

// Deliberate breakage used to prove the checker can fail (docs/STRESS.md, "Can it fail?").
enum class Sabotage : uint8_t {
  kNone,
  kSkipInvalidation,        // typed invalidators publish completion without invalidating
  kDrainCheckWithoutDrain,  // drain off in the engine, but the in-flight (drain) check is run
  // The engine gets GPA invalidations narrowed to the final GPA's dependents (the pre-fix
  // reading of type 0x2) while the checker keeps the architecture's rule.
  kNarrowGpaInvalidation,
  // Owner-queue world: each owner's invalidator writes only the wait descriptor (none of its
  // invalidation descriptors) and still publishes completion.
  kSkipOwnerInvalidation,
};

struct Options {
  uint64_t seed = 1;
  unsigned translators = 2;
  unsigned mutators = 1;
  unsigned invalidators = 1;      // typed: Engine::invalidate + Engine::invalidate_wait
  bool qi = true;                 // one more invalidator driving the VT-d queue (QI registers)
  double seconds = 1.0;           // run time bound (also the soak length)
  uint64_t max_translations = 0;  // 0: bounded by time only
  unsigned pages = 64;            // IOVA pages per address space (4..256, multiple of 4)
  bool drain = false;             // EngineConfig::drain, enables the in-flight check
  bool coalesce = true;
  bool background = false;        // EngineConfig::background_invalidation
  uint32_t iotlb_entries = 1024;  // small: evictions and refills happen all the time
  uint32_t psc_entries = 256;
  bool progress = false;  // one line per second on stderr (soak)
  // Which invalidations count as removing a page's old version. false: what VT-d requires
  // (first-level/nested leaves: PASID-based ops, domain, global; second-level leaves: GPA
  // ops, domain, global). true: invq::covers(), the engine's own, wider promise (a GPA op
  // also drops every first-level/nested entry of the domain).
  bool contract = false;
  // Host second-level edits of the nested space's first-level table pages (unmap and restore,
  // remap to a copy, move and scrub), each announced by a type 0x2 invalidation and a wait.
  bool table_edits = true;
  // EngineConfig::GpaInvalidation::kDependencies, checked against the nesting contract: a type
  // 0x2 owes the second-level changes in its range (data pages and first-level table pages);
  // first-level changes are announced with PASID-based invalidations only.
  bool gpa_dependencies = false;
  unsigned granularities = 0x3F;  // bit g: invalidations of Granularity g are issued
  unsigned address_spaces = 0x7;  // bit a: address space a is translated and mutated
  Sabotage sabotage = Sabotage::kNone;
  uint32_t events = 0;  // EventKindBits a hook registers for during the run (0: none)
  // 1..8: the owner-queue world instead (docs/STRESS.md, "Owner-direct queues"): this many VMs
  // built through the bind layer, each invalidating its own guest first-level table through
  // its own direct queue. `mutators` is then per VM, `invalidators` counts host threads issuing
  // typed invalidations of the VMs' bindings, and the host QI thread does not run.
  unsigned owner_queues = 0;
};

// Invalidation granularities, counted per front end.
enum Granularity : unsigned {
  kGranPage,    // PASID-scoped first-level page (one 4K page)
  kGranRange,   // PASID-scoped first-level range (several pages, sometimes promoted)
  kGranPasid,   // everything of (DID, PASID)
  kGranDomain,  // everything of a DID
  kGranGlobal,
  kGranGpa,  // GPA-addressed range within a DID (second-level change)
  kGranCount
};
const char *granularity_name(unsigned g);

// What an owner writes into its direct queue, counted per kind (owner-queue world).
enum OwnerGranularity : unsigned {
  kOwnerPage,      // 0x6 page-selective-within-PASID (G=11b), AM=0
  kOwnerRange,     // 0x6 page-selective-within-PASID (G=11b), AM>0
  kOwnerPasid,     // 0x6 PASID-selective (G=10b)
  kOwnerPcPasid,   // 0x7 PASID cache, PASID-selective (G=01b)
  kOwnerPcDomain,  // 0x7 PASID cache, domain-selective (G=00b): all the owner's bindings
  kOwnerPcGlobal,  // 0x7 PASID cache, global (G=11b): all the owner's bindings
  kOwnerDevTlb,    // 0x8 PASID-based device TLB
  kOwnerGranCount
};
const char *owner_granularity_name(unsigned g);

// One owner's direct queue at the end of a run (BindLayer::owner_queue_stats).
struct OwnerQueueSummary {
  uint64_t tail_writes = 0, descriptors = 0, ops_submitted = 0, waits = 0, errors = 0;
  uint64_t refused_not_owned = 0, refused_host_only = 0;
};

struct Summary {
  uint64_t translations = 0;
  uint64_t faults = 0;  // expected faults (unmapped pages, writes to read-only pages)
  uint64_t mutations = 0;
  uint64_t table_edits = 0;                  // host second-level edits of first-level table pages
  std::array<uint64_t, kGranCount> typed{};  // typed invalidations by granularity
  std::array<uint64_t, kGranCount> qi{};     // QI descriptors by granularity
  uint64_t waits = 0;                        // completed waits (typed + QI)
  uint64_t unverifiable = 0;  // results whose version history was overwritten (should be ~0)
  uint64_t violations = 0;
  uint64_t events = 0;  // delivered to the --events hook
  // Owner-queue world only.
  std::array<uint64_t, kOwnerGranCount> owner{};  // descriptors owners wrote, by kind
  uint64_t hostile = 0;  // refused descriptors (another's PASID, host-only type): IQE as expected
  std::vector<OwnerQueueSummary> owner_queues;  // per owner
  double seconds = 0;
  std::string report;  // first violation: seed, options, log tail
};

// Runs one bounded stress run. Progress lines (if enabled) go to stderr.
Summary run(const Options &opt);

// The options as a command line that reproduces the run.
std::string command_line(const Options &opt);

void print_summary(std::ostream &os, const Options &opt, const Summary &s);

}  // namespace nestor::stress
