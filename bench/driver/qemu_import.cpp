#include "qemu_import.h"

#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string_view>

#include "nestor/vtd/structures_writer.h"
#include "nestor/walkers/builder.h"

namespace nestor::trace {

namespace {

// Tables live in engine-owned RAM, which is mapped lazily: a large region costs only the
// pages the tables touch, here and on replay.
constexpr uint64_t kRamSize = 1ull << 30;
constexpr uint64_t kTableBase = 1ull << 20;
constexpr int kLevels = 4;  // 48-bit second level (PASID entry AW 2)
constexpr uint8_t kAw48 = 2;
constexpr uint64_t kPageSize = 4096;
constexpr uint64_t kPteAddr = 0x000F'FFFF'FFFF'F000ull;  // bits 51:12, second and first level
constexpr uint64_t kPtePageSize = 1ull << 7;
constexpr unsigned kMaxAddressMask = 51;  // 2^mask pages must stay a valid page count

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", (unsigned long long)v);
  return b;
}

// Reads the arguments of one event line against its QEMU format string, piece by piece.
class Fields {
 public:
  Fields(std::string_view text, uint64_t line, std::string_view event)
      : text_(text), line_(line), event_(event) {}

  void lit(std::string_view want) {
    if (text_.substr(pos_, want.size()) != want)
      fail("expected \"" + std::string(want) + "\" at column " + std::to_string(pos_ + 1));
    pos_ += want.size();
  }

  // Hex digits as printed by PRIx/%x (the "0x" is part of the literal before it).
  uint64_t hex_number(unsigned bits, std::string_view name) {
    uint64_t v = 0;
    size_t n = 0;
    for (; pos_ < text_.size(); ++pos_, ++n) {
      const char c = text_[pos_];
      int d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else {
        break;
      }
      if (n == 16) fail(std::string(name) + " has more than 64 bits");
      v = v << 4 | uint64_t(d);
    }
    if (n == 0) fail("expected a hex number for " + std::string(name));
    check_width(v, bits, name);
    return v;
  }

  uint64_t dec_number(unsigned bits, std::string_view name) {
    uint64_t v = 0;
    size_t n = 0;
    for (; pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9'; ++pos_, ++n) {
      if (n == 19) fail(std::string(name) + " is too large");
      v = v * 10 + uint64_t(text_[pos_] - '0');
    }
    if (n == 0) fail("expected a decimal number for " + std::string(name));
    check_width(v, bits, name);
    return v;
  }

  void end() {
    if (pos_ != text_.size())
      fail("unexpected text \"" + std::string(text_.substr(pos_)) + "\" at column " +
           std::to_string(pos_ + 1));
  }

  [[noreturn]] void fail(const std::string &what) const {
    throw Error("qemu log line " + std::to_string(line_) + ": " + std::string(event_) + ": " +
                what);
  }

 private:
  void check_width(uint64_t v, unsigned bits, std::string_view name) const {
    if (bits < 64 && (v >> bits) != 0)
      fail(std::string(name) + " " + hex(v) + " does not fit in " + std::to_string(bits) + " bits");
  }

  std::string_view text_;
  size_t pos_ = 0;
  uint64_t line_;
  std::string_view event_;
};

enum class Event {
  kUnused,
  kPageHit,
  kPageUpdate,
  kDmarTranslate,
  kDmarFault,
  kIotlbGlobal,
  kIotlbDomain,
  kIotlbPages,
  kIotlbPasidPages,
  kIotlbPasid,
  kContextGlobal,
  kContextDomain,
  kContextDevices,
};

Event classify(std::string_view name) {
  static const std::map<std::string_view, Event> kEvents = {
      {"vtd_iotlb_page_hit", Event::kPageHit},
      {"vtd_iotlb_page_update", Event::kPageUpdate},
      {"vtd_dmar_translate", Event::kDmarTranslate},
      {"vtd_dmar_fault", Event::kDmarFault},
      {"vtd_inv_desc_iotlb_global", Event::kIotlbGlobal},
      {"vtd_inv_desc_iotlb_domain", Event::kIotlbDomain},
      {"vtd_inv_desc_iotlb_pages", Event::kIotlbPages},
      {"vtd_inv_desc_iotlb_pasid_pages", Event::kIotlbPasidPages},
      {"vtd_inv_desc_iotlb_pasid", Event::kIotlbPasid},
      {"vtd_inv_desc_cc_global", Event::kContextGlobal},
      {"vtd_inv_desc_cc_domain", Event::kContextDomain},
      {"vtd_inv_desc_cc_devices", Event::kContextDevices},
  };
  const auto it = kEvents.find(name);
  return it == kEvents.end() ? Event::kUnused : it->second;
}

// Splits off the optional "PID@SECONDS.USEC:" prefix of the log backend. Returns false when
// the prefix starts but is not well formed (then the line is not a trace event).
bool strip_prefix(std::string_view *s) {
  size_t i = 0;
  auto digits = [&] {
    const size_t from = i;
    while (i < s->size() && (*s)[i] >= '0' && (*s)[i] <= '9') ++i;
    return i > from;
  };
  if (!digits()) return true;  // no prefix: the event name starts the line
  if (i >= s->size() || (*s)[i++] != '@' || !digits()) return false;
  if (i >= s->size() || (*s)[i++] != '.' || !digits()) return false;
  if (i >= s->size() || (*s)[i++] != ':') return false;
  s->remove_prefix(i);
  return true;
}

using SlBuilder = build::SecondLevelBuilder<HostTableSpace>;

}  // namespace

EngineConfig qemu_import_engine_config() {
  EngineConfig c;
  // Results are recorded from the tables alone; replay on a caching engine then checks
  // that the logged invalidations were enough.
  c.caching = false;
  // An uncached engine never fills its caches, and geometry is not part of the trace
  // (ConfigRecord): the smallest geometry spares building a 64K-entry IOTLB per import.
  c.iotlb_entries = 1;
  c.iotlb_shards = 1;
  c.context_cache_entries = 1;
  c.pasid_cache_entries = 1;
  c.psc_entries = 1;
  return c;
}

namespace {

class Importer {
 public:
  // On `engine` (see import_qemu_log) or, when null, on an engine of its own.
  Importer(QemuImportStats *stats, Engine *engine)
      : stats_(*stats),
        owned_(engine ? nullptr : std::make_unique<Engine>(config())),
        engine_(engine ? *engine : *owned_) {
    const std::vector<MachineMemory::RegionInfo> ram = engine_.memory().regions();
    // A reused engine keeps the RAM an earlier import added (reset zeroed it).
    const bool reused_ram =
        ram.size() == 1 && ram[0].base == 0 && ram[0].size == kRamSize && ram[0].owned;
    if (!ram.empty() && !reused_ram)
      throw std::invalid_argument("qemu import: the engine has RAM of its own");
    if (!reused_ram && engine_.memory().add_ram(0, kRamSize) != 0)
      throw Error("qemu import: cannot add RAM");
    // Attached before anything is built, so the structures' setup writes are in the trace.
    recorder_ = std::make_unique<Recorder>(engine_);
    pages_ = std::make_unique<PageAllocator>(engine_.memory(), kTableBase, kRamSize - kTableBase);
    space_ = std::make_unique<HostTableSpace>(engine_.memory(), *pages_);
    structures_ = std::make_unique<StructuresWriter>(engine_.memory(), *pages_);
    if (engine_.set_root_table(structures_->root_table()) != 0)
      throw Error("qemu import: root table rejected");
  }

  void line(std::string_view text) {
    ++stats_.lines;
    ++line_;
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (!strip_prefix(&text) || text.substr(0, 4) != "vtd_") {
      ++stats_.skipped;
      return;
    }
    ++stats_.events;
    const size_t space = text.find(' ');
    const std::string_view name = text.substr(0, space);
    const std::string_view args =
        space == std::string_view::npos ? std::string_view() : text.substr(space + 1);
    const Event ev = classify(name);
    if (ev == Event::kUnused) {
      ++stats_.skipped;
      return;
    }
    Fields f(args, line_, name);
    if (ev == Event::kDmarTranslate) {
      dmar_translate(f);
      return;
    }
    // Any other understood event ends the translation the pending hit/update belongs to.
    flush();
    switch (ev) {
      case Event::kPageHit:
      case Event::kPageUpdate:
        page_event(f, ev == Event::kPageHit);
        break;
      case Event::kDmarFault:
        fault(f);
        break;
      default:
        invalidation(f, ev);
        break;
    }
  }

  std::vector<uint8_t> finish() {
    flush();
    std::vector<uint8_t> bytes = recorder_->finish();
    // The recorder writes an ordinary trace; the header's flags say where this one came from.
    const uint16_t flags = uint16_t((bytes[10] | bytes[11] << 8) | kFlagImported);
    bytes[10] = uint8_t(flags);
    bytes[11] = uint8_t(flags >> 8);
    return bytes;
  }

 private:
  struct Domain {
    Domain(HostTableSpace &space, uint64_t root) : root(root), tables(space, root, kLevels) {}
    uint64_t root;
    SlBuilder tables;
    std::map<uint64_t, uint64_t> leaves;  // iova page number -> output page | perms
  };

  // A hit or update waits for the vtd_dmar_translate that QEMU logs right after it, which
  // carries the page size the pte alone does not.
  struct Pending {
    bool active = false, hit = false;
    uint16_t sid = 0, did = 0;
    uint64_t iova = 0, pte = 0, line = 0;
    bool sized = false;
    uint64_t mask = 0, gpa = 0;  // from vtd_dmar_translate
  };

  static EngineConfig config() { return qemu_import_engine_config(); }

  [[noreturn]] void fail(const std::string &what) const {
    throw Error("qemu log line " + std::to_string(line_) + ": " + what);
  }

  void page_event(Fields &f, bool hit) {
    Pending p;
    p.active = true;
    p.hit = hit;
    p.line = line_;
    f.lit(hit ? "IOTLB page hit sid 0x" : "IOTLB page update sid 0x");
    p.sid = uint16_t(f.hex_number(16, "sid"));
    f.lit(" iova 0x");
    p.iova = f.hex_number(64, "iova");
    f.lit(" slpte 0x");
    p.pte = f.hex_number(64, "slpte");
    f.lit(" domain 0x");
    p.did = uint16_t(f.hex_number(16, "domain"));
    f.end();
    pending_ = p;
  }

  void dmar_translate(Fields &f) {
    f.lit("dev ");
    const uint64_t bus = f.hex_number(8, "bus");
    f.lit(":");
    const uint64_t dev = f.hex_number(5, "device");
    f.lit(".");
    const uint64_t fn = f.hex_number(3, "function");
    f.lit(" iova 0x");
    const uint64_t iova = f.hex_number(64, "iova");
    f.lit(" -> gpa 0x");
    const uint64_t gpa = f.hex_number(64, "gpa");
    f.lit(" mask 0x");
    const uint64_t mask = f.hex_number(64, "mask");
    f.end();
    if (mask != (1ull << 12) - 1 && mask != (1ull << 21) - 1 && mask != (1ull << 30) - 1)
      f.fail("mask " + hex(mask) + " is not a 4K, 2M or 1G page mask");
    const uint16_t sid = uint16_t(bus << 8 | dev << 3 | fn);
    // Pass-through and translation-disabled requests are logged with this event alone; only
    // the one completing a pending hit/update is used.
    if (!pending_.active || pending_.sized || pending_.sid != sid ||
        (pending_.iova & ~mask) != iova) {
      ++stats_.skipped;
      return;
    }
    pending_.sized = true;
    pending_.mask = mask;
    pending_.gpa = gpa;
    flush();
  }

  void flush() {
    if (!pending_.active) return;
    const Pending p = pending_;
    pending_ = {};
    // Errors while building the machine belong to the hit/update line, not the one after it.
    const uint64_t current_line = line_;
    line_ = p.line;
    // Without vtd_dmar_translate a large leaf (PS) is taken as 2M: the pte does not say its
    // level, and 2M is what guests use far more often than 1G.
    const uint64_t size = p.sized                       ? p.mask + 1
                          : (p.pte & kPtePageSize) != 0 ? 1ull << 21
                                                        : kPageSize;
    const uint64_t in_page = p.iova & (size - 1) & ~(kPageSize - 1);
    const uint64_t out_page = (p.pte & kPteAddr & ~(size - 1)) + in_page;
    const uint8_t perms = uint8_t(p.pte & (kAccessRead | kAccessWrite));
    Domain &d = attach(p.sid, p.did);
    set_leaf(d, p.did, p.iova / kPageSize, perms ? out_page | perms : 0);
    // The log does not say whether the device read or wrote: any access the entry allows.
    const Result r = translate(p.sid, p.iova, (perms & kAccessRead) ? kAccessRead : kAccessWrite);
    const uint64_t want = out_page | (p.iova & (kPageSize - 1));
    if (!r.ok || r.t.out != want || (p.sized && (want & ~p.mask) != p.gpa)) ++stats_.inconsistent;
    ++stats_.translations;
    ++(p.hit ? stats_.hits : stats_.updates);
    line_ = current_line;
  }

  void fault(Fields &f) {
    f.lit("sid 0x");
    const uint16_t sid = uint16_t(f.hex_number(16, "sid"));
    f.lit(" fault ");
    f.dec_number(8, "fault reason");  // QEMU's legacy/scalable code; the engine gives its own
    f.lit(" addr 0x");
    const uint64_t addr = f.hex_number(64, "addr");
    f.lit(" write ");
    const uint64_t write = f.dec_number(1, "write");
    f.end();
    const uint8_t access = write ? kAccessWrite : kAccessRead;
    // QEMU reports faults only from table walks, so the guest's tables refuse this access now;
    // a mapping left from earlier (lazy unmap, QEMU's IOTLB dropped by its size limit) goes.
    if (const auto dev = device_domain_.find(sid); dev != device_domain_.end()) {
      Domain &d = domains_.at(dev->second);
      const auto leaf = d.leaves.find(addr / kPageSize);
      if (leaf != d.leaves.end() && (leaf->second & access))
        set_leaf(d, dev->second, leaf->first, 0);
    }
    const Result r = translate(sid, addr, access);
    if (r.ok) ++stats_.inconsistent;
    ++stats_.translations;
    ++stats_.faults;
  }

  void invalidation(Fields &f, Event ev) {
    invq::InvalidationOp op;
    switch (ev) {
      case Event::kIotlbGlobal:
        f.lit("iotlb invalidate global");
        f.end();
        op.caches = invq::kCacheIotlb | invq::kCachePaging;
        op.scope = invq::Scope::kGlobal;
        for (auto &entry : domains_) clear(entry.second, 0, ~uint64_t{0});
        break;
      case Event::kIotlbDomain:
      case Event::kIotlbPasid: {
        if (ev == Event::kIotlbDomain) {
          f.lit("iotlb invalidate whole domain 0x");
          op.did = uint16_t(f.hex_number(16, "domain"));
        } else {
          f.lit("iotlb invalidate domain 0x");
          op.did = uint16_t(f.hex_number(16, "domain"));
          f.lit(" pasid 0x");
          f.hex_number(20, "pasid");
        }
        f.end();
        // The machine is second-level only, where every PASID of a domain shares the
        // mappings: a PASID-selective flush becomes the domain-selective one that covers it.
        op.caches = invq::kCacheIotlb | invq::kCachePaging;
        op.scope = invq::Scope::kDomain;
        if (auto it = domains_.find(op.did); it != domains_.end()) clear(it->second, 0, ~0ull);
        break;
      }
      case Event::kIotlbPages:
      case Event::kIotlbPasidPages: {
        f.lit("iotlb invalidate domain 0x");
        op.did = uint16_t(f.hex_number(16, "domain"));
        f.lit(" addr 0x");
        const uint64_t addr = f.hex_number(64, "addr");
        f.lit(" mask 0x");
        const uint64_t am = f.hex_number(8, "mask");
        if (ev == Event::kIotlbPasidPages) {
          f.lit(" pasid 0x");
          f.hex_number(20, "pasid");
        }
        f.end();
        if (am > kMaxAddressMask)
          f.fail("address mask " + std::to_string(am) + " covers more than 2^51 pages");
        // VT-d: the range is the naturally aligned block of 2^mask pages holding addr.
        op.npages = uint64_t{1} << am;
        op.addr = (addr / kPageSize) & ~(op.npages - 1);
        op.addr *= kPageSize;
        op.caches = invq::kCacheIotlb | invq::kCachePaging;
        op.scope = invq::Scope::kRange;
        op.addr_is_gpa = true;  // second-level input addresses; see kIotlbPasid
        if (auto it = domains_.find(op.did); it != domains_.end())
          clear(it->second, op.addr / kPageSize, op.npages);
        break;
      }
      case Event::kContextGlobal:
        f.lit("context invalidate globally");
        f.end();
        op.caches = invq::kCacheContext | invq::kCachePasid;
        op.scope = invq::Scope::kGlobal;
        break;
      case Event::kContextDomain:
        f.lit("context invalidate domain 0x");
        op.did = uint16_t(f.hex_number(16, "domain"));
        f.end();
        op.caches = invq::kCacheContext | invq::kCachePasid;
        op.scope = invq::Scope::kDomain;
        break;
      case Event::kContextDevices:
        f.lit("context invalidate devices sid 0x");
        op.source_id = uint16_t(f.hex_number(16, "sid"));
        f.lit(" fmask 0x");
        op.function_mask = uint8_t(f.hex_number(2, "fmask"));
        f.end();
        op.caches = invq::kCacheContext | invq::kCachePasid;
        op.scope = invq::Scope::kDevice;
        break;
      default:
        f.fail("not an invalidation event");
    }
    apply(op);
    ++stats_.invalidations;
  }

  // QEMU applies each invalidation before it logs the next event, hence a wait after each.
  void apply(const invq::InvalidationOp &op) {
    engine_.invalidate(op);
    engine_.invalidate_wait();
    recorder_->invalidate(0, op);
    recorder_->wait(0);
  }

  void synthesize(const invq::InvalidationOp &op) {
    apply(op);
    ++stats_.synthesized;
  }

  Domain &domain(uint16_t did) {
    if (auto it = domains_.find(did); it != domains_.end()) return it->second;
    const uint64_t root = pages_->alloc();
    if (!root) fail("out of table memory for domain " + hex(did));
    return domains_.try_emplace(did, *space_, root).first->second;
  }

  // Points the device's RID_PASID entry at the domain's second level, as the guest must have
  // done before QEMU could log this translation.
  Domain &attach(uint16_t sid, uint16_t did) {
    Domain &d = domain(did);
    const auto it = device_domain_.find(sid);
    if (it != device_domain_.end() && it->second == did) return d;
    if (it == device_domain_.end() && structures_->attach(sid, 0, true, 0) != 0)
      fail("cannot attach device " + hex(sid) + " (out of table memory)");
    vtd::PasidEntry pe;
    pe.present = true;
    pe.pgtt = vtd::Pgtt::kSecondLevel;
    pe.did = did;
    pe.sl_root = d.root;
    pe.aw = kAw48;
    if (structures_->set_pasid_entry(sid, 0, pe) != 0)
      fail("cannot write the PASID entry of device " + hex(sid));
    device_domain_[sid] = did;
    // A device translated before (faulting, or in another domain) may have cached structures.
    if (used_sids_.count(sid)) {
      invq::InvalidationOp op;
      op.caches = invq::kCacheContext | invq::kCachePasid;
      op.scope = invq::Scope::kDevice;
      op.source_id = sid;
      synthesize(op);
    }
    return d;
  }

  // Sets one 4K leaf (0: not present). Changing a present leaf without the log's say-so needs
  // an invalidation, or a caching replay would keep serving the old one.
  void set_leaf(Domain &d, uint16_t did, uint64_t page, uint64_t leaf) {
    const auto it = d.leaves.find(page);
    const uint64_t old = it == d.leaves.end() ? 0 : it->second;
    if (old == leaf) return;
    const uint64_t va = page * kPageSize;
    build::Status s;
    if (leaf) {
      s = d.tables.map(va, leaf & ~(kPageSize - 1), 12, build::sl_leaf_bits(uint8_t(leaf & 3)));
      if (s == build::Status::kOk) d.leaves[page] = leaf;
    } else {
      s = d.tables.unmap(va, 12);
      d.leaves.erase(page);
    }
    if (s == build::Status::kNoMemory) fail("out of table memory");
    // Other failures (an iova beyond 48 bits) leave the page unmapped; the translation that
    // follows then faults and is counted as inconsistent.
    if (old && s == build::Status::kOk) {
      invq::InvalidationOp op;
      op.caches = invq::kCacheIotlb | invq::kCachePaging;
      op.scope = invq::Scope::kRange;
      op.did = did;
      op.addr = va;
      op.npages = 1;
      op.addr_is_gpa = true;
      synthesize(op);
    }
  }

  // The guest invalidates after changing its tables; the pages come back, with their new
  // values, as update events. npages ~0: all.
  void clear(Domain &d, uint64_t first, uint64_t npages) {
    auto it = d.leaves.lower_bound(first);
    while (it != d.leaves.end() && it->first - first < npages) {
      d.tables.unmap(it->first * kPageSize, 12);
      it = d.leaves.erase(it);
    }
  }

  Result translate(uint16_t sid, uint64_t iova, uint8_t access) {
    Request q;
    q.source_id = sid;
    q.iova = iova;
    q.access = access;
    const Result r = engine_.translate(q);
    recorder_->translate(0, q, r);
    used_sids_.insert(sid);
    return r;
  }

  QemuImportStats &stats_;
  uint64_t line_ = 0;
  std::unique_ptr<Engine> owned_;
  Engine &engine_;
  std::unique_ptr<Recorder> recorder_;
  std::unique_ptr<PageAllocator> pages_;
  std::unique_ptr<HostTableSpace> space_;
  std::unique_ptr<StructuresWriter> structures_;
  std::map<uint16_t, Domain> domains_;
  std::map<uint16_t, uint16_t> device_domain_;
  std::set<uint16_t> used_sids_;
  Pending pending_;
};

}  // namespace

std::string QemuImportStats::summary() const {
  std::string s = "qemu import: " + std::to_string(lines) + " lines, " + std::to_string(events) +
                  " vtd events, " + std::to_string(skipped) + " skipped; " +
                  std::to_string(translations) + " translations (" + std::to_string(hits) +
                  " hits, " + std::to_string(updates) + " updates, " + std::to_string(faults) +
                  " faults), " + std::to_string(invalidations) + " invalidations";
  if (synthesized) s += " (+" + std::to_string(synthesized) + " synthesized)";
  s += ", " + std::to_string(inconsistent) + " inconsistent";
  return s;
}

namespace {

std::vector<uint8_t> import_on(std::istream &in, QemuImportStats *stats, Engine *engine) {
  QemuImportStats local;
  QemuImportStats &st = stats ? *stats : local;
  st = {};
  Importer importer(&st, engine);
  // Bounded reads: a device such as /dev/zero (or a corrupt log) has no line ends and no end.
  // One getline per line, not a get() per character (a quarter of an import's time): room for
  // one byte past the limit tells a line at the limit from one beyond it.
  std::vector<char> buf(kMaxQemuLogLine + 2);
  uint64_t total = 0, line_no = 0;
  for (;;) {
    in.getline(buf.data(), std::streamsize(buf.size()));
    const size_t got = size_t(in.gcount());
    const bool at_end = in.eof();
    if (in.fail() && !at_end) {
      if (in.bad()) break;
      // The buffer filled without a line end: longer than the limit.
      throw Error("qemu log line " + std::to_string(line_no + 1) + " is longer than the " +
                  std::to_string(kMaxQemuLogLine) + "-byte line limit");
    }
    // gcount() counts the extracted '\n' too, except on the last line without one.
    const size_t len = at_end ? got : got - 1;
    if (at_end && len == 0) break;
    if (len > kMaxQemuLogLine)
      throw Error("qemu log line " + std::to_string(line_no + 1) + " is longer than the " +
                  std::to_string(kMaxQemuLogLine) + "-byte line limit");
    ++line_no;
    total += len + 1;
    if (total > kMaxQemuLogBytes)
      throw Error("qemu log is larger than the " + std::to_string(kMaxQemuLogBytes >> 30) +
                  " GiB limit (line " + std::to_string(line_no) + ")");
    importer.line(std::string_view(buf.data(), len));
    if (at_end) break;
  }
  if (in.bad()) throw Error("qemu import: read error");
  return importer.finish();
}

}  // namespace

std::vector<uint8_t> import_qemu_log(std::istream &in, QemuImportStats *stats) {
  return import_on(in, stats, nullptr);
}

std::vector<uint8_t> import_qemu_log(std::istream &in, QemuImportStats *stats, Engine &engine) {
  return import_on(in, stats, &engine);
}

}  // namespace nestor::trace
