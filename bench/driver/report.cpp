#include "report.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace nestor::driver {

namespace {

double pct(uint64_t part, uint64_t whole) {
  return whole ? 100.0 * double(part) / double(whole) : 0;
}

const RunReport *baseline_of(const ScenarioReport &r, const RunReport &run) {
  if (run.target != "nestor") return nullptr;
  for (const auto &b : r.runs)
    if (b.target == "baseline" && b.label == run.label) return &b;
  return nullptr;
}

struct NamedCache {
  const char *name;
  const caches::CacheStats *s;
};

std::vector<NamedCache> named(const EngineStats &s) {
  return {{"context", &s.context},
          {"pasid", &s.pasid},
          {"iotlb", &s.iotlb},
          {"psc-first-level", &s.psc_first_level},
          {"psc-second-level", &s.psc_second_level},
          {"psc-nested-table", &s.psc_nested_table}};
}

void print_latency(std::FILE *out, const char *what, const LatencyHistogram &h) {
  if (!h.count()) return;
  std::fprintf(out,
               "  %-26s p50 %" PRIu64 "  p90 %" PRIu64 "  p99 %" PRIu64 "  p99.9 %" PRIu64
               "  max %" PRIu64 "  (%" PRIu64 " samples)\n",
               what, h.percentile(0.5), h.percentile(0.9), h.percentile(0.99), h.percentile(0.999),
               h.max(), h.count());
}

// "2 of 4: hit rate 97.12% of ... translations ..." for one group of a storm run.
void print_group(std::FILE *out, const RunReport &run, bool targeted) {
  const SpaceGroup g = space_group(run, targeted);
  const SpaceCounts &c = g.sum;
  std::fprintf(out, "  %-26s %zu of %zu", targeted ? "targeted spaces" : "untargeted spaces",
               g.spaces, run.spaces.size());
  if (g.spaces)
    std::fprintf(out, ": hit rate %.2f%% of %" PRIu64 " translations (%" PRIu64 " misses)",
                 100.0 * c.hit_rate(), c.translations, c.iotlb_misses);
  if (g.spaces && run.has_cache_stats)
    std::fprintf(out, ", IOTLB lookups %.2f%% hit", 100.0 * c.iotlb_hit_rate());
  if (g.spaces)
    std::fprintf(out, "; storm ops reaching them %" PRIu64 ", guest remaps %" PRIu64, c.storm_ops,
                 c.remaps);
  std::fprintf(out, "\n");
}

// Per VM with --direct-queues: what its guest driver pushed through its own queue.
void print_owner_queues(std::FILE *out, const RunReport &run) {
  if (run.owner_queues.empty()) return;
  std::fprintf(out, "  %-26s %4s %6s %12s %12s %12s %10s %7s\n", "owner-direct queues", "vm",
               "queue", "descriptors", "desc/s", "tail writes", "waits", "errors");
  for (const auto &q : run.owner_queues)
    std::fprintf(out,
                 "  %-26s %4d %6u %12" PRIu64 " %12.0f %12" PRIu64 " %10" PRIu64 " %7" PRIu64 "\n",
                 "", q.vm, q.queue, q.stats.descriptors,
                 run.seconds > 0 ? double(q.stats.descriptors) / run.seconds : 0.0,
                 q.stats.tail_writes, q.stats.waits, q.stats.errors);
}

// The storm's figures side by side, one row per run: hit rate of the spaces its invalidations
// can reach and of the others, and the latency of an invalidation batch (submit to wait).
void print_storm_table(const ScenarioReport &r, std::FILE *out) {
  std::fprintf(out, "\n%-16s %-9s %20s %20s %12s %12s %12s\n", "storm", "target",
               "targeted hit rate", "untargeted hit rate", "batch p50 ns", "p99 ns", "max ns");
  for (const auto &run : r.runs) {
    char cells[2][32];
    for (bool targeted : {true, false}) {
      const SpaceGroup g = space_group(run, targeted);
      char *cell = cells[targeted ? 0 : 1];
      if (g.spaces)
        std::snprintf(cell, 32, "%.2f%% (%zu)", 100.0 * g.sum.hit_rate(), g.spaces);
      else
        std::snprintf(cell, 32, "- (0)");
    }
    const LatencyHistogram &h = run.invalidate_ns;
    std::fprintf(out, "%-16s %-9s %20s %20s %12" PRIu64 " %12" PRIu64 " %12" PRIu64 "\n",
                 run.label.c_str(), run.target.c_str(), run.spaces.empty() ? "n/a" : cells[0],
                 run.spaces.empty() ? "n/a" : cells[1], h.percentile(0.5), h.percentile(0.99),
                 h.max());
  }
}

// ordered_json: the fields keep the order readers have always seen (nlohmann::json sorts keys).
using Json = nlohmann::ordered_json;

Json json_latency(const LatencyHistogram &h) {
  return {{"count", h.count()},
          {"mean", h.mean()},
          {"p50", h.percentile(0.5)},
          {"p90", h.percentile(0.9)},
          {"p99", h.percentile(0.99)},
          {"p999", h.percentile(0.999)},
          {"max", h.max()}};
}

Json json_group(const SpaceGroup &g) {
  const SpaceCounts &c = g.sum;
  return {{"spaces", uint64_t(g.spaces)},
          {"translations", c.translations},
          {"hits", c.hits()},
          {"misses", c.iotlb_misses},
          {"hit_rate", c.hit_rate()},
          {"above_iotlb", c.above_iotlb()},
          {"iotlb_hits", c.iotlb_hits},
          {"iotlb_hit_rate", c.iotlb_hit_rate()},
          {"storm_ops", c.storm_ops},
          {"remaps", c.remaps}};
}

Json json_cache(const caches::CacheStats &s) {
  return {{"hits", s.hits},
          {"misses", s.misses},
          {"hit_rate", s.lookups() ? double(s.hits) / double(s.lookups()) : 0.0},
          {"fills", s.fills},
          {"evictions", s.evictions},
          {"inv_global", s.inv_global},
          {"inv_domain", s.inv_domain},
          {"inv_pasid", s.inv_pasid},
          {"inv_device", s.inv_device},
          {"inv_page", s.inv_page},
          {"inv_range", s.inv_range},
          {"inv_gpa", s.inv_gpa},
          {"over_invalidations", s.over_invalidations}};
}

Json json_run(const ScenarioReport &r, const RunReport &run) {
  Json j = {{"label", run.label},
            {"target", run.target},
            {"threads", uint64_t(run.threads)},
            {"invalidators", uint64_t(run.invalidators)},
            {"pages", run.pages},
            {"seconds", run.seconds},
            {"translations", run.translations},
            {"translations_per_second", run.rate()},
            {"faults", run.faults},
            {"mismatches", run.mismatches},
            {"unverified", run.unverified},
            {"remaps", run.remaps}};
  if (const RunReport *b = baseline_of(r, run); b && b->rate() > 0)
    j["ratio_vs_baseline"] = run.rate() / b->rate();
  Json inv = Json::object();
  for (unsigned g = 0; g < kGranularities; ++g) inv[kGranularityNames[g]] = run.invalidations[g];
  j["invalidations"] = std::move(inv);
  j["translation_latency_ns"] = json_latency(run.translate_ns);
  j["invalidation_batch_latency_ns"] = json_latency(run.invalidate_ns);
  if (!run.owner_queues.empty()) {
    Json queues = Json::array();
    for (const auto &q : run.owner_queues)
      queues.push_back({{"vm", q.vm},
                        {"owner", q.owner},
                        {"queue", q.queue},
                        {"tail_writes", q.stats.tail_writes},
                        {"descriptors", q.stats.descriptors},
                        {"descriptors_per_second",
                         run.seconds > 0 ? double(q.stats.descriptors) / run.seconds : 0.0},
                        {"ops_submitted", q.stats.ops_submitted},
                        {"waits", q.stats.waits},
                        {"errors", q.stats.errors}});
    j["owner_queues"] = std::move(queues);
  }
  if (r.scenario == "storm" && !run.spaces.empty())
    j["space_groups"] = {{"targeted", json_group(space_group(run, true))},
                         {"untargeted", json_group(space_group(run, false))}};
  j["walks"] = run.stats.iotlb.walks;
  j["walk_refs"] = run.stats.iotlb.walk_refs;
  if (run.has_cache_stats) {
    Json caches = Json::object();
    for (const auto &c : named(run.stats)) caches[c.name] = json_cache(*c.s);
    j["caches"] = std::move(caches);
  } else {
    j["baseline"] = {{"hits", run.baseline_hits},
                     {"misses", run.baseline_misses},
                     {"full_flushes", run.baseline_flushes}};
  }
  return j;
}

}  // namespace

void print_table(const ScenarioReport &r, std::FILE *out) {
  std::fprintf(out, "nestor-bench  scenario=%s\n", r.scenario.c_str());
  for (const auto &[k, v] : r.settings) std::fprintf(out, "  %-18s %s\n", k.c_str(), v.c_str());
  if (!r.runs.empty()) {
    std::fprintf(out, "\n%-16s %-9s %7s %14s %10s %10s %8s %12s\n", "run", "target", "threads",
                 "translations", "M/s", "faults", "wrong", "vs baseline");
    for (const auto &run : r.runs) {
      char ratio[32] = "";
      if (const RunReport *b = baseline_of(r, run); b && b->rate() > 0)
        std::snprintf(ratio, sizeof ratio, "%.2fx", run.rate() / b->rate());
      std::fprintf(out, "%-16s %-9s %7d %14" PRIu64 " %10.2f %10" PRIu64 " %8" PRIu64 " %12s\n",
                   run.label.c_str(), run.target.c_str(), run.threads, run.translations,
                   run.rate() / 1e6, run.faults, run.mismatches, ratio);
    }
    if (r.scenario == "storm") print_storm_table(r, out);
    for (const auto &run : r.runs) {
      std::fprintf(out, "\n[%s, %s]\n", run.label.c_str(), run.target.c_str());
      print_latency(out, "translation latency ns", run.translate_ns);
      print_latency(out, "invalidation batch ns", run.invalidate_ns);
      if (run.has_cache_stats) {
        std::fprintf(out, "  %-26s", "hit rate (lookups)");
        for (const auto &c : named(run.stats))
          if (c.s->lookups())
            std::fprintf(out, " %s %.1f%% (%" PRIu64 ")", c.name, pct(c.s->hits, c.s->lookups()),
                         c.s->lookups());
        std::fprintf(out, "\n");
        if (run.translations && run.stats.iotlb.lookups() <= run.translations)
          std::fprintf(out, "  %-26s %.1f%% of translations\n", "served above the IOTLB",
                       pct(run.translations - run.stats.iotlb.lookups(), run.translations));
      } else {
        std::fprintf(out,
                     "  %-26s %.1f%% (%" PRIu64 " lookups), emptied when full %" PRIu64 " times\n",
                     "baseline IOTLB hit rate",
                     pct(run.baseline_hits, run.baseline_hits + run.baseline_misses),
                     run.baseline_hits + run.baseline_misses, run.baseline_flushes);
      }
      const auto &io = run.stats.iotlb;
      if (io.walks)
        std::fprintf(out, "  %-26s %" PRIu64 " walks, %.1f table references per walk\n",
                     "page walks (misses)", io.walks, double(io.walk_refs) / double(io.walks));
      uint64_t issued = 0;
      for (uint64_t n : run.invalidations) issued += n;
      if (issued) {
        std::fprintf(out, "  %-26s", "invalidations issued");
        for (unsigned g = 0; g < kGranularities; ++g)
          if (run.invalidations[g])
            std::fprintf(out, " %s %" PRIu64, kGranularityNames[g], run.invalidations[g]);
        std::fprintf(out, "\n");
      }
      if (run.has_cache_stats && issued) {
        std::fprintf(out,
                     "  %-26s global %" PRIu64 " domain %" PRIu64 " pasid %" PRIu64 " page %" PRIu64
                     " range %" PRIu64 " gpa %" PRIu64 " promoted %" PRIu64 " over %" PRIu64 "\n",
                     "IOTLB applied", io.inv_global, io.inv_domain, io.inv_pasid, io.inv_page,
                     io.inv_range, io.inv_gpa, io.inv_promoted, io.over_invalidations);
      }
      if (r.scenario == "storm" && !run.spaces.empty()) {
        print_group(out, run, true);
        print_group(out, run, false);
      }
      if (run.remaps) std::fprintf(out, "  %-26s %" PRIu64 "\n", "guest remaps", run.remaps);
      print_owner_queues(out, run);
      if (run.unverified)
        std::fprintf(out, "  %-26s %" PRIu64 " (address spaces shared between threads)\n",
                     "unverified translations", run.unverified);
    }
  }
  if (!r.walks.empty()) {
    std::fprintf(out, "\n%-10s %-10s %12s %12s %14s %8s\n", "first", "second", "walks", "ns/walk",
                 "refs/walk", "faults");
    for (const auto &w : r.walks)
      std::fprintf(out, "%-10s %-10s %12" PRIu64 " %12.1f %14.1f %8" PRIu64 "\n",
                   (std::to_string(w.fl_levels) + "-level").c_str(),
                   (std::to_string(w.sl_levels) + "-level").c_str(), w.walks, w.ns_per_walk,
                   w.refs_per_walk, w.faults);
  }
  if (!r.notes.empty()) std::fprintf(out, "\n");
  for (const auto &n : r.notes) std::fprintf(out, "%s\n", n.c_str());
  if (r.failed) std::fprintf(out, "\nFAILED: wrong translations or replay divergences (above)\n");
}

std::string json_text(const ScenarioReport &r) {
  // A repeated setting name keeps its first place and its last value: one key per object.
  Json settings = Json::object();
  for (const auto &[k, v] : r.settings) settings[k] = v;
  Json j = {{"scenario", r.scenario}, {"settings", std::move(settings)}};
  // Built apart and moved in: ordered_json keeps its members in a vector, so a reference into
  // one would not survive the next key added.
  Json runs = Json::array();
  for (const auto &run : r.runs) runs.push_back(json_run(r, run));
  j["runs"] = std::move(runs);
  Json walks = Json::array();
  for (const auto &w : r.walks)
    walks.push_back({{"fl_levels", uint64_t(w.fl_levels)},
                     {"sl_levels", uint64_t(w.sl_levels)},
                     {"walks", w.walks},
                     {"ns_per_walk", w.ns_per_walk},
                     {"refs_per_walk", w.refs_per_walk},
                     {"faults", w.faults}});
  j["walks"] = std::move(walks);
  j["notes"] = r.notes;
  j["failed"] = r.failed;
  // Paths and log excerpts in settings and notes are bytes from the user, not always UTF-8:
  // an invalid sequence becomes U+FFFD rather than an exception or a document no parser takes.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

void write_json(const ScenarioReport &r, std::FILE *out) {
  const std::string text = json_text(r);
  std::fputs(text.c_str(), out);
  std::fputc('\n', out);
}

namespace {

void write_file(const std::string &path, const std::string &text) {
  std::ofstream f(path);
  f << text;
  if (!f) throw std::runtime_error("plot: cannot write " + path);
}

// Runs gnuplot on `script` inside `dir`. Scripts name their data and output files by fixed
// relative names and the directory reaches gnuplot only as its working directory, never as
// text in a script or a shell command line: a directory name with quotes, newlines or
// gnuplot commands ('!cmd', system()) can inject nothing.
void render(const std::string &dir, const std::string &script) {
  const pid_t pid = fork();
  if (pid < 0)
    throw std::runtime_error("plot: cannot start gnuplot: " + std::string(std::strerror(errno)));
  if (pid == 0) {
    if (chdir(dir.c_str()) != 0) _exit(126);
    execlp("gnuplot", "gnuplot", script.c_str(), static_cast<char *>(nullptr));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR)
      throw std::runtime_error("plot: lost gnuplot: " + std::string(std::strerror(errno)));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error(WIFEXITED(status) && WEXITSTATUS(status) == 127
                                 ? "plot: gnuplot not found (apt-get install gnuplot-nox)"
                                 : "plot: gnuplot failed on " + script + " in the plot directory");
}

// Titles come from the program (scenario and run labels), but keep them inert anyway.
std::string inert(const std::string &text) {
  std::string out;
  for (char c : text)
    if (std::isalnum(static_cast<unsigned char>(c)) || std::strchr(" .,:=+-_/()", c)) out += c;
  return out;
}

std::string header(const std::string &svg, const std::string &title) {
  return "set terminal svg size 800,500 dynamic enhanced font 'sans,11'\nset output '" + svg +
         "'\nset title '" + inert(title) + "'\nset grid\nset key left top\n";
}

}  // namespace

std::vector<std::string> write_plots(const ScenarioReport &r, const std::string &dir) {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    throw std::runtime_error("plot: cannot create " + dir + ": " + std::strerror(errno));
  std::vector<std::string> svgs;
  auto finish = [&](const std::string &name, const std::string &script) {
    write_file(dir + "/" + name + ".gp", script);
    render(dir, name + ".gp");
    svgs.push_back(dir + "/" + name + ".svg");
  };

  // Throughput vs threads (scaling).
  if (r.scenario == "scaling" && !r.runs.empty()) {
    std::map<int, std::pair<double, double>> by_threads;
    bool any_baseline = false;
    for (const auto &run : r.runs) {
      auto &slot = by_threads[run.threads];
      (run.target == "baseline" ? slot.second : slot.first) = run.rate() / 1e6;
      any_baseline |= run.target == "baseline";
    }
    std::string data = "# threads nestor_Mps baseline_Mps\n";
    for (const auto &[t, v] : by_threads)
      data +=
          std::to_string(t) + " " + std::to_string(v.first) + " " + std::to_string(v.second) + "\n";
    write_file(dir + "/throughput-vs-threads.dat", data);
    std::string gp = header("throughput-vs-threads.svg", "throughput vs threads") +
                     "set xlabel 'translating threads'\nset ylabel 'M translations/s'\n"
                     "set xtics 1\nset yrange [0:*]\nplot "
                     "'throughput-vs-threads.dat' using 1:2 with linespoints title 'nestor'";
    if (any_baseline) gp += ", '' using 1:3 with linespoints title 'QEMU-style baseline'";
    finish("throughput-vs-threads", gp + "\n");
  }

  // Latency CDF of every run that sampled latencies.
  {
    std::string plot;
    int index = 0;
    for (const auto &run : r.runs) {
      if (!run.translate_ns.count()) continue;
      const std::string dat = "latency-cdf-" + std::to_string(index++) + ".dat";
      std::string data = "# ns cumulative_fraction\n";
      for (const auto &[ns, f] : run.translate_ns.cdf())
        data += std::to_string(std::max<uint64_t>(ns, 1)) + " " + std::to_string(f) + "\n";
      write_file(dir + "/" + dat, data);
      plot += std::string(plot.empty() ? "plot " : ", ") + "'" + dat +
              "' using 1:2 with steps title '" + inert(run.label + " " + run.target) + "'";
    }
    if (!plot.empty()) {
      const std::string title = r.scenario == "storm"
                                    ? "translation latency CDF under invalidation storm"
                                    : "translation latency CDF";
      finish("latency-cdf", header("latency-cdf.svg", title) +
                                "set logscale x\nset xlabel 'latency (ns, sampled)'\n"
                                "set ylabel 'fraction of translations'\nset yrange [0:1]\n"
                                "set key right bottom\n" +
                                plot + "\n");
    }
  }

  // Hit rate vs working set (vm-mix / storm runs at several --pages).
  if (r.scenario == "vm-mix" || r.scenario == "storm") {
    std::string data = "# pages iotlb_hit_pct above_iotlb_pct no_walk_pct baseline_hit_pct\n";
    std::map<uint64_t, std::array<double, 4>> rows;
    for (const auto &run : r.runs) {
      auto &row = rows[run.pages];
      if (run.target == "baseline") {
        row[3] = pct(run.baseline_hits, run.baseline_hits + run.baseline_misses);
      } else {
        const auto &io = run.stats.iotlb;
        row[0] = pct(io.hits, io.lookups());
        row[1] = io.lookups() <= run.translations
                     ? pct(run.translations - io.lookups(), run.translations)
                     : 0;
        row[2] =
            io.walks <= run.translations ? pct(run.translations - io.walks, run.translations) : 0;
      }
    }
    for (const auto &[p, v] : rows)
      data += std::to_string(p) + " " + std::to_string(v[0]) + " " + std::to_string(v[1]) + " " +
              std::to_string(v[2]) + " " + std::to_string(v[3]) + "\n";
    const std::string dat = "hit-rate-vs-working-set.dat";
    write_file(dir + "/" + dat, data);
    std::string gp = header("hit-rate-vs-working-set.svg", "hit rate vs working set") +
                     "set logscale x 2\nset xlabel '4K pages per address space'\n"
                     "set ylabel '%'\nset yrange [0:105]\nset key below\nplot '" +
                     dat +
                     "' using 1:4 with linespoints title 'translations without a walk', "
                     "'' using 1:2 with linespoints title 'IOTLB hit rate', "
                     "'' using 1:3 with linespoints title 'served above the IOTLB (handle)'";
    if (baseline_of(r, r.runs.front()))
      gp += ", '' using 1:5 with linespoints title 'QEMU-style baseline hit rate'";
    finish("hit-rate-vs-working-set", gp + "\n");
  }

  // Cold walk cost per table geometry.
  if (!r.walks.empty()) {
    std::string data = "# geometry ns_per_walk refs_per_walk\n";
    for (const auto &w : r.walks)
      data += "\"FL" + std::to_string(w.fl_levels) + "xSL" + std::to_string(w.sl_levels) + "\" " +
              std::to_string(w.ns_per_walk) + " " + std::to_string(w.refs_per_walk) + "\n";
    const std::string dat = "walk-cost.dat";
    write_file(dir + "/" + dat, data);
    finish("walk-cost", header("walk-cost.svg", "cold nested walk cost") +
                            "set style data histograms\nset style fill solid 0.6\n"
                            "set ylabel 'ns per walk'\nset y2label 'table references'\n"
                            "set y2tics\nset yrange [0:*]\nset y2range [0:*]\nplot '" +
                            dat +
                            "' using 2:xtic(1) title 'ns/walk', '' using 3 axes x1y2 title "
                            "'references/walk'\n");
  }
  return svgs;
}

void ProgressBar::update(double fraction, uint64_t translations) {
  const auto now = std::chrono::steady_clock::now();
  double rate = 0;
  if (drawn_) {
    const double dt = std::chrono::duration<double>(now - last_).count();
    if (dt > 0 && translations >= last_count_) rate = double(translations - last_count_) / dt;
  }
  last_ = now;
  last_count_ = translations;
  constexpr int kWidth = 30;
  const int filled = int(fraction * kWidth);
  char bar[kWidth + 1];
  for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '=' : i == filled ? '>' : ' ';
  bar[kWidth] = 0;
  std::fprintf(out_, "\r[%s] %3d%%  %8.2f M translations/s", bar, int(fraction * 100), rate / 1e6);
  std::fflush(out_);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (!drawn_) return;
  std::fprintf(out_, "\r%*s\r", 60, "");
  std::fflush(out_);
  drawn_ = false;
}

}  // namespace nestor::driver
