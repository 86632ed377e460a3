// Fuzz target (e): the workload driver's inputs. The first byte picks the reader: a nestor
// trace (docs/TRACE-FORMAT.md) or a QEMU vtd_* trace-event log. Checks: no crash, hang or UB;
// malformed input ends in trace::Error and nothing else; an accepted trace replays (or stops
// with trace::Error on a record the engine refuses); an imported QEMU log is a trace that
// replays with no divergence on both cached and uncached engines.
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "qemu_import.h"
#include "trace.h"

using namespace nestor;

namespace {

// Zero fills and RAM are lazily backed, but a few-byte record can still ask for a lot of
// memory; keep each input's demand inside libFuzzer's RSS limit.
bool affordable(const std::vector<uint8_t> &bytes) {
  try {
    trace::Reader r(bytes);
    trace::Record rec;
    uint64_t zeroed = 0;
    while (r.next(&rec)) {
      if (rec.tag == trace::Tag::kZero) zeroed += rec.size;
      if (zeroed > (64ull << 20)) return false;
    }
  } catch (const trace::Error &) {
  }
  return true;
}

// Small caches: evictions within one short trace.
trace::ReplayOptions small_replay() {
  trace::ReplayOptions o;
  o.engine.iotlb_entries = 64;
  o.engine.iotlb_shards = 2;
  o.engine.context_cache_entries = 16;
  o.engine.pasid_cache_entries = 16;
  o.engine.psc_entries = 16;
  return o;
}

// trace::replay onto a pooled engine, reset, keyed by what a fresh replay engine would be
// built from (trace::ReplaySetup): an engine per replay cost milliseconds under ASan, a reset
// microseconds, with the same result (trace.h). A trace that declares RAM after other records
// cannot use a reused engine's regions and gets a fresh engine.
trace::ReplayResult replay(const std::vector<uint8_t> &bytes, bool caching) {
  static fuzz::EnginePool<Engine> pool(32);
  trace::ReplayOptions o = small_replay();
  o.caching = caching;
  const trace::ReplaySetup setup = trace::replay_setup(trace::Reader(bytes), o);
  trace::Reader r(bytes);
  if (!setup.ram_first) return trace::replay(r, o);
  const trace::ConfigRecord c = trace::ConfigRecord::from(setup.engine);
  std::string key = {char(c.host_address_width), char(c.pasid_bits),     char(c.sagaw),
                     char(c.first_level_5),      char(c.first_level_1g), char(c.second_level_2m),
                     char(c.second_level_1g),    char(c.first_level_ad), char(caching)};
  for (auto [base, size] : setup.ram) {
    key.append(reinterpret_cast<const char *>(&base), sizeof base);
    key.append(reinterpret_cast<const char *>(&size), sizeof size);
  }
  Engine *e = pool.find(key);
  if (e)
    e->reset();
  else
    fuzz::warm(*(e = pool.put(key, std::make_unique<Engine>(setup.engine))));
  return trace::replay(r, *e, o);
}

void replay_trace(const std::vector<uint8_t> &bytes) {
  if (!affordable(bytes)) return;
  for (bool caching : {true, false}) {
    try {
      const trace::ReplayResult res = replay(bytes, caching);
      FUZZ_CHECK(res.checked <= res.translations, "checked %llu of %llu",
                 (unsigned long long)res.checked, (unsigned long long)res.translations);
    } catch (const trace::Error &) {
      // Malformed or refused by the engine: reported, which is what is asked.
    }
  }
}

void import_log(const uint8_t *data, size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char *>(data), size));
  std::vector<uint8_t> bytes;
  trace::QemuImportStats st;
  // The importer's own engine, reused like the replay engines: building and freeing one per
  // input was half of this target's time under ASan (its caches' scope tables).
  static Engine importer(trace::qemu_import_engine_config());
  importer.reset();
  try {
    bytes = trace::import_qemu_log(in, &st, importer);
  } catch (const trace::Error &e) {
    FUZZ_CHECK(std::string(e.what()).rfind("qemu log line ", 0) == 0, "%s", e.what());
    return;
  }
  FUZZ_CHECK(st.translations == st.hits + st.updates + st.faults, "%s", st.summary().c_str());
  for (bool caching : {true, false}) {
    const trace::ReplayResult res = replay(bytes, caching);
    FUZZ_CHECK(res.translations == st.translations, "%s", st.summary().c_str());
    FUZZ_CHECK(res.divergences == 0, "%s: %s", st.summary().c_str(),
               res.messages.empty() ? "" : res.messages[0].c_str());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > (1 << 16)) return 0;
  if (data[0] & 1)
    import_log(data + 1, size - 1);
  else
    replay_trace(std::vector<uint8_t>(data + 1, data + size));
  return 0;
}
