// The workload driver's scenarios end to end on small machines: every translation is checked
// against the guest's current mapping while guests remap and invalidators storm, recordings
// replay without divergence, walks read the architectural number of entries, and the reports
// and charts carry the numbers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "histogram.h"
#include "report.h"
#include "trace.h"
#include "workload.h"

namespace nestor::driver {
namespace {

std::string temp_path(const std::string &name) {
  return ::testing::TempDir() + "nestor-driver-" + std::to_string(getpid()) + "-" + name;
}

DriverOptions small(const std::string &scenario) {
  DriverOptions o;
  o.scenario = scenario;
  o.machine.vms = 2;
  o.machine.devices_per_vm = 2;
  o.pages = {512};
  o.threads = 2;
  o.ops = 20000;
  o.remap_every = 1000;
  o.remap_pages = 4;
  o.engine.iotlb_entries = 4096;
  return o;
}

uint64_t sum(const std::array<uint64_t, kGranularities> &a) {
  uint64_t n = 0;
  for (uint64_t v : a) n += v;
  return n;
}

TEST(LatencyHistogram, PercentilesAreWithinBucketPrecision) {
  std::mt19937_64 rng(3);
  std::lognormal_distribution<double> dist(5.0, 1.5);
  std::vector<uint64_t> values(20000);
  LatencyHistogram h, a, b;
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = uint64_t(dist(rng));
    h.record(values[i]);
    (i % 2 ? a : b).record(values[i]);
  }
  a.merge(b);
  std::sort(values.begin(), values.end());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const uint64_t exact = values[size_t(q * double(values.size())) - 1];
    const uint64_t got = h.percentile(q);
    EXPECT_GE(got, exact) << q;
    EXPECT_LE(double(got), double(exact) * 1.0625 + 1) << q;
    EXPECT_EQ(a.percentile(q), got) << "merge must equal recording everything in one";
  }
  EXPECT_EQ(h.percentile(1.0), values.back());
  EXPECT_EQ(h.max(), values.back());
  EXPECT_EQ(h.min(), values.front());
  const auto cdf = h.cdf();
  ASSERT_FALSE(cdf.empty());
  EXPECT_DOUBLE_EQ(cdf.back().second, 1.0);
  for (size_t i = 1; i < cdf.size(); ++i) EXPECT_GT(cdf[i].first, cdf[i - 1].first);
}

TEST(LatencyHistogram, BucketBoundsAreConsistent) {
  for (unsigned i = 0; i < LatencyHistogram::kBuckets; ++i) {
    EXPECT_EQ(LatencyHistogram::index(LatencyHistogram::upper(i)), i) << i;
    if (i) {
      EXPECT_EQ(LatencyHistogram::index(LatencyHistogram::upper(i - 1) + 1), i) << i;
    }
  }
  EXPECT_EQ(LatencyHistogram::index(~uint64_t{0}), LatencyHistogram::kBuckets - 1);
}

TEST(Mix, ParsesWeightsAndRejectsNonsense) {
  const auto m = parse_mix("page:3,gpa:1,global:2");
  EXPECT_EQ(m[kPage], 3u);
  EXPECT_EQ(m[kGpa], 1u);
  EXPECT_EQ(m[kGlobal], 2u);
  EXPECT_EQ(m[kRange], 0u);
  EXPECT_EQ(format_mix(m), "page:3,global:2,gpa:1");
  for (const char *bad : {"page", "pagex:1", "page:-1", "page:1x", "page:0", ""})
    EXPECT_THROW(parse_mix(bad), std::invalid_argument) << bad;
}

TEST(VmMix, GuestRemapsNeverYieldStaleTranslations) {
  DriverOptions o = small("vm-mix");
  const ScenarioReport r = run_scenario(o);
  ASSERT_EQ(r.runs.size(), 1u);
  const RunReport &run = r.runs[0];
  EXPECT_FALSE(r.failed);
  EXPECT_GE(run.translations, 2u * o.ops);
  EXPECT_EQ(run.faults, 0u);
  EXPECT_EQ(run.mismatches, 0u);
  EXPECT_EQ(run.unverified, 0u);
  EXPECT_GE(run.remaps, 2u * (o.ops / o.remap_every) - 2);
  EXPECT_EQ(run.invalidations[kRange], run.remaps);
  // Every remap reached the IOTLB as a range invalidation through the bind layer.
  EXPECT_GE(run.stats.iotlb.inv_range, run.remaps);
  EXPECT_GT(run.stats.iotlb.hits, 0u);
  ASSERT_GT(run.stats.iotlb.walks, 0u);
  // Nested 4x4 walks with warm structure caches: between the leaf alone and a full walk.
  const double refs = double(run.stats.iotlb.walk_refs) / double(run.stats.iotlb.walks);
  EXPECT_GE(refs, 1.0);
  EXPECT_LE(refs, 24.0);
  EXPECT_GT(run.translate_ns.count(), 0u);
}

// DIRECT_INVLD (issue 17): guests write their invalidations into their own queues. A guest
// that lost or misplaced a descriptor would leave the old page in the IOTLB, and the next
// translation of it would disagree with the guest's table (a mismatch).
TEST(VmMix, GuestsInvalidatingThroughTheirOwnQueuesStayExact) {
  for (bool background : {false, true}) {
    SCOPED_TRACE(background ? "background worker" : "applied in the tail write");
    DriverOptions o = small("vm-mix");
    o.machine.direct_queues = true;
    o.engine.background_invalidation = background;
    o.remap_every = 256;  // remaps are checked every 256 translations
    o.remap_pages = 5;    // unaligned ranges: several aligned blocks per remap
    const ScenarioReport r = run_scenario(o);
    ASSERT_EQ(r.runs.size(), 1u);
    const RunReport &run = r.runs[0];
    EXPECT_FALSE(r.failed);
    EXPECT_EQ(run.mismatches, 0u);
    EXPECT_EQ(run.faults, 0u);
    ASSERT_GE(run.remaps, 2u * (o.ops / o.remap_every) - 2);
    ASSERT_EQ(run.owner_queues.size(), size_t(o.machine.vms));
    uint64_t waits = 0, piotlb = 0;
    for (const auto &q : run.owner_queues) {
      EXPECT_EQ(q.stats.errors, 0u) << "vm " << q.vm;
      EXPECT_GT(q.stats.waits, 0u) << "every VM's spaces remap";
      // Each 0x6 block has its device-TLB twin.
      EXPECT_EQ(q.stats.descriptors_by_type[0x6], q.stats.descriptors_by_type[0x8]);
      EXPECT_EQ(q.stats.descriptors_by_type[0x5], q.stats.waits);
      waits += q.stats.waits;
      piotlb += q.stats.descriptors_by_type[0x6];
    }
    EXPECT_EQ(waits, run.remaps) << "one wait per remap";
    EXPECT_GE(piotlb, run.remaps);
    EXPECT_GE(run.stats.iotlb.inv_range + run.stats.iotlb.inv_page, run.remaps);
  }
}

// The guest's 0x6/0x8 descriptors for a range, read back with the specification's field
// positions (VT-d 6.5.2.4, 6.5.2.6): each 0x6 block is 2^AM pages at an ADDR aligned to it, the
// blocks tile the range exactly, and each 0x8 names the same block through S and ADDR's
// trailing ones.
TEST(VmMix, GuestDescriptorsTileTheRangeWithAlignedBlocks) {
  GuestAddressSpace as;
  as.did = 7;
  as.source_id = 0x0208;
  as.pasid = 0x1234;
  std::mt19937_64 rng(5);
  for (int i = 0; i < 2000; ++i) {
    invq::InvalidationOp op;
    op.caches = invq::kCacheIotlb | invq::kCachePaging | invq::kCacheDevTlb;
    op.scope = invq::Scope::kRange;
    op.leaf = true;
    const uint64_t first = rng() % (1u << 20);
    op.npages = 1 + rng() % (i % 2 ? 8 : 5000);
    op.addr = first << 12;
    std::vector<VmMachine::GuestDescriptor> d;
    VmMachine::guest_descriptors(as, op, &d);
    ASSERT_EQ(d.size() % 2, 0u);
    unsigned log2n = 0;
    while ((uint64_t{1} << log2n) <= op.npages) ++log2n;
    EXPECT_LE(d.size() / 2, 2u * log2n) << "fewest blocks";
    uint64_t next = first;
    for (size_t k = 0; k < d.size(); k += 2) {
      const auto &p = d[k], &t = d[k + 1];
      ASSERT_EQ(p[0] & 0xF, 0x6u);
      EXPECT_EQ((p[0] >> 4) & 3, 3u) << "page-selective-within-PASID";
      EXPECT_EQ((p[0] >> 16) & 0xFFFF, as.did);
      EXPECT_EQ((p[0] >> 32) & 0xFFFFF, as.pasid);
      EXPECT_NE(p[1] & (1u << 6), 0u) << "IH: only leaves changed";
      const unsigned am = unsigned(p[1] & 0x3F);
      const uint64_t page = p[1] >> 12;
      EXPECT_EQ(page, next) << "blocks are consecutive";
      EXPECT_EQ(page & ((uint64_t{1} << am) - 1), 0u) << "ADDR aligned to 2^AM pages";
      ASSERT_EQ(t[0] & 0xF, 0x8u);
      EXPECT_EQ((t[0] >> 16) & 0xFFFF, as.source_id);
      EXPECT_EQ((t[0] >> 32) & 0xFFFFF, as.pasid);
      // S=1: the lowest clear bit of ADDR[63:12] at k means 2^(k+1) pages; S=0 one page.
      uint64_t tpages = 1;
      if (t[1] & (1u << 11)) {
        unsigned k = 0;
        while ((t[1] >> (12 + k)) & 1) ++k;
        tpages = uint64_t{2} << k;
      }
      EXPECT_EQ(tpages, uint64_t{1} << am);
      EXPECT_EQ((t[1] >> 12) >> am, page >> am) << "the same block";
      next = page + (uint64_t{1} << am);
    }
    EXPECT_EQ(next, first + op.npages) << "covers the range and no more";
  }
}

TEST(VmMix, RequestAndBatchPathsAgreeWithTheGuest) {
  for (Path p : {Path::kRequest, Path::kBatch}) {
    DriverOptions o = small("vm-mix");
    o.path = p;
    const ScenarioReport r = run_scenario(o);
    ASSERT_EQ(r.runs.size(), 1u);
    EXPECT_EQ(r.runs[0].mismatches, 0u);
    EXPECT_EQ(r.runs[0].faults, 0u);
    EXPECT_GT(r.runs[0].remaps, 0u);
  }
}

TEST(VmMix, BaselineRunsTheSameWorkload) {
  DriverOptions o = small("vm-mix");
  o.baseline = true;
  o.pages = {256, 2048};
  const ScenarioReport r = run_scenario(o);
  ASSERT_EQ(r.runs.size(), 4u);
  for (const RunReport &run : r.runs) {
    EXPECT_EQ(run.mismatches, 0u) << run.label << " " << run.target;
    EXPECT_EQ(run.faults, 0u);
    if (run.target == "baseline") {
      EXPECT_FALSE(run.has_cache_stats);
      EXPECT_EQ(run.baseline_hits + run.baseline_misses, run.translations);
      // 4 address spaces x 2048 pages do not fit in 1024 entries: emptied when full.
      if (run.pages == 2048) {
        EXPECT_GT(run.baseline_flushes, 0u);
      }
    }
  }
  // Through a file as --json writes it, then read by a parser rather than searched as text.
  std::string text;
  {
    const std::string path = temp_path("baseline.json");
    std::FILE *f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    write_json(r, f);
    std::fclose(f);
    std::ifstream in(path);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    std::remove(path.c_str());
  }
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.find('\n'), text.size() - 1) << "one line, then a newline";
  const nlohmann::json doc = nlohmann::json::parse(text);
  EXPECT_EQ(doc.at("scenario"), "vm-mix");
  EXPECT_FALSE(doc.at("failed").get<bool>());
  ASSERT_EQ(doc.at("runs").size(), r.runs.size());
  for (size_t i = 0; i < r.runs.size(); ++i) {
    const RunReport &run = r.runs[i];
    const nlohmann::json &j = doc["runs"][i];
    EXPECT_EQ(j.at("label"), run.label);
    EXPECT_EQ(j.at("target"), run.target);
    EXPECT_EQ(j.at("pages").get<uint64_t>(), run.pages);
    EXPECT_EQ(j.at("translations").get<uint64_t>(), run.translations);
    EXPECT_EQ(j.at("mismatches").get<uint64_t>(), 0u);
    if (run.target == "nestor") {
      ASSERT_TRUE(j.contains("ratio_vs_baseline")) << j.dump();
      EXPECT_GT(j["ratio_vs_baseline"].get<double>(), 0.0);
      EXPECT_EQ(j.at("caches").size(), 6u);
      EXPECT_FALSE(j.contains("baseline"));
    } else {
      EXPECT_FALSE(j.contains("ratio_vs_baseline"));
      EXPECT_FALSE(j.contains("caches"));
      const nlohmann::json &b = j.at("baseline");
      EXPECT_EQ(b.at("hits").get<uint64_t>(), run.baseline_hits);
      EXPECT_EQ(b.at("misses").get<uint64_t>(), run.baseline_misses);
      EXPECT_EQ(b.at("full_flushes").get<uint64_t>(), run.baseline_flushes);
    }
  }
}

TEST(Storm, EveryGranularityUnderTranslationLoadKeepsResultsExact) {
  DriverOptions o = small("storm");
  o.invalidators = 2;
  o.mix = parse_mix("page:20,range:20,pasid:15,domain:15,global:10,context:10,gpa:10");
  o.inv_batch = 4;
  const ScenarioReport r = run_scenario(o);
  ASSERT_EQ(r.runs.size(), 1u);
  const RunReport &run = r.runs[0];
  EXPECT_EQ(run.invalidators, 2);
  EXPECT_EQ(run.mismatches, 0u);
  EXPECT_EQ(run.faults, 0u);
  EXPECT_GE(sum(run.invalidations) - run.remaps, 2u * o.inv_batch);
  EXPECT_GE(run.invalidate_ns.count(), 2u);
  const auto &io = run.stats.iotlb;
  EXPECT_GT(io.inv_global + io.inv_domain + io.inv_pasid + io.inv_page + io.inv_range + io.inv_gpa,
            0u);
}

// The storm's page, range and PASID operations go through the addressed VM's queue; the
// host's (domain, global, context) stay typed operations. Results stay exact throughout.
TEST(Storm, GuestOperationsThroughDirectQueuesKeepResultsExact) {
  DriverOptions o = small("storm");
  o.machine.direct_queues = true;
  o.invalidators = 2;
  o.mix = parse_mix("page:30,range:30,pasid:20,domain:10,global:5,context:5");
  o.inv_batch = 6;
  const ScenarioReport r = run_scenario(o);
  ASSERT_EQ(r.runs.size(), 1u);
  const RunReport &run = r.runs[0];
  EXPECT_EQ(run.mismatches, 0u);
  EXPECT_EQ(run.faults, 0u);
  ASSERT_EQ(run.owner_queues.size(), 2u);
  // The storm addresses the first half of the spaces: VM 0's (2 devices per VM).
  const OwnerQueueStats &vm0 = run.owner_queues[0].stats;
  EXPECT_EQ(vm0.errors, 0u);
  EXPECT_GE(vm0.descriptors_by_type[0x6], run.invalidations[kPage] + run.invalidations[kRange] +
                                              run.invalidations[kPasidScope] - run.remaps)
      << "every guest operation became at least one 0x6";
  EXPECT_GT(run.stats.iotlb.inv_pasid, 0u);
}

std::vector<GuestAddressSpace> fake_spaces(int vms, int devices, int pasids) {
  std::vector<GuestAddressSpace> all;
  for (int vm = 0; vm < vms; ++vm)
    for (int d = 0; d < devices; ++d)
      for (int p = 0; p < pasids; ++p) {
        GuestAddressSpace as;
        as.vm = vm;
        as.did = uint16_t(10 + vm);
        as.source_id = uint16_t(((vm + 1) << 8) | (d << 3));
        as.pasid = uint32_t(100 + all.size());
        all.push_back(as);
      }
  return all;
}

TEST(Storm, InvalidatorsPickTheFirstSpacesAndTheMixDecidesWhatTheyReach) {
  DriverOptions o = small("storm");
  EXPECT_EQ(storm_picked(o, 4), 2u) << "default: half";
  EXPECT_EQ(storm_picked(o, 5), 3u) << "rounded up";
  EXPECT_EQ(storm_picked(o, 1), 1u);
  o.inv_spaces = 0;
  EXPECT_EQ(storm_picked(o, 4), 4u) << "0: all";
  o.inv_spaces = 9;
  EXPECT_EQ(storm_picked(o, 4), 4u) << "beyond the count: all";
  o.inv_spaces = 3;
  EXPECT_EQ(storm_picked(o, 4), 3u);

  // 2 VMs (domains) x 2 devices x 2 PASIDs; invalidators address spaces 0 and 1, which are
  // the two PASIDs of VM 0's first device.
  const std::vector<GuestAddressSpace> all = fake_spaces(2, 2, 2);
  o.inv_spaces = 2;
  auto reached = [&](const char *mix) {
    o.mix = parse_mix(mix);
    std::vector<int> out;
    const std::vector<bool> r = storm_reach(o, all);
    for (size_t i = 0; i < r.size(); ++i)
      if (r[i]) out.push_back(int(i));
    return out;
  };
  EXPECT_EQ(reached("page:1,range:1,pasid:1"), (std::vector<int>{0, 1}));
  o.inv_spaces = 1;
  EXPECT_EQ(reached("page:1"), (std::vector<int>{0}));
  EXPECT_EQ(reached("page:1,context:1"), (std::vector<int>{0, 1})) << "every PASID of the device";
  EXPECT_EQ(reached("domain:1"), (std::vector<int>{0, 1, 2, 3})) << "every space of VM 0";
  EXPECT_EQ(reached("gpa:1"), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(reached("gpa-unused:1"), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(reached("page:9,global:1"), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
}

// Issue 16: the spaces no invalidation reaches keep their entries while the storm removes the
// targeted space's, on nestor and on the baseline alike, and every translation is counted in
// exactly one space, as a hit or a miss.
TEST(Storm, UntargetedSpacesKeepTheirHitRate) {
  DriverOptions o = small("storm");
  o.pages = {64};  // cold misses are negligible next to the translations of the run
  o.ops = 0;
  o.seconds = 0.3;  // a duration, so the invalidator runs alongside the translators
  o.remap_every = 0;
  o.mix = parse_mix("page:1");
  o.inv_spaces = 1;
  o.baseline = true;
  const ScenarioReport r = run_scenario(o);
  ASSERT_EQ(r.runs.size(), 2u);
  for (const RunReport &run : r.runs) {
    SCOPED_TRACE(run.target);
    EXPECT_EQ(run.mismatches, 0u);
    EXPECT_EQ(run.faults, 0u);
    ASSERT_EQ(run.spaces.size(), 4u);
    uint64_t hits = 0, misses = 0;
    for (size_t i = 0; i < run.spaces.size(); ++i) {
      const SpaceCounts &c = run.spaces[i];
      hits += c.hits();
      misses += c.iotlb_misses;
      // At most one lookup per translation; the baseline has no cache before its table.
      EXPECT_LE(c.lookups(), c.translations) << i;
      if (run.target == "baseline") {
        EXPECT_EQ(c.lookups(), c.translations) << i;
      }
      EXPECT_EQ(c.targeted, i == 0) << i;
      EXPECT_EQ(c.remaps, 0u) << i;
      if (i) {
        EXPECT_EQ(c.storm_ops, 0u) << "space " << i << " is not targeted";
      }
    }
    EXPECT_EQ(hits + misses, run.translations);
    EXPECT_EQ(run.spaces[0].storm_ops, run.invalidations[kPage]);
    const SpaceGroup targeted = space_group(run, true), untargeted = space_group(run, false);
    EXPECT_EQ(targeted.spaces, 1u);
    EXPECT_EQ(untargeted.spaces, 3u);
    EXPECT_GT(targeted.sum.storm_ops, 0u);
    EXPECT_GT(untargeted.sum.hit_rate(), targeted.sum.hit_rate());
    for (size_t i = 1; i < run.spaces.size(); ++i)
      EXPECT_GT(run.spaces[i].hit_rate(), run.spaces[0].hit_rate()) << i;
  }
  // The baseline is counted per space in the driver; the sums are its own counters'.
  const RunReport &b = r.runs[1];
  ASSERT_EQ(b.target, "baseline");
  uint64_t hits = 0, misses = 0;
  for (const SpaceCounts &c : b.spaces) {
    hits += c.hits();
    misses += c.iotlb_misses;
  }
  EXPECT_EQ(hits, b.baseline_hits);
  EXPECT_EQ(misses, b.baseline_misses);
}

// With one translating thread every IOTLB lookup of the run goes through the driver's handles
// (invalidators and guest remaps look nothing up), so the handles' counts are the engine's.
TEST(Storm, HandleCountsAgreeWithTheEngineOnOneThread) {
  for (Path path : {Path::kHandle, Path::kBatch}) {
    DriverOptions o = small("storm");
    o.threads = 1;
    o.path = path;
    o.mix = parse_mix("page:60,range:25,pasid:15");
    const ScenarioReport r = run_scenario(o);
    ASSERT_EQ(r.runs.size(), 1u);
    const RunReport &run = r.runs[0];
    ASSERT_EQ(run.spaces.size(), 4u);
    SpaceCounts all;
    for (const SpaceCounts &c : run.spaces) all.add(c);
    EXPECT_EQ(all.iotlb_hits, run.stats.iotlb.hits);
    EXPECT_EQ(all.iotlb_misses, run.stats.iotlb.misses);
    EXPECT_EQ(all.translations, run.translations);
    EXPECT_LE(all.lookups(), all.translations);
    EXPECT_GT(all.above_iotlb(), 0u) << "the handles' own caches answer some";
    EXPECT_GT(all.iotlb_hits, 0u);
    EXPECT_GT(all.iotlb_misses, 0u);
    EXPECT_GT(all.remaps, 0u);
    EXPECT_EQ(all.remaps, run.remaps);
  }
  DriverOptions o = small("storm");
  o.path = Path::kRequest;
  EXPECT_TRUE(run_scenario(o).runs.at(0).spaces.empty()) << "no handle to count in";
}

TEST(Scaling, OneRunPerThreadCount) {
  DriverOptions o = small("scaling");
  o.thread_counts = {1, 3};
  o.ops = 5000;
  const ScenarioReport r = run_scenario(o);
  ASSERT_EQ(r.runs.size(), 2u);
  EXPECT_EQ(r.runs[0].threads, 1);
  EXPECT_EQ(r.runs[1].threads, 3);
  EXPECT_GE(r.runs[1].translations, 3u * o.ops);
  for (const auto &run : r.runs) EXPECT_EQ(run.mismatches, 0u);
}

TEST(Walk, ColdNestedWalksReadTheArchitecturalNumberOfEntries) {
  DriverOptions o;
  o.scenario = "walk";
  o.walk_pages = 256;
  o.walk_fl_levels = {4, 5};
  o.walk_sl_levels = {3, 5};
  const ScenarioReport r = run_scenario(o);
  ASSERT_EQ(r.walks.size(), 4u);
  for (const WalkRow &w : r.walks) {
    EXPECT_EQ(w.faults, 0u);
    EXPECT_EQ(w.walks, 256u);
    // Each first-level entry read needs a full second-level walk of its table address, then
    // the final GPA is walked too: fl + fl * sl + sl.
    EXPECT_DOUBLE_EQ(w.refs_per_walk, w.fl_levels + w.fl_levels * w.sl_levels + w.sl_levels)
        << w.fl_levels << "x" << w.sl_levels;
    EXPECT_GT(w.ns_per_walk, 0);
  }
}

ScenarioReport replay_file(const std::string &path) {
  DriverOptions o;
  o.scenario = "replay";
  o.trace_path = path;
  return run_scenario(o);
}

TEST(RecordReplay, VmMixWithOwnedAddressSpacesReplaysExactly) {
  for (int threads : {1, 2}) {
    DriverOptions o = small("vm-mix");
    o.threads = threads;
    o.ops = 4000;
    o.remap_every = 300;
    o.record_path = temp_path("vm-mix-" + std::to_string(threads) + ".nstr");
    const ScenarioReport rec = run_scenario(o);
    ASSERT_EQ(rec.runs.size(), 1u);
    const ScenarioReport rep = replay_file(o.record_path);
    std::remove(o.record_path.c_str());
    ASSERT_EQ(rep.runs.size(), 1u);
    EXPECT_FALSE(rep.failed);
    EXPECT_EQ(rep.runs[0].translations, rec.runs[0].translations);
    EXPECT_EQ(rep.runs[0].mismatches, 0u) << (rep.notes.size() > 1 ? rep.notes[1] : "");
    EXPECT_EQ(rep.runs[0].invalidations[kRange], rec.runs[0].remaps);
  }
}

TEST(RecordReplay, StormAndWalkRecordingsReplay) {
  DriverOptions o = small("storm");
  o.ops = 3000;
  o.mix = parse_mix("page:1,domain:1,context:1,gpa:1");
  o.record_path = temp_path("storm.nstr");
  run_scenario(o);
  ScenarioReport rep = replay_file(o.record_path);
  EXPECT_FALSE(rep.failed);
  EXPECT_GE(rep.runs.at(0).translations, 2u * o.ops);
  EXPECT_EQ(rep.runs.at(0).mismatches, 0u);

  DriverOptions w;
  w.scenario = "walk";
  w.walk_pages = 64;
  w.walk_fl_levels = {5};
  w.walk_sl_levels = {4};
  w.record_path = temp_path("walk.nstr");
  run_scenario(w);
  rep = replay_file(w.record_path);
  std::remove(o.record_path.c_str());
  std::remove(w.record_path.c_str());
  EXPECT_EQ(rep.runs.at(0).translations, 64u);
  EXPECT_EQ(rep.runs.at(0).mismatches, 0u);
}

TEST(RecordReplay, BadTraceFileIsAClearError) {
  const std::string path = temp_path("garbage.nstr");
  {
    std::ofstream f(path);
    f << "not a trace at all";
  }
  try {
    replay_file(path);
    ADD_FAILURE() << "garbage replayed";
  } catch (const std::exception &e) {
    EXPECT_NE(std::string(e.what()).find("bad magic"), std::string::npos) << e.what();
  }
  std::remove(path.c_str());
  EXPECT_THROW(replay_file(temp_path("does-not-exist.nstr")), std::exception);
}

TEST(Report, TableCarriesHitRatesWalksInvalidationsAndPercentiles) {
  DriverOptions o = small("storm");
  o.ops = 5000;
  const ScenarioReport r = run_scenario(o);
  const std::string path = temp_path("table.txt");
  std::FILE *f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  print_table(r, f);
  std::fclose(f);
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(path.c_str());
  for (const char *want :
       {"hit rate (lookups)", "iotlb ", "table references per walk", "invalidations issued",
        "translation latency ns", "p99.9", "invalidation batch ns", "guest remaps",
        "untargeted hit rate", "batch p50 ns", "targeted spaces ", "untargeted spaces ",
        "invalidated spaces", "a space is targeted when"})
    EXPECT_NE(text.find(want), std::string::npos) << want << "\n" << text;
}

TEST(Report, PlotsRenderWithGnuplot) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "gnuplot is not installed (scripts/install-deps.sh installs gnuplot-nox)";
  DriverOptions o = small("scaling");
  o.thread_counts = {1, 2};
  o.ops = 2000;
  o.baseline = true;
  const ScenarioReport r = run_scenario(o);
  const std::string dir = temp_path("plots");
  const auto svgs = write_plots(r, dir);
  ASSERT_EQ(svgs.size(), 2u);  // throughput vs threads, latency CDF
  for (const auto &svg : svgs) {
    std::ifstream in(svg);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("<svg"), std::string::npos) << svg;
  }
  std::system(("rm -rf '" + dir + "'").c_str());
}

// Readers find fields by name and some by position in the line: the keys come in the order
// the driver has always written them (nlohmann::json alone would sort them).
TEST(Report, JsonKeepsItsFieldsInTheirOrder) {
  DriverOptions o = small("storm");
  o.ops = 2000;
  o.baseline = true;
  const ScenarioReport r = run_scenario(o);
  const auto doc = nlohmann::ordered_json::parse(json_text(r));
  auto keys = [](const nlohmann::ordered_json &j) {
    std::vector<std::string> k;
    for (const auto &item : j.items()) k.push_back(item.key());
    return k;
  };
  EXPECT_EQ(keys(doc),
            (std::vector<std::string>{"scenario", "settings", "runs", "walks", "notes", "failed"}));
  std::vector<std::string> settings;
  for (const auto &[k, v] : r.settings) settings.push_back(k);
  EXPECT_EQ(keys(doc["settings"]), settings);
  ASSERT_EQ(doc["runs"].size(), 2u);
  const std::vector<std::string> head = {
      "label",  "target",     "threads",      "invalidators",
      "pages",  "seconds",    "translations", "translations_per_second",
      "faults", "mismatches", "unverified",   "remaps"};
  const std::vector<std::string> tail = {"invalidations",
                                         "translation_latency_ns",
                                         "invalidation_batch_latency_ns",
                                         "space_groups",
                                         "walks",
                                         "walk_refs"};
  std::vector<std::string> nestor = head, baseline = head;
  nestor.push_back("ratio_vs_baseline");
  nestor.insert(nestor.end(), tail.begin(), tail.end());
  nestor.push_back("caches");
  baseline.insert(baseline.end(), tail.begin(), tail.end());
  baseline.push_back("baseline");
  EXPECT_EQ(keys(doc["runs"][0]), nestor);
  EXPECT_EQ(keys(doc["runs"][1]), baseline);
  EXPECT_EQ(keys(doc["runs"][0]["translation_latency_ns"]),
            (std::vector<std::string>{"count", "mean", "p50", "p90", "p99", "p999", "max"}));
  EXPECT_EQ(keys(doc["runs"][0]["invalidations"]),
            std::vector<std::string>(kGranularityNames, kGranularityNames + kGranularities));
  EXPECT_EQ(keys(doc["runs"][0]["space_groups"]),
            (std::vector<std::string>{"targeted", "untargeted"}));
  EXPECT_EQ(keys(doc["runs"][0]["caches"]),
            (std::vector<std::string>{"context", "pasid", "iotlb", "psc-first-level",
                                      "psc-second-level", "psc-nested-table"}));
}

// Settings and notes carry paths and log text from the user: whatever bytes they hold, the
// document parses and gives back the same strings.
TEST(Report, JsonStringsSurviveQuotesBackslashesAndControlCharacters) {
  std::string nasty = "q\"uote \\back\\slash\\ \"\\\" \n\t\r\b\f/ caf\xc3\xa9";
  for (int c = 1; c < 0x20; ++c) nasty += char(c);
  nasty += '\x7f';
  nasty += std::string("nul\0inside", 10);
  ScenarioReport r;
  r.scenario = "vm-mix " + nasty;
  r.settings = {{"key " + nasty, "value " + nasty}, {"source", "/tmp/" + nasty}};
  RunReport run;
  run.label = "label " + nasty;
  run.target = "nestor";
  r.runs.push_back(run);
  r.notes = {nasty, "", "\\", "\""};
  const std::string text = json_text(r);
  EXPECT_EQ(text.find('\n'), std::string::npos) << "control characters escaped: " << text;
  nlohmann::json doc;
  ASSERT_NO_THROW(doc = nlohmann::json::parse(text)) << text;
  EXPECT_EQ(doc.at("scenario"), r.scenario);
  EXPECT_EQ(doc.at("settings").size(), 2u);
  EXPECT_EQ(doc["settings"].at("key " + nasty), "value " + nasty);
  EXPECT_EQ(doc["settings"].at("source"), "/tmp/" + nasty);
  EXPECT_EQ(doc.at("runs").at(0).at("label"), run.label);
  EXPECT_EQ(doc.at("notes").get<std::vector<std::string>>(), r.notes);

  // Bytes that are not UTF-8 (a path on a Latin-1 file system) become U+FFFD, the rest stays.
  r.notes = {"caf\xe9 \xff\xfe end"};
  ASSERT_NO_THROW(doc = nlohmann::json::parse(json_text(r)));
  EXPECT_EQ(doc.at("notes").at(0), "caf\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd end");
}

// Numbers keep their value (no "%.6g" rounding) and a non-finite double is null, never the
// bare nan/inf no JSON parser takes.
TEST(Report, JsonNumbersAreExactAndAlwaysValid) {
  ScenarioReport r;
  r.scenario = "walk";
  WalkRow w;
  w.walks = UINT64_MAX;
  w.ns_per_walk = 123.456789012345;
  w.refs_per_walk = std::numeric_limits<double>::infinity();
  r.walks.push_back(w);
  RunReport run;
  run.target = "nestor";
  run.seconds = std::numeric_limits<double>::quiet_NaN();
  r.runs.push_back(run);
  nlohmann::json doc;
  ASSERT_NO_THROW(doc = nlohmann::json::parse(json_text(r)));
  const nlohmann::json &jw = doc.at("walks").at(0);
  EXPECT_EQ(jw.at("walks").get<uint64_t>(), UINT64_MAX);
  EXPECT_EQ(jw.at("ns_per_walk").get<double>(), w.ns_per_walk);
  EXPECT_TRUE(jw.at("refs_per_walk").is_null());
  EXPECT_TRUE(doc.at("runs").at(0).at("seconds").is_null());
  EXPECT_EQ(doc["runs"][0].at("translations_per_second").get<double>(), 0.0);
}

}  // namespace
}  // namespace nestor::driver
