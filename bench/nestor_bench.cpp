// nestor-bench: the workload driver. Every option can also come from a TOML/INI file
// (--config FILE; --print-config shows the current settings in that format).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>

#include "qemu_trace.h"
#include "report.h"
#include "workload.h"

using namespace nestor;
using namespace nestor::driver;

namespace {

// Every bad input exits with this one documented status (bench/README.md), whichever check
// caught it: CLI11's own codes (100+) said nothing to a script.
constexpr int kExitBadInput = 2;

// Config files are small: a longer file or line is a mistake (or /dev/zero), said before
// CLI11 would read it without limit (docs/LIMITS.md).
constexpr std::streamsize kMaxConfigBytes = 1 << 20;
constexpr size_t kMaxConfigLine = 4096;

// Empty if every --config file is within the limits, else the reason.
std::string check_config_files(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], path;
    if (arg == "--config" && i + 1 < argc)
      path = argv[i + 1];
    else if (arg.rfind("--config=", 0) == 0)
      path = arg.substr(9);
    else
      continue;
    std::ifstream in(path, std::ios::binary);
    if (!in) continue;  // CLI11 reports a missing file itself
    std::vector<char> buf(size_t(kMaxConfigBytes) + 1);
    in.read(buf.data(), std::streamsize(buf.size()));
    const std::streamsize n = in.gcount();
    if (n > kMaxConfigBytes)
      return "config " + path + ": larger than the " + std::to_string(kMaxConfigBytes >> 10) +
             " KiB config file limit";
    size_t line = 1, len = 0;
    for (std::streamsize k = 0; k < n; ++k, ++len) {
      if (buf[size_t(k)] == '\n') {
        ++line;
        len = 0;
      } else if (len >= kMaxConfigLine) {
        return "config " + path + ": line " + std::to_string(line) + " is longer than the " +
               std::to_string(kMaxConfigLine) + "-byte line limit";
      }
    }
  }
  return "";
}

// A finite number, written as one: NaN and infinities compare false against every range,
// and "true" from a config file is not a duration.
const CLI::Validator kFinite(
    [](std::string &s) -> std::string {
      char *end = nullptr;
      const double v = std::strtod(s.c_str(), &end);
      if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v))
        return "'" + s + "' is not a finite number";
      return "";
    },
    "FINITE");

const CLI::Validator kEventKindList(
    [](std::string &s) -> std::string {
      try {
        trace::parse_event_kinds(s);
      } catch (const std::invalid_argument &e) {
        return e.what();
      }
      return "";
    },
    "KINDS");

// --trace-events: the sink and where it writes, for the whole process (every engine a
// scenario creates is hooked through DriverOptions::observe_engine).
struct EventPrinter {
  std::unique_ptr<std::FILE, int (*)(std::FILE *)> file{nullptr, &std::fclose};
  std::unique_ptr<trace::QemuTextSink> sink;
};

// Null when --trace-events is not given; throws std::runtime_error if the file cannot be made.
std::unique_ptr<EventPrinter> make_event_printer(const std::string &kinds, const std::string &path,
                                                 uint64_t limit) {
  if (kinds.empty()) return nullptr;
  auto p = std::make_unique<EventPrinter>();
  std::FILE *out = stderr;
  if (!path.empty()) {
    p->file.reset(std::fopen(path.c_str(), "w"));
    if (!p->file)
      throw std::runtime_error("--trace-events-file " + path + ": " + std::strerror(errno));
    out = p->file.get();
  }
  trace::QemuSinkOptions so;
  so.kinds = trace::parse_event_kinds(kinds);
  so.invalidation_details = true;  // what each invalidation removed, next to QEMU's line
  so.limit_per_second = limit;
  p->sink = std::make_unique<trace::QemuTextSink>(out, so);
  return p;
}

}  // namespace

int main(int argc, char **argv) {
  CLI::App app{
      "nestor-bench: workload driver for the nestor IOMMU engine.\n"
      "Scenarios: vm-mix (default), storm, scaling, walk, replay, import-qemu."};
  app.set_config("--config", "", "read options from a TOML/INI file (keys are long option names)");
  app.allow_config_extras(false);
  DriverOptions o;
  std::string path = "handle", mix = format_mix(o.mix), plot_dir;
  bool json = false, no_progress = false, print_config = false, no_verify = false;
  bool drain = false, no_coalesce = false;

  app.add_option("--scenario", o.scenario, "what to run")
      ->check(CLI::IsMember({"vm-mix", "storm", "scaling", "walk", "replay", "import-qemu"}))
      ->capture_default_str();
  auto *machine = "Machine";
  app.add_option("--vms", o.machine.vms, "virtual machines (owner + nesting domain each)")
      ->check(CLI::Range(1, 64))
      ->group(machine)
      ->capture_default_str();
  app.add_option("--devices", o.machine.devices_per_vm, "devices per VM")
      ->check(CLI::Range(1, 32))
      ->group(machine)
      ->capture_default_str();
  app.add_option("--pasids", o.machine.pasids_per_device, "bound PASIDs per device")
      ->check(CLI::Range(1, 64))
      ->group(machine)
      ->capture_default_str();
  app.add_option("--pages", o.pages,
                 "4K pages each address space maps; several values: one run each (hit rate vs "
                 "working set)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 22))
      ->group(machine)
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--fl-levels", o.machine.fl_levels, "guest first-level levels")
      ->check(CLI::IsMember({4, 5}))
      ->group(machine)
      ->capture_default_str();
  app.add_option("--sl-levels", o.machine.sl_levels, "host second-level levels")
      ->check(CLI::IsMember({3, 4, 5}))
      ->group(machine)
      ->capture_default_str();
  app.add_flag("--direct-queues", o.machine.direct_queues,
               "guests invalidate through owner-direct queues in their own RAM (DIRECT_INVLD): "
               "remaps, and the storm's page/range/pasid operations; the report gives each "
               "VM's queue throughput")
      ->group(machine);

  auto *load = "Load";
  app.add_option("--threads", o.threads, "translating threads (scaling: the largest count)")
      ->check(CLI::Range(1, 256))
      ->group(load)
      ->capture_default_str();
  app.add_option("--thread-counts", o.thread_counts,
                 "scaling: thread counts to run (default 1..threads)")
      ->check(CLI::Range(1, 256))
      ->group(load)
      ->delimiter(',');
  app.add_option("--seconds", o.seconds, "length of each run")
      ->check(kFinite & CLI::Range(0.01, 86400.0))
      ->group(load)
      ->capture_default_str();
  app.add_option("--ops", o.ops,
                 "translations per thread instead of a duration (walk: per geometry)")
      ->check(CLI::Range(uint64_t{0}, kMaxOps))
      ->group(load);
  app.add_option("--path", path, "translation path: handle (address-space handles), request, batch")
      ->check(CLI::IsMember({"handle", "request", "batch"}))
      ->group(load)
      ->capture_default_str();
  app.add_option("--ring-fraction", o.ring_fraction, "share of accesses sweeping a DMA ring")
      ->check(kFinite & CLI::Range(0.0, 1.0))
      ->group(load)
      ->capture_default_str();
  app.add_option("--zipf", o.zipf_s, "zipf exponent of the other (buffer) accesses")
      ->check(kFinite & CLI::Range(0.0, 4.0))
      ->group(load)
      ->capture_default_str();
  app.add_option("--write-fraction", o.write_fraction, "share of DMA writes")
      ->check(kFinite & CLI::Range(0.0, 1.0))
      ->group(load)
      ->capture_default_str();
  app.add_option("--remap-every", o.remap_every,
                 "guest remap (unmap, invalidate, map) per thread every N translations; 0: off")
      ->group(load)
      ->capture_default_str();
  app.add_option("--remap-pages", o.remap_pages, "pages per remap")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20))
      ->group(load)
      ->capture_default_str();
  app.add_flag("--no-verify", no_verify, "do not check translations against the guest mapping")
      ->group(load);
  app.add_option("--latency-sample", o.latency_sample,
                 "time one translation in N (a power of two; 0: no latency sampling)")
      ->group(load)
      ->capture_default_str();
  app.add_option("--seed", o.seed, "random seed")->group(load)->capture_default_str();

  auto *storm = "Storm";
  app.add_option("--invalidators", o.invalidators, "invalidating threads")
      ->check(CLI::Range(0, 64))
      ->group(storm)
      ->capture_default_str();
  app.add_option("--mix", mix,
                 "granularity weights: page,range,pasid,domain,global,context,gpa,gpa-unused")
      ->group(storm)
      ->capture_default_str();
  app.add_option("--inv-rate", o.inv_rate, "operations/s per invalidating thread; 0: unthrottled")
      ->check(kFinite & CLI::Range(0.0, 1e9))
      ->group(storm)
      ->capture_default_str();
  app.add_option("--inv-batch", o.inv_batch, "operations per wait")
      ->check(CLI::Range(1u, 100000u))
      ->group(storm)
      ->capture_default_str();
  // No default string: unset means "half", which no number says for every machine size.
  uint32_t inv_spaces = 0;
  CLI::Option *inv_spaces_opt =
      app.add_option("--inv-spaces", inv_spaces,
                     "invalidators address only the first N address spaces (default: half of "
                     "them, rounded up; 0 or >= their count: all); the report splits hit rates "
                     "between the spaces the storm can reach and the others")
          ->check(CLI::Range(uint32_t{0}, std::numeric_limits<uint32_t>::max()))
          ->group(storm);

  auto *walk = "Walk";
  app.add_option("--walk-fl-levels", o.walk_fl_levels, "first-level depths")
      ->check(CLI::IsMember({4, 5}))
      ->group(walk)
      ->delimiter(',');
  app.add_option("--walk-sl-levels", o.walk_sl_levels, "second-level depths")
      ->check(CLI::IsMember({3, 4, 5}))
      ->group(walk)
      ->delimiter(',');
  app.add_option("--walk-pages", o.walk_pages, "pages mapped and walked per geometry")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 22))
      ->group(walk)
      ->capture_default_str();

  auto *io = "Trace and output";
  app.add_flag("--baseline", o.baseline,
               "also run the QEMU-style baseline (bench/baselines) and report nestor/baseline")
      ->group(io);
  app.add_option("--record", o.record_path, "write a trace of the (first) run")->group(io);
  app.add_option("--trace", o.trace_path, "replay: trace to run; import-qemu: output trace")
      ->group(io);
  app.add_option("--qemu-log", o.qemu_log, "replay/import-qemu: QEMU 'vtd_*' trace-event log")
      ->check(CLI::ExistingFile)
      ->group(io);
  app.add_option("--repeat", o.replay_repeat, "replay the trace this many times")
      ->check(CLI::Range(1u, 1000000u))
      ->group(io);
  app.add_flag("--json", json, "print the report as JSON instead of a table")->group(io);
  app.add_option("--plot", plot_dir, "write SVG charts (gnuplot) into this directory")->group(io);
  app.add_flag("--no-progress", no_progress, "no progress bar even on a terminal")->group(io);
  app.add_flag("--print-config", print_config, "print the settings as a config file and exit")
      ->group(io);
  std::string trace_events, trace_events_file;
  uint64_t trace_events_limit = 10000;
  CLI::Option *trace_events_opt =
      app.add_option("--trace-events", trace_events,
                     "print engine events while the scenario runs (stderr): a comma list of "
                     "translate,fault,fill,invalidation,queue,bind,all; QEMU vtd_* lines where "
                     "QEMU has the event, nestor_<kind> key=value lines otherwise")
          ->check(kEventKindList)
          ->group(io);
  app.add_option("--trace-events-file", trace_events_file,
                 "write --trace-events to this file instead of stderr")
      ->needs(trace_events_opt)
      ->group(io);
  app.add_option("--trace-events-limit", trace_events_limit,
                 "--trace-events: events printed per second at most, the rest only counted "
                 "(a last line gives the count per kind); 0: no limit")
      ->group(io)
      ->capture_default_str();

  auto *eng = "Engine";
  app.add_option("--iotlb-entries", o.engine.iotlb_entries, "IOTLB capacity")
      ->check(CLI::Range(64u, 1u << 24))
      ->group(eng)
      ->capture_default_str();
  app.add_flag("--drain", drain, "drain in-flight translations on invalidation waits")->group(eng);
  app.add_flag("--no-coalesce", no_coalesce, "do not coalesce queued invalidations")->group(eng);
  app.add_flag("--background", o.engine.background_invalidation,
               "a worker thread applies queued invalidations (waits block until it has)")
      ->group(eng);
  std::string gpa_invalidation = "architectural";
  app.add_option("--gpa-invalidation", gpa_invalidation,
                 "what a type 0x2 (GPA) invalidation removes: architectural (every first-level "
                 "and nested entry of the domain) or dependencies (docs/CACHES.md)")
      ->check(CLI::IsMember({"architectural", "dependencies"}))
      ->group(eng)
      ->capture_default_str();

  if (const std::string why = check_config_files(argc, argv); !why.empty()) {
    std::fprintf(stderr, "nestor-bench: %s\n", why.c_str());
    return kExitBadInput;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    const int rc = app.exit(e);  // prints help, or the error
    return rc == 0 ? 0 : kExitBadInput;
  }
  if (print_config) {
    // Every setting with its value, ready for --config; options left empty (no default)
    // and this flag itself are omitted so the file reads back unchanged.
    std::istringstream all(app.config_to_str(true, false));
    for (std::string line; std::getline(all, line);)
      if (line.find("=\"\"") == std::string::npos && line.rfind("print-config", 0) != 0)
        std::printf("%s\n", line.c_str());
    return 0;
  }
  try {
    o.mix = parse_mix(mix);
    if (inv_spaces_opt->count()) o.inv_spaces = inv_spaces;
    o.path = path == "request" ? Path::kRequest : path == "batch" ? Path::kBatch : Path::kHandle;
    o.verify = !no_verify;
    o.engine.drain = drain;
    o.engine.coalesce = !no_coalesce;
    o.engine.gpa_invalidation = gpa_invalidation == "dependencies"
                                    ? EngineConfig::GpaInvalidation::kDependencies
                                    : EngineConfig::GpaInvalidation::kArchitectural;
    const std::unique_ptr<EventPrinter> events =
        make_event_printer(trace_events, trace_events_file, trace_events_limit);
    if (events) {
      trace::QemuTextSink &sink = *events->sink;
      o.observe_engine = [&sink](Engine &e) -> std::shared_ptr<void> {
        return std::make_shared<trace::QemuTextSink::Attachment>(sink.attach(e));
      };
    }
    std::unique_ptr<ProgressBar> bar;
    if (!no_progress && isatty(STDERR_FILENO)) {
      bar = std::make_unique<ProgressBar>(stderr);
      o.progress = [&bar](double f, uint64_t n) { bar->update(f, n); };
    }
    const ScenarioReport report = run_scenario(o);
    if (bar) bar->finish();
    if (events) events->sink->write_dropped_summary();
    if (json)
      write_json(report, stdout);
    else
      print_table(report, stdout);
    if (!plot_dir.empty())
      for (const auto &svg : write_plots(report, plot_dir))
        std::fprintf(stderr, "nestor-bench: wrote %s\n", svg.c_str());
    return report.failed ? 1 : 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "nestor-bench: %s\n", e.what());
    return kExitBadInput;
  }
}
