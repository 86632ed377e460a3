#include "nestor/engine.h"

#include <algorithm>
#include <cerrno>

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
      faults_(cfg.fault_log_entries),
      core_(cfg_, mem_, faults_, vtd_personality_config(cfg_)) {
  inv_ = std::make_unique<EngineInvalidation>(*this, cfg_);
  core_.attach(inv_.get());
}

Engine::~Engine() = default;

int Engine::set_root_table(uint64_t pa) {
  return core_.personality().set_root_table(pa);
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
  core_.personality().clear_root_table();
  mem_.zero_ram();
}

uint64_t Engine::root_table() const {
  return core_.personality().root_table();
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

int Engine::add_event_hook(uint32_t kinds, EventCallback callback, void *user) {
  return core_.add_event_hook(kinds, callback, user);
}

int Engine::remove_event_hook(int id) {
  return core_.remove_event_hook(id);
}

EngineStats Engine::stats() const {
  return core_.stats();
}

}  // namespace nestor
