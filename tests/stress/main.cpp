// nestor-stress: command-line front end of the invalidation stress checker (stress.h).
// Exit status: 0 no violation, 1 violation (report on stdout), 2 bad arguments or setup.
// With --expect-violation the meaning of 0 and 1 is swapped (used to prove the checker fails
// on a sabotaged run).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include "nestor/events.h"
#include "stress.h"

int main(int argc, char **argv) {
  using nestor::stress::Options;
  using nestor::stress::Sabotage;
  Options o;
  double soak = 0;
  bool no_qi = false, no_coalesce = false, expect_violation = false, table_edits = true;
  std::string sabotage = "none";
  CLI::App app{"nestor-stress: translate / mutate / invalidate storm with a staleness checker"};
  app.add_option("--seed", o.seed, "seed for every thread's choices");
  app.add_option("--seconds", o.seconds, "run time (bounded run)")->check(CLI::Range(0.01, 1e6));
  app.add_option("--soak", soak,
                 "soak mode: run this many seconds with a progress line each second")
      ->check(CLI::Range(1.0, 1e7));
  app.add_option("--translations", o.max_translations, "stop after about this many translations");
  app.add_option("--translators", o.translators, "translating threads")->check(CLI::Range(1, 64));
  app.add_option("--mutators", o.mutators, "table-mutating threads")->check(CLI::Range(1, 16));
  app.add_option("--invalidators", o.invalidators, "typed invalidating threads")
      ->check(CLI::Range(0, 16));
  app.add_flag("--no-qi", no_qi, "no thread driving the VT-d invalidation queue");
  app.add_option("--pages", o.pages, "pages per address space (multiple of 4, 4..256)")
      ->check(CLI::Range(4, 256));
  app.add_option("--iotlb-entries", o.iotlb_entries, "IOTLB capacity (small = many evictions)");
  app.add_option("--psc-entries", o.psc_entries, "paging-structure cache capacity");
  app.add_flag("--drain", o.drain, "engine drain on; also check translations in flight at a wait");
  app.add_flag("--no-coalesce", no_coalesce, "engine applies every op as submitted");
  app.add_flag("--background", o.background, "a worker thread processes invalidations");
  app.add_option("--granularities", o.granularities,
                 "bitmask of invalidation granularities: 1 page, 2 range, 4 pasid, 8 domain, "
                 "16 global, 32 gpa (narrowing a failure down)")
      ->check(CLI::Range(1, 63));
  app.add_option("--address-spaces", o.address_spaces,
                 "bitmask of address spaces translated/mutated: 1 first-level, 2 nested, "
                 "4 second-level only")
      ->check(CLI::Range(1, 7));
  app.add_flag("--contract", o.contract,
               "credit invalidations by invq::covers() (the engine's promise) instead of by "
               "what VT-d requires");
  app.add_flag("--table-edits,!--no-table-edits", table_edits,
               "host second-level edits of the nested space's first-level table pages (on by "
               "default)");
  app.add_flag("--gpa-dependencies", o.gpa_dependencies,
               "engine tracks GPA dependencies (NESTOR_GPA_INV_DEPENDENCIES); type 0x2 is then "
               "checked against the nesting contract, not VT-d's domain-wide reach");
  app.add_option("--events", o.events,
                 "a checking hook for these event kinds (EventKindBits mask, e.g. 63 for all)")
      ->check(CLI::Range(0u, unsigned(nestor::kEventAll)));
  app.add_option("--owner-queues", o.owner_queues,
                 "the owner-queue world instead: this many VMs built through the bind layer, "
                 "each invalidating its own first-level table through its own direct queue "
                 "(--mutators per VM; --invalidators host threads of typed invalidations)")
      ->check(CLI::Range(0, 8));
  app.add_flag("--progress", o.progress, "progress line each second (implied by --soak)");
  app.add_option("--sabotage", sabotage,
                 "break something on purpose: none, skip-invalidation, "
                 "drain-check-without-drain, narrow-gpa-invalidation, skip-owner-invalidation "
                 "(with --owner-queues)")
      ->check(CLI::IsMember({"none", "skip-invalidation", "drain-check-without-drain",
                             "narrow-gpa-invalidation", "skip-owner-invalidation"}));
  app.add_flag("--expect-violation", expect_violation, "succeed only if a violation is found");
  CLI11_PARSE(app, argc, argv);
  o.qi = !no_qi;
  o.coalesce = !no_coalesce;
  o.table_edits = table_edits;
  if (soak > 0) {
    o.seconds = soak;
    o.progress = true;
  }
  static const std::map<std::string, Sabotage> kSabotage = {
      {"none", Sabotage::kNone},
      {"skip-invalidation", Sabotage::kSkipInvalidation},
      {"drain-check-without-drain", Sabotage::kDrainCheckWithoutDrain},
      {"narrow-gpa-invalidation", Sabotage::kNarrowGpaInvalidation},
      {"skip-owner-invalidation", Sabotage::kSkipOwnerInvalidation}};
  o.sabotage = kSabotage.at(sabotage);
  try {
    const nestor::stress::Summary s = nestor::stress::run(o);
    nestor::stress::print_summary(std::cout, o, s);
    const bool violated = s.violations != 0;
    if (expect_violation) {
      std::cout << (violated ? "expected violation found\n" : "expected a violation, found none\n");
      return violated ? 0 : 1;
    }
    return violated ? 1 : 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "nestor-stress: %s\n", e.what());
    return 2;
  }
}
