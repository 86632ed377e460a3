// Trace record and replay. A trace is everything needed to rerun a workload on a fresh engine:
// the RAM layout, every byte written to tables and VT-d structures (setup included), the
// root-table pointer, the translations with the results they gave, and the invalidations, in
// the order they happened. The format is documented in docs/TRACE-FORMAT.md.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "nestor/engine.h"
#include "nestor/invq/op.h"

namespace nestor::trace {

inline constexpr char kMagic[8] = {'N', 'S', 'T', 'R', 'A', 'C', 'E', '\0'};
inline constexpr uint16_t kVersion = 1;
// What a trace may ask of a replay (docs/LIMITS.md): RAM is lazily backed, so the bounds are
// on declarations and on what records make replay touch, each failing with the byte offset.
inline constexpr uint64_t kMaxTraceFileBytes = uint64_t{1} << 30;
inline constexpr uint64_t kMaxTraceRamBytes = uint64_t{1} << 40;  // all RAM records together
inline constexpr size_t kMaxTraceRamRegions = 64;                 // the engine's region limit

// Header flags.
enum HeaderFlags : uint16_t {
  // Recorded from threads that shared an address space with a table writer: a translation's
  // recorded result may predate an edit recorded before it, so replay reports divergences
  // instead of failing on them.
  kFlagConcurrent = 1,
  kFlagImported = 2,  // converted from another tool's log (e.g. QEMU trace events)
};

enum class Tag : uint8_t {
  kConfig = 0x01,
  kRam = 0x02,
  kRoot = 0x03,
  kWrite = 0x04,
  kWrite64 = 0x05,
  kThread = 0x06,
  kZero = 0x07,
  kTranslate = 0x10,
  kInvalidate = 0x20,
  kWait = 0x21,
  kEnd = 0x7F,
};

// What a translation record expects.
enum class Expect : uint8_t { kUnchecked = 0, kOk = 1, kFault = 2 };

struct TranslateRecord {
  Request req;
  Expect expect = Expect::kUnchecked;
  uint64_t out = 0;          // kOk: translated address
  uint8_t perms = 0;         // kOk: AccessBits granted
  uint8_t page_shift = 12;   // kOk
  uint8_t fault_reason = 0;  // kFault: FaultReason
};

// Engine settings that change translation results (cache geometry does not).
struct ConfigRecord {
  uint8_t host_address_width = 48;
  uint8_t pasid_bits = 20;
  uint8_t sagaw = 0b1110;
  bool first_level_5 = true, first_level_1g = true, second_level_2m = true, second_level_1g = true,
       first_level_ad = true;
  static ConfigRecord from(const EngineConfig &c);
  void apply(EngineConfig *c) const;
};

struct Record {
  Tag tag = Tag::kEnd;
  ConfigRecord config;  // kConfig
  // kRam (base, size), kRoot (addr), kWrite/kWrite64 (addr), kZero (addr, size)
  uint64_t addr = 0, size = 0;
  std::vector<uint8_t> bytes;  // kWrite
  uint64_t value = 0;          // kWrite64
  uint32_t thread = 0;         // kThread
  TranslateRecord translate;   // kTranslate
  invq::InvalidationOp op;     // kInvalidate
  uint64_t count = 0;          // kEnd: records before it
};

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Appends records to an in-memory buffer; save() writes it out. Not thread-safe (Recorder is).
class Writer {
 public:
  explicit Writer(uint16_t flags = 0);
  void config(const ConfigRecord &c);
  void ram(uint64_t base, uint64_t size);
  void root(uint64_t addr);
  void write(uint64_t addr, const void *data, size_t len);
  void thread(uint32_t id);
  void translate(const TranslateRecord &t);
  void translate(const Request &req, const Result &res);
  void invalidate(const invq::InvalidationOp &op);
  void wait();
  // Re-encodes a decoded record (filtering or editing traces); an end record is ignored.
  void append(const Record &r);
  void set_flags(uint16_t flags);
  uint16_t flags() const;
  // Appends the end record (once) and returns the finished bytes.
  const std::vector<uint8_t> &finish();
  void save(const std::string &path);
  static void save_bytes(const std::vector<uint8_t> &bytes, const std::string &path);
  uint64_t records() const { return records_; }
  size_t size_bytes() const { return buf_.size(); }

 private:
  void put(Tag t);
  void varint(uint64_t v);
  std::vector<uint8_t> buf_;
  uint64_t records_ = 0;
  bool finished_ = false;
  // Delta state: consecutive translations of a DMA stream differ by small strides.
  uint64_t last_iova_ = 0, last_out_ = 0;
};

// Decodes a whole trace held in memory. Every malformed input raises Error with the byte
// offset; a trace without its end record is reported as truncated.
class Reader {
 public:
  explicit Reader(std::vector<uint8_t> bytes);
  static Reader load(const std::string &path);
  static std::vector<uint8_t> read_file(const std::string &path);
  uint16_t flags() const { return flags_; }
  // False at the end record. The end record's count is checked against the records read.
  bool next(Record *r);

 private:
  uint64_t varint();
  uint8_t byte();
  // Bounds against the RAM the trace declared (docs/LIMITS.md): `at` is the record's offset.
  void declare_ram(uint64_t base, uint64_t size, size_t at);
  void check_in_ram(uint64_t addr, uint64_t len, size_t at, const char *what) const;
  std::vector<std::pair<uint64_t, uint64_t>> ram_;  // (base, size) as declared
  uint64_t ram_bytes_ = 0, zero_bytes_ = 0;
  std::vector<uint8_t> buf_;
  size_t pos_ = 0;
  uint16_t flags_ = 0;
  uint64_t records_ = 0;
  bool ended_ = false;
  uint64_t last_iova_ = 0, last_out_ = 0;
};

// Thread-safe recorder for a live engine: observes the engine memory's writes, and takes
// translations and invalidations from the workload. Record order is the order in which the
// recorder's lock was taken.
class Recorder {
 public:
  // Records the engine's configuration, RAM regions and root pointer as they are now, then
  // every later write. Attach before the machine is built so setup writes are captured.
  explicit Recorder(Engine &engine);
  ~Recorder();
  Recorder(const Recorder &) = delete;
  Recorder &operator=(const Recorder &) = delete;
  void ram(uint64_t base, uint64_t size);
  void root(uint64_t addr);
  void translate(uint32_t thread, const Request &req, const Result &res);
  void invalidate(uint32_t thread, const invq::InvalidationOp &op);
  void wait(uint32_t thread);
  void mark_concurrent();
  // Stops observing and writes the trace (or returns its bytes).
  void save(const std::string &path);
  std::vector<uint8_t> finish();
  uint64_t records();

 private:
  static void on_write(void *ctx, uint64_t pa, const void *data, size_t len);
  void switch_thread(uint32_t thread);
  Engine &engine_;
  std::mutex mu_;
  Writer w_;
  uint32_t current_thread_ = 0;
  uint64_t last_root_ = 0;
  bool detached_ = false;
};

struct ReplayOptions {
  bool verify = true;   // compare each translation with its recorded result
  bool caching = true;  // replay on a cached (true) or uncached engine
  // Cache geometry and queue settings of the replay engine; the trace's config record
  // overrides the fields that change results (ConfigRecord).
  EngineConfig engine;
  size_t max_reported = 8;  // divergences described in ReplayResult::messages
  uint32_t repeat = 1;      // replay the translation stream this many times (throughput)
};

struct ReplayResult {
  uint64_t records = 0;
  uint64_t translations = 0, faults = 0, invalidations = 0, writes = 0;
  uint64_t checked = 0, divergences = 0;
  std::array<uint64_t, 5> by_scope{};  // first pass's invalidations, by invq::Scope value
  bool concurrent = false;             // the trace's kFlagConcurrent
  double seconds = 0;                  // time spent in translations and invalidations
  EngineStats stats;
  std::vector<std::string> messages;
};

// Rebuilds the machine on a fresh engine and reruns the trace on one thread.
ReplayResult replay(Reader &reader, const ReplayOptions &opt = {});

// What replay() sets up before the first record: the engine configuration it builds
// (opt.engine with opt.caching, then the trace's config records) and the RAM records.
struct ReplaySetup {
  EngineConfig engine;
  std::vector<std::pair<uint64_t, uint64_t>> ram;  // (base, size) of each RAM record, in order
  bool ram_first = true;  // every RAM record comes before any record but config records
};
// Decodes a copy of `reader` (Error if the trace is malformed, as replay() would throw).
ReplaySetup replay_setup(Reader reader, const ReplayOptions &opt = {});

// replay() onto `engine` instead of a fresh one, for callers that replay many traces and
// cannot afford an engine each (a fuzzer, with Engine::reset() in between). `engine` must be
// fresh or reset, built from replay_setup(reader, opt).engine (cache geometry aside), and hold
// no RAM regions but those earlier replays of traces with the same ReplaySetup::ram added: a
// RAM record naming an engine-owned region the engine has is then taken as added (each region
// once, so a duplicate record still fails), and the result is replay(reader, opt)'s. Throws
// std::invalid_argument for an engine with RAM and a trace that is not ram_first (its early
// records could see RAM a fresh engine would not have yet).
ReplayResult replay(Reader &reader, Engine &engine, const ReplayOptions &opt = {});

}  // namespace nestor::trace
