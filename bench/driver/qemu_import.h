// Import of QEMU's intel-iommu trace events (the `vtd_*` events printed by the "log" trace
// backend) as a nestor trace. The log shows translations and invalidations but not the guest's
// tables, so the importer builds a scalable-mode machine whose second-level tables reproduce
// every logged translation, and records that machine with trace::Recorder. The understood
// events and the limits of the conversion are listed in docs/TRACE-FORMAT.md.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include "trace.h"

namespace nestor::trace {

struct QemuImportStats {
  uint64_t lines = 0, events = 0, skipped = 0;  // skipped: non-vtd lines and vtd events not used
  uint64_t translations = 0, hits = 0, updates = 0, faults = 0, invalidations = 0;
  uint64_t inconsistent = 0;  // log said X, the synthesized machine gave Y (should stay 0)
  // Invalidations the importer added to keep the machine coherent where the guest changed a
  // mapping without an invalidation in the log (a device moved to another domain, a page
  // re-mapped or faulting while still mapped). Not counted in `invalidations`.
  uint64_t synthesized = 0;
  std::string summary() const;  // one human-readable line
};

// Converts a QEMU VT-d trace-event log into a finished nestor trace (Writer::finish() bytes,
// header flag kFlagImported set). Throws trace::Error("qemu log line N: ...") for a malformed
// line of an event it understands; unknown events/lines are skipped and counted.
// Input limits (docs/LIMITS.md): longer lines or logs stop the import with the limit named.
inline constexpr size_t kMaxQemuLogLine = 4096;
inline constexpr uint64_t kMaxQemuLogBytes = uint64_t{16} << 30;
std::vector<uint8_t> import_qemu_log(std::istream &in, QemuImportStats *stats = nullptr);

// The configuration of the (uncached) engine the importer synthesizes the machine on.
EngineConfig qemu_import_engine_config();
// import_qemu_log() on `engine` instead of an engine of its own, for callers importing many
// logs (a fuzzer, with Engine::reset() in between): `engine` must be built from
// qemu_import_engine_config(), fresh or reset, with no RAM but what an earlier import on it
// added (std::invalid_argument otherwise). The trace is the one import_qemu_log(in, stats)
// returns.
std::vector<uint8_t> import_qemu_log(std::istream &in, QemuImportStats *stats, Engine &engine);

}  // namespace nestor::trace
