#include "trace.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "nestor/walkers/types.h"

namespace nestor::trace {

namespace {

constexpr size_t kHeaderSize = 16;

uint64_t zigzag(int64_t v) {
  return (uint64_t(v) << 1) ^ uint64_t(v >> 63);
}
int64_t unzigzag(uint64_t v) {
  return int64_t(v >> 1) ^ -int64_t(v & 1);
}

uint8_t shift_code(uint8_t shift) {
  return shift == 30 ? 2 : shift == 21 ? 1 : 0;
}

// memcmp against zeros, not a byte loop: every table page the recorder sees zeroed is 4K, and
// a per-byte scan was a sixth of fuzz_trace's time under coverage instrumentation.
bool all_zero(const uint8_t *p, size_t len) {
  static const uint8_t zeros[4096] = {};
  for (size_t done = 0; done < len; done += sizeof zeros)
    if (std::memcmp(p + done, zeros, std::min(sizeof zeros, len - done)) != 0) return false;
  return true;
}

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", (unsigned long long)v);
  return b;
}

std::string describe(const Request &q) {
  std::string s = "sid " + hex(q.source_id);
  s += q.has_pasid ? " pasid " + std::to_string(q.pasid) : std::string(" no-pasid");
  s += " iova " + hex(q.iova);
  s += (q.access & kAccessWrite) ? " (write)" : " (read)";
  return s;
}

std::string describe(const Result &r) {
  if (r.ok) return "-> " + hex(r.t.out) + " perms " + std::to_string(r.t.perms);
  return std::string("fault ") + hex(uint8_t(r.fault.reason)) + " (" +
         fault_reason_name(r.fault.reason) + ")";
}

std::string describe(const TranslateRecord &t) {
  if (t.expect == Expect::kOk) return "-> " + hex(t.out) + " perms " + std::to_string(t.perms);
  return std::string("fault ") + hex(t.fault_reason) + " (" +
         fault_reason_name(FaultReason(t.fault_reason)) + ")";
}

}  // namespace

ConfigRecord ConfigRecord::from(const EngineConfig &c) {
  ConfigRecord r;
  r.host_address_width = c.host_address_width;
  r.pasid_bits = c.pasid_bits;
  r.sagaw = c.sagaw;
  r.first_level_5 = c.first_level_5;
  r.first_level_1g = c.first_level_1g;
  r.second_level_2m = c.second_level_2m;
  r.second_level_1g = c.second_level_1g;
  r.first_level_ad = c.first_level_ad;
  return r;
}

void ConfigRecord::apply(EngineConfig *c) const {
  c->host_address_width = host_address_width;
  c->pasid_bits = pasid_bits;
  c->sagaw = sagaw;
  c->first_level_5 = first_level_5;
  c->first_level_1g = first_level_1g;
  c->second_level_2m = second_level_2m;
  c->second_level_1g = second_level_1g;
  c->first_level_ad = first_level_ad;
}

// ---- Writer ----------------------------------------------------------------------------

Writer::Writer(uint16_t flags) {
  uint8_t header[kHeaderSize] = {};
  std::memcpy(header, kMagic, sizeof kMagic);
  header[8] = uint8_t(kVersion);
  header[9] = uint8_t(kVersion >> 8);
  header[10] = uint8_t(flags);
  header[11] = uint8_t(flags >> 8);
  buf_.reserve(1 << 16);
  buf_.assign(header, header + kHeaderSize);
}

void Writer::set_flags(uint16_t flags) {
  buf_[10] = uint8_t(flags);
  buf_[11] = uint8_t(flags >> 8);
}

uint16_t Writer::flags() const {
  return uint16_t(buf_[10] | (buf_[11] << 8));
}

void Writer::put(Tag t) {
  if (finished_) throw Error("trace: record appended after the end record");
  buf_.push_back(uint8_t(t));
  ++records_;
}

void Writer::varint(uint64_t v) {
  while (v >= 0x80) {
    buf_.push_back(uint8_t(v | 0x80));
    v >>= 7;
  }
  buf_.push_back(uint8_t(v));
}

void Writer::config(const ConfigRecord &c) {
  put(Tag::kConfig);
  buf_.push_back(c.host_address_width);
  buf_.push_back(c.pasid_bits);
  buf_.push_back(c.sagaw);
  buf_.push_back(uint8_t(c.first_level_5 | c.first_level_1g << 1 | c.second_level_2m << 2 |
                         c.second_level_1g << 3 | c.first_level_ad << 4));
}

void Writer::ram(uint64_t base, uint64_t size) {
  put(Tag::kRam);
  varint(base);
  varint(size);
}

void Writer::root(uint64_t addr) {
  put(Tag::kRoot);
  varint(addr);
}

void Writer::write(uint64_t addr, const void *data, size_t len) {
  if (len == 8 && !(addr & 7)) {
    uint64_t v;
    std::memcpy(&v, data, 8);
    put(Tag::kWrite64);
    varint(addr);
    varint(v);
    return;
  }
  const uint8_t *p = static_cast<const uint8_t *>(data);
  // Freshly allocated table pages are zeroed with one 4K write: keep that to a few bytes.
  if (len > 8 && all_zero(p, len)) {
    put(Tag::kZero);
    varint(addr);
    varint(len);
    return;
  }
  put(Tag::kWrite);
  varint(addr);
  varint(len);
  buf_.insert(buf_.end(), p, p + len);
}

void Writer::thread(uint32_t id) {
  put(Tag::kThread);
  varint(id);
}

void Writer::translate(const TranslateRecord &t) {
  put(Tag::kTranslate);
  varint(t.req.source_id);
  varint(t.req.has_pasid ? uint64_t(t.req.pasid) + 1 : 0);
  varint(zigzag(int64_t(t.req.iova - last_iova_)));
  last_iova_ = t.req.iova;
  buf_.push_back(
      uint8_t((t.req.access & 7) | (t.req.privileged ? 8 : 0) | (uint8_t(t.expect) << 4)));
  if (t.expect == Expect::kOk) {
    varint(zigzag(int64_t(t.out - last_out_)));
    last_out_ = t.out;
    buf_.push_back(uint8_t((t.perms & 7) | (shift_code(t.page_shift) << 4)));
  } else if (t.expect == Expect::kFault) {
    buf_.push_back(t.fault_reason);
  }
}

void Writer::translate(const Request &req, const Result &res) {
  TranslateRecord t;
  t.req = req;
  if (res.ok) {
    t.expect = Expect::kOk;
    t.out = res.t.out;
    t.perms = res.t.perms;
    t.page_shift = res.t.page_shift;
  } else {
    t.expect = Expect::kFault;
    t.fault_reason = uint8_t(res.fault.reason);
  }
  translate(t);
}

void Writer::invalidate(const invq::InvalidationOp &op) {
  put(Tag::kInvalidate);
  buf_.push_back(op.caches);
  buf_.push_back(uint8_t(op.scope));
  buf_.push_back(uint8_t(op.leaf | op.addr_is_gpa << 1 | op.devtlb_global << 2));
  varint(op.did);
  varint(op.source_id);
  varint(uint32_t(op.pasid + 1));  // kNoPasid encodes as 0
  varint(op.addr);
  varint(op.npages);
  buf_.push_back(op.function_mask);
  varint(op.pfsid);
  buf_.push_back(op.max_invs_pending);
}

void Writer::wait() {
  put(Tag::kWait);
}

void Writer::append(const Record &r) {
  switch (r.tag) {
    case Tag::kConfig:
      config(r.config);
      break;
    case Tag::kRam:
      ram(r.addr, r.size);
      break;
    case Tag::kRoot:
      root(r.addr);
      break;
    case Tag::kWrite:
      write(r.addr, r.bytes.data(), r.bytes.size());
      break;
    case Tag::kWrite64:
      write(r.addr, &r.value, 8);
      break;
    case Tag::kZero: {
      const std::vector<uint8_t> zeros(r.size, 0);
      write(r.addr, zeros.data(), zeros.size());
      break;
    }
    case Tag::kThread:
      thread(r.thread);
      break;
    case Tag::kTranslate:
      translate(r.translate);
      break;
    case Tag::kInvalidate:
      invalidate(r.op);
      break;
    case Tag::kWait:
      wait();
      break;
    case Tag::kEnd:
      break;
  }
}

const std::vector<uint8_t> &Writer::finish() {
  if (!finished_) {
    const uint64_t n = records_;
    put(Tag::kEnd);
    varint(n);
    finished_ = true;
  }
  return buf_;
}

void Writer::save(const std::string &path) {
  save_bytes(finish(), path);
}

void Writer::save_bytes(const std::vector<uint8_t> &bytes, const std::string &path) {
  std::FILE *f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error("trace: cannot create " + path + ": " + std::strerror(errno));
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (std::fclose(f) != 0 || !ok) throw Error("trace: cannot write " + path);
}

// ---- Reader ----------------------------------------------------------------------------

Reader::Reader(std::vector<uint8_t> bytes) : buf_(std::move(bytes)) {
  if (buf_.size() < kHeaderSize || std::memcmp(buf_.data(), kMagic, sizeof kMagic) != 0)
    throw Error("trace: not a nestor trace (bad magic)");
  const uint16_t version = uint16_t(buf_[8] | buf_[9] << 8);
  if (version != kVersion)
    throw Error("trace: unsupported version " + std::to_string(version) + " (this build reads " +
                std::to_string(kVersion) + ")");
  flags_ = uint16_t(buf_[10] | buf_[11] << 8);
  pos_ = kHeaderSize;
}

std::vector<uint8_t> Reader::read_file(const std::string &path) {
  // Devices (/dev/zero) never end; refuse them before reading a byte.
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)))
    throw Error("trace: " + path + " is a device, not a trace file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("trace: cannot open " + path + ": " + std::strerror(errno));
  // Read in chunks up to the limit: a device such as /dev/zero never ends.
  std::vector<uint8_t> out;
  std::vector<char> chunk(1 << 16);
  while (in.read(chunk.data(), std::streamsize(chunk.size())) || in.gcount() > 0) {
    if (out.size() + size_t(in.gcount()) > kMaxTraceFileBytes)
      throw Error("trace: " + path + " is larger than the trace file limit of " +
                  std::to_string(kMaxTraceFileBytes >> 20) + " MiB");
    out.insert(out.end(), chunk.begin(), chunk.begin() + in.gcount());
  }
  return out;
}

void Reader::declare_ram(uint64_t base, uint64_t size, size_t at) {
  if (ram_.size() >= kMaxTraceRamRegions || size > kMaxTraceRamBytes - ram_bytes_ ||
      base + size < base)
    throw Error("trace: RAM record at byte " + std::to_string(at) +
                " exceeds the limits (at most " + std::to_string(kMaxTraceRamRegions) +
                " regions, " + std::to_string(kMaxTraceRamBytes >> 30) + " GiB in all)");
  ram_.emplace_back(base, size);
  ram_bytes_ += size;
}

// A write, entry store or zero fill must land in RAM the trace declared before it: replay
// would refuse it anyway, but only after touching the memory before it.
void Reader::check_in_ram(uint64_t addr, uint64_t len, size_t at, const char *what) const {
  uint64_t pos = addr, left = len;
  while (left) {
    bool found = false;
    for (const auto &[base, size] : ram_)
      if (pos - base < size) {
        const uint64_t n = std::min(left, size - (pos - base));
        pos += n;
        left -= n;
        found = true;
        break;
      }
    if (!found)
      throw Error("trace: " + std::string(what) + " of " + std::to_string(len) + " bytes at " +
                  hex(addr) + " (record at byte " + std::to_string(at) +
                  ") lies outside the RAM the trace declared");
  }
}

Reader Reader::load(const std::string &path) {
  return Reader(read_file(path));
}

uint8_t Reader::byte() {
  if (pos_ >= buf_.size())
    throw Error("trace: truncated at byte " + std::to_string(pos_) + " (record " +
                std::to_string(records_) + ")");
  return buf_[pos_++];
}

uint64_t Reader::varint() {
  uint64_t v = 0;
  for (unsigned shift = 0; shift < 64; shift += 7) {
    const uint8_t b = byte();
    v |= uint64_t(b & 0x7F) << shift;
    if (!(b & 0x80)) return v;
  }
  throw Error("trace: malformed number at byte " + std::to_string(pos_));
}

bool Reader::next(Record *r) {
  if (ended_) return false;
  if (pos_ >= buf_.size())
    throw Error("trace: truncated after record " + std::to_string(records_) + " (no end record)");
  const size_t at = pos_;
  const uint8_t tag = byte();
  r->tag = Tag(tag);
  switch (r->tag) {
    case Tag::kConfig: {
      r->config.host_address_width = byte();
      r->config.pasid_bits = byte();
      r->config.sagaw = byte();
      const uint8_t f = byte();
      r->config.first_level_5 = f & 1;
      r->config.first_level_1g = f & 2;
      r->config.second_level_2m = f & 4;
      r->config.second_level_1g = f & 8;
      r->config.first_level_ad = f & 16;
      break;
    }
    case Tag::kRam:
      r->addr = varint();
      r->size = varint();
      declare_ram(r->addr, r->size, at);
      break;
    case Tag::kRoot:
      r->addr = varint();
      break;
    case Tag::kWrite: {
      r->addr = varint();
      const uint64_t len = varint();
      if (len > buf_.size() - pos_)
        throw Error("trace: write of " + std::to_string(len) + " bytes at byte " +
                    std::to_string(at) + " runs past the end");
      check_in_ram(r->addr, len, at, "write");
      r->bytes.assign(buf_.begin() + long(pos_), buf_.begin() + long(pos_ + len));
      pos_ += len;
      break;
    }
    case Tag::kWrite64:
      r->addr = varint();
      r->value = varint();
      if (r->addr & 7)
        throw Error("trace: write64 at byte " + std::to_string(at) + " to unaligned address " +
                    hex(r->addr));
      check_in_ram(r->addr, 8, at, "write64");
      break;
    case Tag::kZero:
      r->addr = varint();
      r->size = varint();
      if (r->size > (uint64_t{64} << 20))
        throw Error("trace: zero fill of " + std::to_string(r->size) + " bytes at byte " +
                    std::to_string(at) + " is larger than 64 MiB");
      check_in_ram(r->addr, r->size, at, "zero fill");
      // Each fill may be legitimate on its own; together they may not ask for more than the
      // trace declared (a few hundred bytes of records would otherwise touch gigabytes).
      zero_bytes_ += r->size;
      if (zero_bytes_ > ram_bytes_)
        throw Error("trace: zero fills up to byte " + std::to_string(at) + " total " +
                    std::to_string(zero_bytes_) + " bytes, more than the " +
                    std::to_string(ram_bytes_) + " bytes of RAM declared");
      break;
    case Tag::kThread: {
      const uint64_t id = varint();
      if (id > UINT32_MAX)
        throw Error("trace: thread record at byte " + std::to_string(at) + " has id " +
                    std::to_string(id) + " beyond 32 bits");
      r->thread = uint32_t(id);
      break;
    }
    case Tag::kTranslate: {
      TranslateRecord &t = r->translate;
      t = {};
      const uint64_t sid = varint();
      const uint64_t pasid = varint();
      if (sid > 0xFFFF || pasid > (uint64_t{1} << 20))
        throw Error("trace: translation record at byte " + std::to_string(at) +
                    " has source-id/PASID out of range");
      t.req.source_id = uint16_t(sid);
      t.req.has_pasid = pasid != 0;
      t.req.pasid = pasid ? uint32_t(pasid - 1) : 0;
      last_iova_ += uint64_t(unzigzag(varint()));
      t.req.iova = last_iova_;
      const uint8_t f = byte();
      t.req.access = f & 7;
      t.req.privileged = f & 8;
      const uint8_t expect = (f >> 4) & 3;
      if (expect > 2 || (f & 0xC0))
        throw Error("trace: translation record at byte " + std::to_string(at) + " has bad flags " +
                    hex(f));
      t.expect = Expect(expect);
      if (t.expect == Expect::kOk) {
        last_out_ += uint64_t(unzigzag(varint()));
        t.out = last_out_;
        const uint8_t p = byte();
        t.perms = p & 7;
        t.page_shift = uint8_t(12 + 9 * ((p >> 4) & 3));
      } else if (t.expect == Expect::kFault) {
        t.fault_reason = byte();
      }
      break;
    }
    case Tag::kInvalidate: {
      invq::InvalidationOp &op = r->op;
      op = {};
      op.caches = byte();
      const uint8_t scope = byte();
      if (scope > uint8_t(invq::Scope::kRange) || (op.caches & ~invq::kAllCaches))
        throw Error("trace: invalidation record at byte " + std::to_string(at) +
                    " has bad cache mask or scope");
      op.scope = invq::Scope(scope);
      const uint8_t f = byte();
      op.leaf = f & 1;
      op.addr_is_gpa = f & 2;
      op.devtlb_global = f & 4;
      // Fields wider than the record's type are rejected, never truncated into another value.
      const uint64_t did = varint(), sid = varint(), pasid = varint();
      op.addr = varint();
      op.npages = varint();
      op.function_mask = byte();
      const uint64_t pfsid = varint();
      op.max_invs_pending = byte();
      if (did > 0xFFFF || sid > 0xFFFF || pasid > UINT32_MAX || pfsid > 0xFFFF)
        throw Error("trace: invalidation record at byte " + std::to_string(at) +
                    " has a DID, source-id, PASID or PFSID out of range");
      op.did = uint16_t(did);
      op.source_id = uint16_t(sid);
      op.pasid = uint32_t(pasid) - 1;
      op.pfsid = uint16_t(pfsid);
      if (op.scope == invq::Scope::kRange &&
          (op.npages == 0 || (op.addr >> 12) > invq::kMaxPageNumber ||
           op.npages > invq::kMaxPageNumber))
        throw Error("trace: invalidation record at byte " + std::to_string(at) +
                    " has an invalid range");
      break;
    }
    case Tag::kWait:
      break;
    case Tag::kEnd: {
      r->count = varint();
      if (r->count != records_)
        throw Error("trace: end record says " + std::to_string(r->count) + " records, read " +
                    std::to_string(records_));
      ended_ = true;
      return false;
    }
    default:
      throw Error("trace: unknown record type " + hex(tag) + " at byte " + std::to_string(at));
  }
  ++records_;
  return true;
}

// ---- Recorder --------------------------------------------------------------------------

Recorder::Recorder(Engine &engine) : engine_(engine) {
  w_.config(ConfigRecord::from(engine.config()));
  for (const auto &r : engine.memory().regions()) w_.ram(r.base, r.size);
  engine.memory().set_write_observer(&Recorder::on_write, this);
}

Recorder::~Recorder() {
  if (!detached_) engine_.memory().set_write_observer(nullptr, nullptr);
}

void Recorder::on_write(void *ctx, uint64_t pa, const void *data, size_t len) {
  auto *self = static_cast<Recorder *>(ctx);
  std::lock_guard lock(self->mu_);
  self->w_.write(pa, data, len);
}

void Recorder::switch_thread(uint32_t thread) {
  // The root pointer is a register, not memory: pick up changes before the next operation.
  const uint64_t root = engine_.root_table();
  if (root != last_root_) {
    w_.root(root);
    last_root_ = root;
  }
  if (thread != current_thread_) {
    w_.thread(thread);
    current_thread_ = thread;
  }
}

void Recorder::ram(uint64_t base, uint64_t size) {
  std::lock_guard lock(mu_);
  w_.ram(base, size);
}

void Recorder::root(uint64_t addr) {
  std::lock_guard lock(mu_);
  w_.root(addr);
  last_root_ = addr;
}

void Recorder::translate(uint32_t thread, const Request &req, const Result &res) {
  std::lock_guard lock(mu_);
  switch_thread(thread);
  w_.translate(req, res);
}

void Recorder::invalidate(uint32_t thread, const invq::InvalidationOp &op) {
  std::lock_guard lock(mu_);
  switch_thread(thread);
  w_.invalidate(op);
}

void Recorder::wait(uint32_t thread) {
  std::lock_guard lock(mu_);
  switch_thread(thread);
  w_.wait();
}

void Recorder::mark_concurrent() {
  std::lock_guard lock(mu_);
  w_.set_flags(w_.flags() | kFlagConcurrent);
}

uint64_t Recorder::records() {
  std::lock_guard lock(mu_);
  return w_.records();
}

void Recorder::save(const std::string &path) {
  if (!detached_) {
    engine_.memory().set_write_observer(nullptr, nullptr);
    detached_ = true;
  }
  std::lock_guard lock(mu_);
  w_.save(path);
}

std::vector<uint8_t> Recorder::finish() {
  if (!detached_) {
    engine_.memory().set_write_observer(nullptr, nullptr);
    detached_ = true;
  }
  std::lock_guard lock(mu_);
  return w_.finish();
}

// ---- Replay ----------------------------------------------------------------------------

namespace {

// A trace decoded for replay. Translations dominate a trace: they are kept in a dense array
// of their own so the replay loop streams ~50 bytes per translation, not a whole Record.
struct Loaded {
  struct Step {
    Tag tag;
    uint32_t index;  // into translations or records
  };
  std::vector<Step> steps;
  std::vector<TranslateRecord> translations;
  std::vector<Record> records;
  uint64_t count = 0;
  uint16_t flags = 0;
  bool ram_first = true;
};

Loaded load(Reader &reader) {
  Loaded l;
  Record r;
  bool other_seen = false;
  while (reader.next(&r)) {
    if (r.tag == Tag::kTranslate) {
      l.steps.push_back({r.tag, uint32_t(l.translations.size())});
      l.translations.push_back(r.translate);
    } else {
      l.steps.push_back({r.tag, uint32_t(l.records.size())});
      l.records.push_back(r);
    }
    if (r.tag == Tag::kRam && other_seen) l.ram_first = false;
    if (r.tag != Tag::kRam && r.tag != Tag::kConfig) other_seen = true;
    ++l.count;
  }
  l.flags = reader.flags();
  return l;
}

EngineConfig config_for(const Loaded &l, const ReplayOptions &opt) {
  EngineConfig cfg = opt.engine;
  cfg.caching = opt.caching;
  for (const Record &r : l.records)
    if (r.tag == Tag::kConfig) r.config.apply(&cfg);
  return cfg;
}

ReplayResult run(const Loaded &l, const ReplayOptions &opt, Engine &engine);

}  // namespace

ReplaySetup replay_setup(Reader reader, const ReplayOptions &opt) {
  const Loaded l = load(reader);
  ReplaySetup s;
  s.engine = config_for(l, opt);
  for (const Record &r : l.records)
    if (r.tag == Tag::kRam) s.ram.emplace_back(r.addr, r.size);
  s.ram_first = l.ram_first;
  return s;
}

ReplayResult replay(Reader &reader, const ReplayOptions &opt) {
  const Loaded l = load(reader);
  Engine engine(config_for(l, opt));
  return run(l, opt, engine);
}

ReplayResult replay(Reader &reader, Engine &engine, const ReplayOptions &opt) {
  const Loaded l = load(reader);
  // Regions taken over from an earlier replay stand for this trace's RAM records; that only
  // matches a fresh engine if nothing could touch memory before those records.
  if (!l.ram_first && !engine.memory().regions().empty())
    throw std::invalid_argument("replay onto an engine with RAM: the trace declares RAM late");
  return run(l, opt, engine);
}

namespace {

ReplayResult run(const Loaded &l, const ReplayOptions &opt, Engine &engine) {
  const std::vector<Loaded::Step> &steps = l.steps;
  const std::vector<TranslateRecord> &translations = l.translations;
  const std::vector<Record> &records = l.records;
  ReplayResult out;
  out.records = l.count;
  out.concurrent = l.flags & kFlagConcurrent;
  MachineMemory &mem = engine.memory();
  // Engine-owned regions the engine already has (replay onto a reused engine): a RAM record
  // naming one claims it instead of adding it; each is claimed once, so a duplicate record
  // still fails as it would on a fresh engine.
  std::vector<MachineMemory::RegionInfo> existing = mem.regions();
  std::vector<bool> claimed(existing.size(), false);
  auto claim = [&](uint64_t base, uint64_t size) {
    for (size_t k = 0; k < existing.size(); ++k)
      if (!claimed[k] && existing[k].owned && existing[k].base == base &&
          existing[k].size == size) {
        claimed[k] = true;
        return true;
      }
    return false;
  };
  auto write_ok = [](bool ok, uint64_t addr, size_t record) {
    if (!ok)
      throw Error("replay: write to " + hex(addr) + " outside RAM (record " +
                  std::to_string(record) + ")");
  };
  using Clock = std::chrono::steady_clock;
  Clock::duration busy{};
  const uint32_t passes = opt.repeat ? opt.repeat : 1;
  for (uint32_t pass = 0; pass < passes; ++pass) {
    if (pass) {
      // Start the next pass from a clean cache: the setup writes below restore the tables.
      invq::InvalidationOp all;
      all.caches = invq::kAllCaches;
      engine.invalidate(all);
      engine.invalidate_wait();
    }
    Clock::time_point started{};
    bool timing = false;
    for (size_t i = 0; i < steps.size(); ++i) {
      if (steps[i].tag == Tag::kTranslate) {
        if (!timing) {
          started = Clock::now();
          timing = true;
        }
        const TranslateRecord &t = translations[steps[i].index];
        const Result res = engine.translate(t.req);
        ++out.translations;
        out.faults += !res.ok;
        if (!opt.verify || t.expect == Expect::kUnchecked) continue;
        ++out.checked;
        const bool same = t.expect == Expect::kOk
                              ? res.ok && res.t.out == t.out && res.t.perms == t.perms
                              : !res.ok && uint8_t(res.fault.reason) == t.fault_reason;
        if (!same) {
          ++out.divergences;
          if (out.messages.size() < opt.max_reported)
            out.messages.push_back("record " + std::to_string(i) + ": " + describe(t.req) +
                                   ": recorded " + describe(t) + ", replayed " + describe(res));
        }
        continue;
      }
      const Record &r = records[steps[i].index];
      switch (r.tag) {
        case Tag::kRam:
          if (pass == 0 && !claim(r.addr, r.size)) {
            const int rc = mem.add_ram(r.addr, r.size);
            if (rc != 0)
              throw Error("replay: RAM region " + hex(r.addr) + "+" + hex(r.size) +
                          " rejected: " + std::strerror(-rc));
          }
          break;
        case Tag::kRoot:
          if (engine.set_root_table(r.addr) != 0)
            throw Error("replay: root table " + hex(r.addr) + " rejected");
          break;
        case Tag::kWrite:
          write_ok(mem.write(r.addr, r.bytes.data(), r.bytes.size()) == 0, r.addr, i);
          out.writes += pass == 0;
          break;
        case Tag::kWrite64:
          write_ok(mem.write64(r.addr, r.value), r.addr, i);
          out.writes += pass == 0;
          break;
        case Tag::kZero: {
          static const uint8_t zeros[4096] = {};
          for (uint64_t done = 0; done < r.size; done += sizeof zeros) {
            const size_t n = size_t(std::min<uint64_t>(sizeof zeros, r.size - done));
            write_ok(mem.write(r.addr + done, zeros, n) == 0, r.addr + done, i);
          }
          out.writes += pass == 0;
          break;
        }
        case Tag::kInvalidate:
          engine.invalidate(r.op);
          ++out.invalidations;
          if (pass == 0) ++out.by_scope[unsigned(r.op.scope)];
          break;
        case Tag::kWait:
          engine.invalidate_wait();
          break;
        default:
          break;
      }
    }
    if (timing) busy += Clock::now() - started;
  }
  out.seconds = std::chrono::duration<double>(busy).count();
  out.stats = engine.stats();
  return out;
}

}  // namespace

}  // namespace nestor::trace
