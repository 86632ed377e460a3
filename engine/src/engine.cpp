#include "nestor/engine.h"

#include <array>
#include <atomic>
#include <cerrno>
#include <optional>

#include "engine_internal.h"
#include "nestor/invalidation.h"

namespace nestor {

void FaultLog::record(const FaultRecord &r) {
  std::lock_guard lock(mu_);
  if (records_.size() >= capacity_) {
    overflow_ = true;
    return;
  }
  records_.push_back(r);
}

size_t FaultLog::drain(FaultRecord *out, size_t max) {
  std::lock_guard lock(mu_);
  const size_t n = std::min(max, records_.size());
  for (size_t i = 0; i < n; ++i) {
    out[i] = records_.front();
    records_.pop_front();
  }
  return n;
}

size_t FaultLog::size() const {
  std::lock_guard lock(mu_);
  return records_.size();
}

bool FaultLog::overflowed() const {
  std::lock_guard lock(mu_);
  return overflow_;
}

void FaultLog::clear_overflow() {
  std::lock_guard lock(mu_);
  overflow_ = false;
}

void FaultLog::clear() {
  std::lock_guard lock(mu_);
  records_.clear();
  overflow_ = false;
}

namespace {
std::atomic<uint64_t> g_next_engine_id{1};

CacheSetConfig cache_set_config(const EngineConfig &cfg) {
  CacheSetConfig c;
  c.context.cache.capacity = cfg.context_cache_entries;
  c.pasid.cache.capacity = cfg.pasid_cache_entries;
  c.iotlb.cache = {
      .capacity = cfg.iotlb_entries, .shards = cfg.iotlb_shards, .ways = cfg.iotlb_ways};
  c.iotlb.promote_threshold_pages = c.psc.promote_threshold_pages = cfg.promote_threshold_pages;
  c.psc.first_level.capacity = c.psc.second_level.capacity = c.psc.nested_table.capacity =
      cfg.psc_entries;
  c.track_table_pages = cfg.gpa_invalidation == EngineConfig::GpaInvalidation::kDependencies;
  return c;
}
}  // namespace

int validate_config(const EngineConfig &cfg, const char **why) {
  const char *dummy;
  if (!why) why = &dummy;
  auto bad = [why](const char *reason) {
    *why = reason;
    return -EINVAL;
  };
  // VT-d's MGAW/HAW encodings and the walkers cover 32..52 physical address bits.
  if (cfg.host_address_width < 32 || cfg.host_address_width > 52)
    return bad("host_address_width must be 32..52");
  if (cfg.pasid_bits < 1 || cfg.pasid_bits > 20) return bad("pasid_bits must be 1..20");
  // Bit 0 (30-bit, 2-level) and bit 4 are not second-level widths the walkers implement.
  if ((cfg.sagaw & ~0b1110u) || !(cfg.sagaw & 0b1110u))
    return bad("sagaw must name 39-, 48- and/or 57-bit second levels (bits 1-3) only");
  if (cfg.fault_log_entries == 0 || cfg.fault_log_entries > kMaxFaultLogEntries)
    return bad("fault_log_entries must be 1..1048576");
  if (cfg.iotlb_entries > kMaxIotlbEntries) return bad("iotlb_entries must be <= 4194304");
  if (cfg.iotlb_shards > kMaxIotlbShards) return bad("iotlb_shards must be <= 256");
  if (cfg.iotlb_ways > kMaxIotlbWays) return bad("iotlb_ways must be <= 8");
  if (cfg.context_cache_entries > kMaxStructureCacheEntries)
    return bad("context_cache_entries must be <= 1048576");
  if (cfg.pasid_cache_entries > kMaxStructureCacheEntries)
    return bad("pasid_cache_entries must be <= 1048576");
  if (cfg.psc_entries > kMaxStructureCacheEntries) return bad("psc_entries must be <= 1048576");
  return 0;
}

EngineConfig Engine::clamped(EngineConfig cfg) {
  if (cfg.host_address_width < 32 || cfg.host_address_width > 52) cfg.host_address_width = 48;
  if (cfg.pasid_bits > 20) cfg.pasid_bits = 20;
  return cfg;
}

VtdPersonality::Config vtd_personality_config(const EngineConfig &cfg) {
  return {.host_address_width = cfg.host_address_width,
          .pasid_bits = cfg.pasid_bits,
          .sagaw = cfg.sagaw,
          .first_level_5 = cfg.first_level_5,
          .first_level_1g = cfg.first_level_1g,
          .second_level_2m = cfg.second_level_2m,
          .second_level_1g = cfg.second_level_1g,
          .first_level_ad = cfg.first_level_ad};
}

Engine::Engine(const EngineConfig &cfg)
    : cfg_(clamped(cfg)),
      id_(g_next_engine_id.fetch_add(1)),
      faults_(cfg.fault_log_entries),
      caches_(cache_set_config(cfg)),
      personality_(mem_, vtd_personality_config(cfg_), cfg_.caching ? &caches_.context() : nullptr,
                   cfg_.caching ? &caches_.pasid() : nullptr) {
  inv_ = std::make_unique<EngineInvalidation>(*this, cfg_);
}

Engine::~Engine() = default;

int Engine::set_root_table(uint64_t pa) {
  return personality_.set_root_table(pa);
}

void Engine::reset() {
  // Pending ops first: their wait status writes land in RAM before it is zeroed.
  inv_->reset();
  // A global invalidation of every cache is O(1) (a scope time raised) and moves the
  // generation, which is what handles and the per-thread memos check before reusing anything.
  invq::InvalidationOp all;
  all.caches = invq::kAllCaches;
  all.scope = invq::Scope::kGlobal;
  invalidate(all);
  faults_.clear();
  personality_.clear_root_table();
  mem_.zero_ram();
}

uint64_t Engine::root_table() const {
  return personality_.root_table();
}

Result Engine::fail(const Request &req, Fault f, bool fpd) {
  if (f.address == 0 && f.stage == FaultStage::kStructures) f.address = req.iova;
  if (!fpd) faults_.record({req, f});
  Result r;
  r.fault = f;
  return r;
}

bool Engine::resolve(uint64_t stamp, const Request &req, Resolved *out, Result *fault_out) {
  Fault f;
  bool fpd = false;
  if (personality_.resolve(stamp, req, out, &f, &fpd)) return true;
  *fault_out = fail(req, f, fpd);
  return false;
}

Result Engine::translate(const Request &req) {
  // Drain needs every translation bracketed in the epoch domain; without it, this predictable
  // branch is the whole cost.
  if (cfg_.drain) [[unlikely]]
    return translate_drained(req);
  return translate_undrained(req);
}

Engine::RecentResolution &Engine::recent_resolution(uint16_t source_id, uint32_t pasid) {
  thread_local std::array<RecentResolution, kRecentResolutions> recent;
  return recent[(source_id ^ pasid) & (kRecentResolutions - 1)];
}

Result Engine::translate_undrained(const Request &req) {
  if (cfg_.caching) {
    // Same protocol as translate_in(): the generation is read before resolving, and the
    // resolution's stamp (older than any invalidation not yet reflected in the generation)
    // is the one later fills carry.
    const uint64_t gen = caches_.generation();
    const uint8_t flags = uint8_t(req.has_pasid | (req.privileged << 1));
    RecentResolution &m = recent_resolution(req.source_id, req.pasid);
    if (m.engine_id == id_ && m.generation == gen && m.source_id == req.source_id &&
        m.pasid == req.pasid && m.flags == flags) {
      // A copy: an I/O callback reached from the walk may translate on this thread again.
      const Resolved rs = m.rs;
      return translate_resolved(m.stamp, rs, req);
    }
    const uint64_t stamp = caches_.clock().now();
    Result fault;
    if (!resolve(stamp, req, &m.rs, &fault)) {
      m.engine_id = 0;
      return fault;
    }
    m.engine_id = id_;
    m.generation = gen;
    m.stamp = stamp;
    m.source_id = req.source_id;
    m.pasid = req.pasid;
    m.flags = flags;
    const Resolved rs = m.rs;
    return translate_resolved(stamp, rs, req);
  }
  // Taken before anything is read: a fill is refused if an invalidation of its key was issued
  // after this point, so a walk racing an invalidation never leaves a stale entry behind.
  const uint64_t stamp = caches_.clock().now();
  Resolved rs;
  Result fault;
  if (!resolve(stamp, req, &rs, &fault)) return fault;
  return translate_resolved(stamp, rs, req);
}

AddressSpace Engine::open(uint16_t source_id, bool has_pasid, uint32_t pasid, bool privileged) {
  AddressSpace as;
  as.engine_ = this;
  as.base_.source_id = source_id;
  as.base_.has_pasid = has_pasid;
  as.base_.pasid = pasid;
  as.base_.privileged = privileged;
  return as;
}

Result Engine::translate_in(AddressSpace &as, const Request &req) {
  if (!cfg_.caching) return translate(req);
  // Drain: bracketed like translate() so waits also cover handle translations.
  std::optional<EngineInvalidation::TranslationGuard> drain_guard;
  if (cfg_.drain) [[unlikely]]
    drain_guard.emplace(*inv_);
  // Read before resolving: an invalidation that lands after this read bumps the generation
  // again once applied, so the next translation re-resolves.
  const uint64_t gen = caches_.generation();
  if (as.generation_ != gen) {
    const uint64_t stamp = caches_.clock().now();
    Result fault;
    if (!resolve(stamp, req, &as.resolved_, &fault)) {
      as.generation_ = kStaleGeneration;
      return fault;
    }
    as.stamp_ = stamp;
    as.generation_ = gen;
  }
  const uint64_t page = req.iova >> 12;
  AddressSpace::MicroEntry &m = as.micro_[page & (AddressSpace::kMicroEntries - 1)];
  if (m.page == page && m.generation == gen && (req.access & ~m.allowed) == 0) {
    Result r;
    r.ok = true;
    r.t.out = m.out_page | (req.iova & 0xFFF);
    r.t.page_shift = m.page_shift;
    r.t.perms = m.perms;
    r.t.level = uint8_t((m.page_shift - 12) / 9 + 1);
    return r;
  }
  // Fills use the resolution's stamp: every invalidation since it advanced the generation, so
  // this stamp is older than any invalidation the handle has not yet seen and those refuse it.
  PipelineNotes notes;
  Result r = translate_resolved(as.stamp_, as.resolved_, req, &notes);
  if (notes.iotlb != PipelineNotes::Iotlb::kNotLookedUp)
    ++(notes.iotlb == PipelineNotes::Iotlb::kHit ? as.stats_.iotlb_hits : as.stats_.iotlb_misses);
  if (r.ok) {
    // Tagged with the generation read before the lookup: an invalidation applied meanwhile has
    // moved it on, so this entry can never outlive it.
    m.page = page;
    m.out_page = r.t.out & ~uint64_t{0xFFF};
    m.generation = gen;
    m.page_shift = r.t.page_shift;
    m.perms = r.t.perms;
    m.allowed = notes.write_ready ? r.t.perms : uint8_t(r.t.perms & ~kAccessWrite);
  }
  return r;
}

void Engine::translate_batch(const Request *reqs, Result *out, size_t n) {
  // Drain: the whole batch is one announced translation (see translate()).
  std::optional<EngineInvalidation::TranslationGuard> drain_guard;
  if (cfg_.drain) [[unlikely]]
    drain_guard.emplace(*inv_);
  // Resolve a group and prefetch each request's IOTLB set, then look them up: the set loads
  // of a group overlap instead of serialising on cache misses.
  constexpr size_t kGroup = 8;
  Resolved rs[kGroup];
  bool ok[kGroup];
  for (size_t base = 0; base < n; base += kGroup) {
    const size_t m = std::min(kGroup, n - base);
    const uint64_t stamp = caches_.clock().now();
    for (size_t i = 0; i < m; ++i) {
      ok[i] = resolve(stamp, reqs[base + i], &rs[i], &out[base + i]);
      if (ok[i] && cfg_.caching)
        caches_.iotlb().prefetch(rs[i].domain, iotlb_space(rs[i]), reqs[base + i].iova);
    }
    for (size_t i = 0; i < m; ++i)
      if (ok[i]) out[base + i] = translate_resolved(stamp, rs[i], reqs[base + i]);
  }
}

Result AddressSpace::translate(uint64_t iova, uint8_t access) {
  Request req = base_;
  req.iova = iova;
  req.access = access;
  return engine_->translate_in(*this, req);
}

void AddressSpace::translate_batch(const uint64_t *iovas, uint8_t access, Result *out, size_t n) {
  Request req = base_;
  req.access = access;
  if (n && engine_->config().caching) {
    // Resolve once up front so the prefetches below use the right tags.
    req.iova = iovas[0];
    out[0] = engine_->translate_in(*this, req);
  }
  const uint32_t key_pasid = Engine::iotlb_space(resolved_);
  constexpr size_t kAhead = 4;
  for (size_t i = engine_->config().caching ? 1 : 0; i < n; ++i) {
    if (i + kAhead < n && generation_ != Engine::kStaleGeneration)
      engine_->caches_.iotlb().prefetch(resolved_.domain, key_pasid, iovas[i + kAhead]);
    req.iova = iovas[i];
    out[i] = engine_->translate_in(*this, req);
  }
}

EngineStats Engine::stats() const {
  EngineStats s;
  s.context = caches_.context().stats();
  s.pasid = caches_.pasid().stats();
  s.iotlb = caches_.iotlb().stats();
  s.psc_first_level = caches_.psc().fl_stats();
  s.psc_second_level = caches_.psc().sl_stats();
  s.psc_nested_table = caches_.psc().nested_table_stats();
  return s;
}

}  // namespace nestor
