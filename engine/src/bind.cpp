#include "nestor/bind.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <set>

#include "engine_internal.h"
#include "nestor/invalidation.h"
#include "nestor/vtd/descriptor.h"
#include "nestor/walkers/builder.h"
#include "nestor/walkers/second_level.h"

namespace nestor {

// ---------------------------------------------------------------------------------------------
// Nesting info

uint64_t vtd_cap(const EngineConfig &cfg, uint16_t max_domain_id) {
  return vtd::cap_register(vtd_personality_config(cfg), cfg.fault_log_entries, max_domain_id);
}

uint64_t vtd_ecap(const EngineConfig &cfg) {
  return vtd::ecap_register(vtd_personality_config(cfg));
}

NestingInfo make_nesting_info(const EngineConfig &cfg, uint32_t features, uint16_t max_did) {
  NestingInfo info;
  info.features = effective_nesting_features(features);
  info.host_address_width = cfg.host_address_width;
  info.guest_address_width = max_guest_address_width(cfg.sagaw);
  info.pasid_bits = cfg.pasid_bits;
  info.fl_levels = uint8_t((1u << 4) | (cfg.first_level_5 ? 1u << 5 : 0));
  for (unsigned aw = 1; aw <= 3; ++aw)
    if (cfg.sagaw & (1u << aw)) info.sl_levels |= uint8_t(1u << (aw + 2));
  info.vtd.cap_reg = vtd_cap(cfg, max_did);
  info.vtd.ecap_reg = vtd_ecap(cfg);
  return info;
}

int copy_nesting_info(const NestingInfo &info, void *out, uint32_t size) {
  if (!out || size < sizeof(uint32_t)) return -EINVAL;
  const size_t known = std::min<size_t>(size, sizeof info);
  std::memcpy(out, &info, known);
  // A newer caller's fields we do not know read as zero: "absent".
  if (size > known) std::memset(static_cast<uint8_t *>(out) + known, 0, size - known);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Construction

namespace {
constexpr uint64_t kPage = 4096;

bool add_overflows(uint64_t a, uint64_t b) {
  return a + b < a;
}

// Engines that have a bind layer. A second layer would write its own root table over the
// first one's register and hand out the same table pages twice, so devices of one layer
// would translate through the other's memory: one layer per engine, enforced here.
std::mutex g_claimed_mu;
std::set<const Engine *> g_claimed;

bool claim_engine(const Engine &e) {
  std::lock_guard lock(g_claimed_mu);
  return g_claimed.insert(&e).second;
}

void release_engine(const Engine &e) {
  std::lock_guard lock(g_claimed_mu);
  g_claimed.erase(&e);
}
}  // namespace

std::unique_ptr<BindLayer> BindLayer::create(Engine &engine, const BindConfig &cfg, int *err) {
  int dummy;
  if (!err) err = &dummy;
  *err = -EINVAL;
  if ((cfg.table_base | cfg.table_size) & (kPage - 1) || cfg.table_size < 64 * kPage ||
      add_overflows(cfg.table_base, cfg.table_size) || cfg.max_domain_id == 0 ||
      (cfg.features & ~kNestingFeatKnown) ||
      !engine.memory().is_ram(cfg.table_base, size_t(cfg.table_size)))
    return nullptr;
  if (!claim_engine(engine)) {
    *err = -EBUSY;
    return nullptr;
  }
  // Once constructed, the layer's destructor gives the claim back, on failure paths too.
  std::unique_ptr<BindLayer> layer;
  try {
    layer = std::make_unique<BindLayer>(Key{}, engine, cfg);
  } catch (...) {
    release_engine(engine);
    throw;
  }
  if (!layer->structures_.root_table()) {
    *err = -ENOMEM;
    return nullptr;
  }
  if (int r = engine.set_root_table(layer->structures_.root_table()); r != 0) {
    *err = r;
    return nullptr;
  }
  *err = 0;
  return layer;
}

namespace {
// PDTS for a directory that covers the engine's whole PASID space (64 PASIDs per table,
// 2^(PDTS+7) directory entries).
uint8_t pdts_for(uint8_t pasid_bits) {
  return pasid_bits > 13 ? uint8_t(pasid_bits - 13) : 0;
}

// A quarter of the range, but never less than one device needs (root table, context table,
// PASID directory, the RID_PASID's PASID table), so the documented minimum range attaches.
uint64_t structure_share(uint64_t size, uint8_t pasid_bits) {
  const uint64_t one_device = (3 + StructuresWriter::pasid_dir_pages(pdts_for(pasid_bits))) * kPage;
  return std::min(size, std::max<uint64_t>(one_device, (size / 4) & ~(kPage - 1)));
}
}  // namespace

// Structures get their own pages, never freed, so that the contiguous PASID directories the
// StructuresWriter needs always come from the allocator's fresh, ascending range; freed
// second-level tables recycle only among themselves.
BindLayer::BindLayer(Key, Engine &engine, const BindConfig &cfg)
    : engine_(engine),
      mem_(engine.memory()),
      cfg_(cfg),
      structure_pages_(mem_, cfg.table_base,
                       structure_share(cfg.table_size, engine.config().pasid_bits)),
      table_pages_(mem_,
                   cfg.table_base + structure_share(cfg.table_size, engine.config().pasid_bits),
                   cfg.table_size - structure_share(cfg.table_size, engine.config().pasid_bits)),
      tables_(mem_, table_pages_),
      structures_(mem_, structure_pages_),
      pasids_(engine.config().pasid_bits),
      free_dids_(uint32_t(cfg.max_domain_id) + 1) {
  free_dids_.set_all();
  free_dids_.clear(0);
  // What is reported is what is provided: BIND_PGTBL brings CACHE_INVLD with it, unless
  // DIRECT_INVLD replaces it.
  cfg_.features = effective_nesting_features(cfg_.features);
}

BindLayer::~BindLayer() {
  release_engine(engine_);
}

NestingInfo BindLayer::nesting_info() const {
  return make_nesting_info(engine_.config(), cfg_.features, cfg_.max_domain_id);
}

int BindLayer::get_nesting_info(void *out, uint32_t size) const {
  return copy_nesting_info(nesting_info(), out, size);
}

// ---------------------------------------------------------------------------------------------
// Owners and PASIDs

int BindLayer::create_owner_unreported(uint32_t quota, uint32_t *owner) {
  return pasids_.create_owner(quota, owner);
}

int BindLayer::destroy_owner_unreported(uint32_t owner) {
  std::lock_guard lock(mu_);
  if (!pasids_.has_owner(owner)) return -ENOENT;
  for (const auto &b : bindings_)
    if (b.second.owner == owner) return -EBUSY;
  for (const auto &d : domains_)
    if (d.second.owner == owner) return -EBUSY;
  if (queue_in_use(owner, 0)) return -EBUSY;
  return pasids_.destroy_owner(owner);
}

int BindLayer::release_owner_unreported(uint32_t owner) {
  std::lock_guard lock(mu_);
  if (!pasids_.has_owner(owner)) return -ENOENT;
  std::vector<std::pair<uint16_t, uint32_t>> mine;
  for (const auto &b : bindings_)
    if (b.second.owner == owner) mine.push_back(b.first);
  // One drain for all of them: take every entry down, wait once, then scrub.
  for (const auto &k : mine) unbind_begin(k.first, k.second);
  if (!mine.empty()) sync();
  std::vector<uint64_t> unlinked;
  for (const auto &k : mine) unbind_finish(k.first, k.second, &unlinked);
  free_structure_pages(unlinked, true);
  return pasids_.release_all(owner);
}

int BindLayer::alloc_pasid_unreported(uint32_t owner, uint32_t want, uint32_t guest_pasid,
                                      uint32_t *pasid) {
  if (!feature(kNestingFeatSyswidePasid)) return -EOPNOTSUPP;
  return pasids_.alloc(owner, want, guest_pasid, pasid);
}

int BindLayer::free_pasid_unreported(uint32_t owner, uint32_t pasid) {
  if (!feature(kNestingFeatSyswidePasid)) return -EOPNOTSUPP;
  std::lock_guard lock(mu_);
  // Only the holder learns that its PASID is busy; anyone else gets the allocator's answer.
  if (pasid != 0 && pasids_.owner_of(pasid) == owner)
    for (const auto &b : bindings_)
      if (b.first.second == pasid) return -EBUSY;
  return pasids_.free(owner, pasid);
}

// ---------------------------------------------------------------------------------------------
// Domains

sl::Config BindLayer::sl_config(const Domain &d) const {
  sl::Config c;
  c.root = d.root;
  c.levels = d.levels;
  c.host_width = engine_.config().host_address_width;
  c.ad_enabled = false;  // checks must not set A/D bits in the host's tables
  c.large_2m = engine_.config().second_level_2m;
  c.large_1g = engine_.config().second_level_1g;
  return c;
}

int BindLayer::new_domain(const DomainConfig &dc, uint64_t root, bool adopted, uint16_t *did) {
  if (!did || dc.levels < 3 || dc.levels > 5) return -EINVAL;
  if (!(engine_.config().sagaw & (1u << (dc.levels - 2)))) return -EOPNOTSUPP;
  if (adopted) {
    const unsigned haw = engine_.config().host_address_width;
    if ((root & (kPage - 1)) || (root >> haw) != 0 || !mem_.is_ram(root, kPage)) return -EINVAL;
  }
  std::lock_guard lock(mu_);
  if (dc.owner != 0 && !pasids_.has_owner(dc.owner)) return -ENOENT;
  // Next-fit, so a DID whose stale entries a buggy cache kept is not reused right away.
  uint32_t id = free_dids_.find_next(did_cursor_);
  if (id == HierarchicalBitmap::kNone) id = free_dids_.find_next(1);
  if (id == HierarchicalBitmap::kNone) return -ENOSPC;
  if (!adopted) {
    root = table_pages_.alloc();
    if (!root) return -ENOMEM;
  }
  free_dids_.clear(id);
  did_cursor_ = id + 1 > cfg_.max_domain_id ? 1 : id + 1;
  Domain &d = domains_[uint16_t(id)];
  d.levels = dc.levels;
  d.nesting = dc.nesting;
  d.ad = dc.ad;
  d.adopted = adopted;
  d.owner = dc.owner;
  d.root = root;
  *did = uint16_t(id);
  return 0;
}

int BindLayer::create_domain_unreported(const DomainConfig &dc, uint16_t *did) {
  return new_domain(dc, 0, false, did);
}

int BindLayer::adopt_domain_unreported(const DomainConfig &dc, uint64_t sl_root, uint16_t *did) {
  return new_domain(dc, sl_root, true, did);
}

void BindLayer::free_tables(uint64_t table, int level) {
  if (level > 1) {
    // One read per table page, not one per entry: a domain's teardown visits every table.
    std::array<uint64_t, 512> entries;
    if (mem_.read(table, entries.data(), sizeof entries) != 0) entries.fill(0);
    for (uint64_t e : entries) {
      if (!build::SecondLevelFormat::present(e)) continue;
      if (level <= 3 && (e & sl::kPageSize)) continue;  // a large leaf, not a table
      free_tables(e & sl::kAddrMask52, level - 1);
    }
  }
  table_pages_.free(table);  // alloc() zeroes it again before reuse
}

int BindLayer::destroy_domain_unreported(uint16_t did) {
  std::lock_guard lock(mu_);
  auto it = domains_.find(did);
  if (it == domains_.end()) return -ENOENT;
  // A direct queue's descriptors and status writes go through the domain's tables.
  if (it->second.devices || queue_in_use(0, did)) return -EBUSY;
  // Nothing may still hold the tables (paging-structure caches) when they are recycled.
  flush_domain(did);
  sync();
  if (!it->second.adopted) free_tables(it->second.root, it->second.levels);
  domains_.erase(it);
  free_dids_.set(did);
  return 0;
}

int BindLayer::map_chunk(Domain &d, uint64_t gpa, uint64_t hpa, unsigned shift, uint8_t perms,
                         Runs *done) {
  build::SecondLevelBuilder<HostTableSpace> b(tables_, d.root, d.levels);
  switch (b.map(gpa, hpa, shift, build::sl_leaf_bits(perms))) {
    case build::Status::kOk:
      if (!done->empty()) {
        auto &[last_gpa, last] = done->back();
        if (last.shift == shift && last_gpa + last.bytes() == gpa &&
            last.hpa + last.bytes() == hpa) {
          ++last.count;
          return 0;
        }
      }
      done->push_back({gpa, Run{hpa, 1, uint8_t(shift), perms}});
      return 0;
    case build::Status::kConflict:
      // An empty table left behind by an earlier unmap occupies the slot: fill it instead.
      if (shift == 12) return -EEXIST;
      for (uint64_t i = 0; i < 512; ++i) {
        const uint64_t off = i << (shift - 9);
        if (int r = map_chunk(d, gpa + off, hpa + off, shift - 9, perms, done); r != 0) return r;
      }
      return 0;
    case build::Status::kNoMemory:
      return -ENOMEM;
    default:
      return -EFAULT;
  }
}

int BindLayer::map_unreported(uint16_t did, uint64_t gpa, uint64_t hpa, uint64_t size,
                              uint8_t perms) {
  if (size == 0 || ((gpa | hpa | size) & (kPage - 1)) || add_overflows(gpa, size) ||
      add_overflows(hpa, size) || (perms & ~7u) || !(perms & (kAccessRead | kAccessWrite)))
    return -EINVAL;
  const unsigned haw = engine_.config().host_address_width;
  if (((hpa + size - 1) >> haw) != 0) return -EINVAL;
  // The layer's own tables (root, context, PASID structures, second levels) must never become
  // DMA targets: a guest device could rewrite the structures that isolate it.
  if (hpa < cfg_.table_base + cfg_.table_size && cfg_.table_base < hpa + size) return -EPERM;
  std::lock_guard lock(mu_);
  auto it = domains_.find(did);
  if (it == domains_.end()) return -ENOENT;
  Domain &d = it->second;
  if (d.adopted) return -EPERM;
  if (((gpa + size - 1) >> sl::width_for_levels(d.levels)) != 0) return -EINVAL;
  auto next = d.runs.lower_bound(gpa);
  if (next != d.runs.end() && next->first < gpa + size) return -EEXIST;
  if (next != d.runs.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.bytes() > gpa) return -EEXIST;
  }
  const EngineConfig &ec = engine_.config();
  Runs done;
  for (uint64_t off = 0; off < size;) {
    const uint64_t g = gpa + off, h = hpa + off, left = size - off;
    unsigned shift = 12;
    if (ec.second_level_1g && !((g | h) & ((1ull << 30) - 1)) && left >= (1ull << 30))
      shift = 30;
    else if (ec.second_level_2m && !((g | h) & ((1ull << 21) - 1)) && left >= (1ull << 21))
      shift = 21;
    if (int r = map_chunk(d, g, h, shift, perms, &done); r != 0) {
      // Leave nothing behind: the refusal must change nothing that translates.
      build::SecondLevelBuilder<HostTableSpace> b(tables_, d.root, d.levels);
      for (const auto &[rg, run] : done)
        for (uint64_t i = 0; i < run.count; ++i) b.unmap(rg + (i << run.shift), run.shift);
      return r;
    }
    off += uint64_t{1} << shift;
  }
  d.runs.insert(done.begin(), done.end());
  return 0;
}

int BindLayer::unmap_unreported(uint16_t did, uint64_t gpa, uint64_t size) {
  if (size == 0 || ((gpa | size) & (kPage - 1)) || add_overflows(gpa, size)) return -EINVAL;
  std::lock_guard lock(mu_);
  auto it = domains_.find(did);
  if (it == domains_.end()) return -ENOENT;
  Domain &d = it->second;
  if (d.adopted) return -EPERM;
  // A leaf may be unmapped only whole: the range must start and end on leaf boundaries.
  const uint64_t end = gpa + size;
  auto first = d.runs.lower_bound(gpa);
  if (first != d.runs.begin() && std::prev(first)->first + std::prev(first)->second.bytes() > gpa)
    --first;
  auto last = first;
  for (; last != d.runs.end() && last->first < end; ++last) {
    const uint64_t leaf_mask = (uint64_t{1} << last->second.shift) - 1;
    if (last->first < gpa && ((gpa - last->first) & leaf_mask)) return -EINVAL;
    if (last->first + last->second.bytes() > end && ((end - last->first) & leaf_mask))
      return -EINVAL;
  }
  if (first == last) return -ENOENT;
  // Runs that reach outside the range keep their outer leaves, as runs of their own.
  const Runs hit(first, last);
  d.runs.erase(first, last);
  build::SecondLevelBuilder<HostTableSpace> b(tables_, d.root, d.levels);
  for (const auto &[rg, run] : hit) {
    const uint64_t from = std::max(rg, gpa), to = std::min(rg + run.bytes(), end);
    for (uint64_t g = from; g < to; g += uint64_t{1} << run.shift) b.unmap(g, run.shift);
    if (rg < from) d.runs[rg] = Run{run.hpa, (from - rg) >> run.shift, run.shift, run.perms};
    if (to < rg + run.bytes())
      d.runs[to] =
          Run{run.hpa + (to - rg), (rg + run.bytes() - to) >> run.shift, run.shift, run.perms};
  }
  // The host owns the second level, so it invalidates its own changes.
  flush_second_level(did, gpa, size >> invq::kPageShift);
  sync();
  return 0;
}

bool BindLayer::domain_info(uint16_t did, DomainInfo *out) {
  std::lock_guard lock(mu_);
  auto it = domains_.find(did);
  if (it == domains_.end()) return false;
  const Domain &d = it->second;
  if (out) *out = {d.root, d.levels, d.nesting, d.ad, d.adopted, d.owner, d.devices};
  return true;
}

bool BindLayer::domain_resolve(uint16_t did, uint64_t gpa, uint64_t *hpa) {
  std::lock_guard lock(mu_);
  auto it = domains_.find(did);
  if (it == domains_.end()) return false;
  sl::Result r = sl::walk(mem_, sl_config(it->second), gpa, kAccessRead);
  if (r.ok && hpa) *hpa = r.t.out;
  return r.ok;
}

std::vector<std::pair<uint64_t, uint64_t>> BindLayer::domain_hpa_ranges(uint16_t did) {
  std::lock_guard lock(mu_);
  std::vector<std::pair<uint64_t, uint64_t>> out;
  auto it = domains_.find(did);
  if (it == domains_.end()) return out;
  for (const auto &[gpa, run] : it->second.runs)
    for (uint64_t i = 0; i < run.count; ++i)
      out.emplace_back(run.hpa + (i << run.shift), uint64_t{1} << run.shift);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Devices

void BindLayer::rid_pasid_words(const Domain &d, uint16_t did, uint64_t w[8]) const {
  vtd::PasidEntry pe;
  pe.present = true;
  pe.pgtt = vtd::Pgtt::kSecondLevel;
  pe.aw = uint8_t(d.levels - 2);
  pe.sl_root = d.root;
  pe.did = did;
  pe.slade = d.ad;
  vtd::encode_pasid_entry(w, pe);
}

uint64_t BindLayer::pasid_entry_address(uint16_t sid, uint32_t pasid, bool create, int *err) {
  *err = 0;
  uint64_t pa = structures_.pasid_entry_address(sid, pasid);
  if (pa || !create) return pa;
  // The writer allocates the PASID table on the first entry written through it; a
  // not-present entry makes it do so without publishing anything.
  if (int r = structures_.set_pasid_entry(sid, pasid, vtd::PasidEntry{}); r != 0) {
    *err = r;
    return 0;
  }
  pa = structures_.pasid_entry_address(sid, pasid);
  if (!pa) *err = -EFAULT;
  return pa;
}

int BindLayer::attach_device_unreported(uint16_t sid, uint16_t did) {
  std::lock_guard lock(mu_);
  auto it = domains_.find(did);
  if (it == domains_.end()) return -ENOENT;
  if (devices_.count(sid)) return -EBUSY;
  const uint8_t pdts = pdts_for(engine_.config().pasid_bits);
  if (int r = structures_.attach(sid, 0, true, pdts); r != 0) {
    structures_.detach(sid);
    return r;
  }
  uint64_t w[8];
  rid_pasid_words(it->second, did, w);
  int err;
  const uint64_t pe = pasid_entry_address(sid, 0, true, &err);
  if (!pe) {
    structures_.detach(sid);
    return err ? err : -ENOMEM;
  }
  for (int i = 7; i >= 1; --i) mem_.write64(pe + 8 * unsigned(i), w[i]);
  mem_.write64(pe, w[0]);
  // Not-present entries are never cached (CAP.CM = 0), but an embedder's engine might; being
  // explicit costs a few operations on a cold path.
  flush_context_entry(sid);
  flush_pasid_entry(did, sid, kDefaultPasid);
  sync();
  devices_[sid] = did;
  ++it->second.devices;
  return 0;
}

int BindLayer::detach_device_unreported(uint16_t sid) {
  std::lock_guard lock(mu_);
  auto dev = devices_.find(sid);
  if (dev == devices_.end()) return -ENOENT;
  for (const auto &b : bindings_)
    if (b.first.first == sid) return -EBUSY;
  const uint16_t did = dev->second;
  structures_.detach(sid);  // context entry first: the device stops translating at once
  int err;
  if (uint64_t pe = pasid_entry_address(sid, 0, false, &err))
    for (int i = 0; i < 8; ++i) mem_.write64(pe + 8 * unsigned(i), 0);
  // With no binding left every PASID table of the device is empty; table 0 (RID_PASID) too now.
  std::vector<uint64_t> unlinked;
  if (uint64_t t = structures_.unlink_pasid_table_if_empty(sid, 0)) unlinked.push_back(t);
  flush_context_entry(sid);
  flush_pasid_entry(did, sid, kDefaultPasid);
  sync();
  free_structure_pages(unlinked, false);
  --domains_[did].devices;
  devices_.erase(dev);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Binding

namespace {
invq::InvalidationOp make_op(uint8_t caches, invq::Scope scope) {
  invq::InvalidationOp op;
  op.caches = caches;
  op.scope = scope;
  return op;
}
}  // namespace

void BindLayer::flush_context_entry(uint16_t sid) {
  // Device-selective context-cache invalidation, then the device's TLB as a whole (what Linux's
  // intel_context_flush_present issues for the device besides its domains' flushes).
  invq::InvalidationOp cc = make_op(invq::kCacheContext, invq::Scope::kDevice);
  cc.source_id = sid;
  engine_.invalidation().submit(cc);
  invq::InvalidationOp dt = make_op(invq::kCacheDevTlb, invq::Scope::kDevice);
  dt.source_id = sid;
  engine_.invalidation().submit(dt);
}

void BindLayer::flush_pasid_entry(uint16_t did, uint16_t sid, uint32_t pasid) {
  // PASID-selective PASID-cache invalidation, then the translations made through the entry:
  // PASID-based IOTLB (with the paging-structure caches) for first-level and nested entries,
  // domain-selective IOTLB for a second-level-only one, then the device TLB (Linux:
  // intel_pasid_tear_down_entry).
  invq::InvalidationOp pc = make_op(invq::kCachePasid, invq::Scope::kPasid);
  pc.did = did;
  pc.pasid = pasid;
  engine_.invalidation().submit(pc);
  invq::InvalidationOp tlb = pc;
  tlb.caches = invq::kCacheIotlb | invq::kCachePaging;
  engine_.invalidation().submit(tlb);
  if (pasid == kDefaultPasid) {
    // RID_PASID is second-level only before a bind and after an unbind, and requests without
    // PASID may be cached as second-level-only entries of the domain: drop the whole domain.
    invq::InvalidationOp dom =
        make_op(invq::kCacheIotlb | invq::kCachePaging, invq::Scope::kDomain);
    dom.did = did;
    engine_.invalidation().submit(dom);
  }
  invq::InvalidationOp dt = make_op(invq::kCacheDevTlb, invq::Scope::kPasid);
  dt.source_id = sid;
  dt.pasid = pasid;
  engine_.invalidation().submit(dt);
}

void BindLayer::flush_second_level(uint16_t did, uint64_t gpa, uint64_t npages) {
  // Page-selective-within-domain IOTLB invalidation by GPA (type 0x2: it also takes every
  // first-level and nested entry of the domain), then the device TLBs of every device using
  // the domain.
  invq::InvalidationOp op = make_op(invq::kCacheIotlb | invq::kCachePaging, invq::Scope::kRange);
  op.did = did;
  op.addr = gpa;
  op.npages = npages;
  op.addr_is_gpa = true;
  engine_.invalidation().submit(op);
  for (const auto &dev : devices_) {
    if (dev.second != did) continue;
    invq::InvalidationOp dt = make_op(invq::kCacheDevTlb, invq::Scope::kDevice);
    dt.source_id = dev.first;
    engine_.invalidation().submit(dt);
  }
}

void BindLayer::flush_first_level(const invq::InvalidationOp &owner_op) {
  // The owner names the caches, PASID and range (PASID-based IOTLB and device-TLB
  // invalidations, VT-d 6.5.2.4 and 6.5.2.6); cache_invalidate has checked and re-tagged it.
  engine_.invalidation().submit(owner_op);
}

void BindLayer::flush_domain(uint16_t did) {
  invq::InvalidationOp op =
      make_op(invq::kCacheIotlb | invq::kCachePaging | invq::kCachePasid, invq::Scope::kDomain);
  op.did = did;
  engine_.invalidation().submit(op);
}

void BindLayer::sync() {
  engine_.invalidate_wait();
}

int BindLayer::bind_unreported(uint32_t owner, uint16_t sid, uint32_t pasid,
                               const BindRequest &req) {
  if (!feature(kNestingFeatBindPgtbl)) return -EOPNOTSUPP;
  const EngineConfig &ec = engine_.config();
  if (req.flags & ~kBindAllFlags) return -EINVAL;
  uint8_t fl_levels;
  if (req.addr_width == 48) {
    fl_levels = 4;
  } else if (req.addr_width == 57) {
    if (!ec.first_level_5) return -EOPNOTSUPP;
    fl_levels = 5;
  } else {
    return -EINVAL;
  }
  if ((req.fl_root_gpa & (kPage - 1)) || pasid >= (1u << ec.pasid_bits)) return -EINVAL;
  const bool syswide = feature(kNestingFeatSyswidePasid);
  if (req.guest_pasid != PasidAllocator::kNoGuestPasid && req.guest_pasid >= (1u << 20))
    return -EINVAL;

  std::lock_guard lock(mu_);
  if (!pasids_.has_owner(owner)) return -ENOENT;
  auto dev = devices_.find(sid);
  if (dev == devices_.end()) return -ENOENT;
  const uint16_t did = dev->second;
  Domain &d = domains_[did];
  if (d.owner != owner) return -EPERM;
  if (syswide && pasid != kDefaultPasid && pasids_.owner_of(pasid) != owner) return -EPERM;
  if (!d.nesting) return -EINVAL;
  if (req.guest_pasid != PasidAllocator::kNoGuestPasid && syswide && pasid != kDefaultPasid) {
    uint32_t host;
    if (pasids_.guest_to_host(owner, req.guest_pasid, &host) != 0 || host != pasid) return -EINVAL;
  }
  // The root must be guest memory the domain lets the IOMMU read: anything else would make
  // every translation fault at best, or read host memory the guest was never given at worst.
  if (!sl::walk(mem_, sl_config(d), req.fl_root_gpa, kAccessRead).ok) return -EINVAL;

  vtd::PasidEntry pe;
  pe.present = true;
  pe.pgtt = vtd::Pgtt::kNested;
  pe.aw = uint8_t(d.levels - 2);
  pe.sl_root = d.root;
  pe.did = did;
  pe.slade = d.ad;
  pe.sre = req.flags & kBindSre;
  pe.wpe = req.flags & kBindWpe;
  pe.eafe = req.flags & kBindEafe;
  pe.fl_levels = fl_levels;
  pe.fl_root = req.fl_root_gpa;
  uint64_t w[8];
  vtd::encode_pasid_entry(w, pe);
  // PCD/PWT live at bits 95/94 (Linux's 2020 pasid_set_pcd/pasid_set_pwt); bits 87/88 are
  // PWSNP/PGSNP, snoop controls that are not the guest's to set.
  w[1] |= (req.flags & kBindPcd ? vtd::kPtePcd : 0) | (req.flags & kBindPwt ? vtd::kPtePwt : 0);

  int err;
  const uint64_t pa = pasid_entry_address(sid, pasid, true, &err);
  if (!pa) return err ? err : -ENOMEM;
  const auto key = std::make_pair(sid, pasid);
  const bool live = bindings_.count(key) || pasid == kDefaultPasid;
  if (live) {
    // Words 0 (present, PGTT, SL root, AW) and 1 (DID) are the domain's; the first-level
    // fields all sit in word 2. Writing word 1's hints and word 2 first and word 0 last means
    // a concurrent walker sees either the old translation or the new one, never a mix and
    // never a not-present gap (for PASID 0, PGTT flips 2 -> 3 in the final store).
    mem_.write64(pa + 8, w[1]);
    mem_.write64(pa + 16, w[2]);
    mem_.write64(pa, w[0]);
  } else {
    for (int i = 7; i >= 1; --i) mem_.write64(pa + 8 * unsigned(i), w[i]);
    mem_.write64(pa, w[0]);
  }
  flush_pasid_entry(did, sid, pasid);
  sync();
  bindings_[key] = {owner, did, req};
  return 0;
}

// Takes the binding's entry out of service (PASID 0: back to second-level only) with a single
// store to word 0 and queues the invalidations; the caller waits, then unbind_finish scrubs.
int BindLayer::unbind_begin(uint16_t sid, uint32_t pasid) {
  const Binding &b = bindings_.at({sid, pasid});
  int err;
  const uint64_t pa = pasid_entry_address(sid, pasid, false, &err);
  if (pa) {
    if (pasid == kDefaultPasid) {
      uint64_t w[8];
      rid_pasid_words(domains_[b.did], b.did, w);
      mem_.write64(pa, w[0]);
    } else {
      mem_.write64(pa, 0);
    }
  }
  flush_pasid_entry(b.did, sid, pasid);
  return 0;
}

// Clears the first-level fields only after the wait, so that a walker which read the old word
// 0 just before the switch never pairs it with a zeroed root. A PASID table left empty is
// unlinked from the directory and reported in *unlinked, for free_structure_pages: otherwise an
// owner cycling bind/unbind over PASIDs 64 apart would use up the structure pages every other
// owner and the host need.
void BindLayer::unbind_finish(uint16_t sid, uint32_t pasid, std::vector<uint64_t> *unlinked) {
  int err;
  if (const uint64_t pa = pasid_entry_address(sid, pasid, false, &err)) {
    if (pasid == kDefaultPasid) {
      uint64_t w[8];
      const uint16_t did = bindings_.at({sid, pasid}).did;
      rid_pasid_words(domains_[did], did, w);
      for (int i = 1; i < 8; ++i) mem_.write64(pa + 8 * unsigned(i), w[i]);
    } else {
      for (int i = 1; i < 8; ++i) mem_.write64(pa + 8 * unsigned(i), 0);
      if (uint64_t t = structures_.unlink_pasid_table_if_empty(sid, pasid)) unlinked->push_back(t);
    }
  }
  bindings_.erase({sid, pasid});
}

// A walker that read a directory entry before it was cleared may still be reading the table
// it pointed at; a wait (a grace period with drain on) must pass before the page is reused.
void BindLayer::free_structure_pages(const std::vector<uint64_t> &pages, bool wait) {
  if (pages.empty()) return;
  if (wait) sync();
  for (uint64_t p : pages) structure_pages_.free(p);
}

int BindLayer::unbind_unreported(uint32_t owner, uint16_t sid, uint32_t pasid) {
  if (!feature(kNestingFeatBindPgtbl)) return -EOPNOTSUPP;
  if (pasid >= (1u << engine_.config().pasid_bits)) return -EINVAL;
  std::lock_guard lock(mu_);
  if (!pasids_.has_owner(owner)) return -ENOENT;
  if (feature(kNestingFeatSyswidePasid) && pasid != kDefaultPasid &&
      pasids_.owner_of(pasid) != owner)
    return -EPERM;
  auto it = bindings_.find({sid, pasid});
  if (it == bindings_.end()) return -ENOENT;
  if (it->second.owner != owner) return -EPERM;
  unbind_begin(sid, pasid);
  sync();
  std::vector<uint64_t> unlinked;
  unbind_finish(sid, pasid, &unlinked);
  free_structure_pages(unlinked, true);
  return 0;
}

bool BindLayer::binding(uint16_t sid, uint32_t pasid, BindingInfo *out) {
  std::lock_guard lock(mu_);
  auto it = bindings_.find({sid, pasid});
  if (it == bindings_.end()) return false;
  if (out) *out = {it->second.owner, it->second.did, it->second.req};
  return true;
}

// ---------------------------------------------------------------------------------------------
// First-level owner's invalidations

int BindLayer::resolve_pasid(uint32_t owner, uint16_t sid, uint32_t pasid, uint32_t flags,
                             uint32_t *host) const {
  if (!(flags & kInvGuestPasid)) {
    *host = pasid;
    return 0;
  }
  if (feature(kNestingFeatSyswidePasid) && pasids_.guest_to_host(owner, pasid, host) == 0) return 0;
  for (const auto &b : bindings_)
    if (b.first.first == sid && b.second.owner == owner && b.second.req.guest_pasid == pasid) {
      *host = b.first.second;
      return 0;
    }
  return -ENOENT;
}

int BindLayer::owner_ops(uint32_t owner, const invq::InvalidationOp &op, uint32_t flags,
                         std::vector<invq::InvalidationOp> *out) const {
  const bool targeted = op.scope == invq::Scope::kPasid || op.scope == invq::Scope::kRange;
  auto &ops = *out;
  if (targeted) {
    uint32_t pasid;
    if (int r = resolve_pasid(owner, op.source_id, op.pasid, flags, &pasid); r != 0) return r;
    if (pasid >= (1u << engine_.config().pasid_bits)) return -EINVAL;
    if (feature(kNestingFeatSyswidePasid) && pasid != kDefaultPasid &&
        pasids_.owner_of(pasid) != owner)
      return -EPERM;
    auto it = bindings_.find({op.source_id, pasid});
    if (it == bindings_.end()) return -ENOENT;
    if (it->second.owner != owner) return -EPERM;
    invq::InvalidationOp fwd = op;
    fwd.did = it->second.did;  // the owner does not know (and must not choose) the host DID
    fwd.pasid = pasid;
    ops.push_back(fwd);
  } else {
    // "Everything I may touch": each of the owner's bindings, PASID-selective.
    for (const auto &b : bindings_) {
      if (b.second.owner != owner) continue;
      if (op.scope == invq::Scope::kDevice && b.first.first != op.source_id) continue;
      invq::InvalidationOp fwd = op;
      fwd.scope = invq::Scope::kPasid;
      fwd.did = b.second.did;
      fwd.source_id = b.first.first;
      fwd.pasid = b.first.second;
      ops.push_back(fwd);
    }
  }
  return 0;
}

int BindLayer::cache_invalidate_unreported(uint32_t owner, const invq::InvalidationOp &op,
                                           uint32_t flags) {
  if (!feature(kNestingFeatCacheInvld)) return -EOPNOTSUPP;
  if ((flags & ~uint32_t(kInvGuestPasid)) || op.caches == 0 || (op.caches & ~invq::kAllCaches))
    return -EINVAL;
  // The context cache and GPA-indexed operations concern the host's structures and second
  // level, which a first-level owner has no business flushing.
  if ((op.caches & invq::kCacheContext) || op.addr_is_gpa) return -EPERM;
  const bool targeted = op.scope == invq::Scope::kPasid || op.scope == invq::Scope::kRange;
  if (op.scope == invq::Scope::kRange) {
    const uint64_t page = op.addr >> invq::kPageShift;
    if ((op.addr & (invq::kPageSize - 1)) || op.npages == 0 || page > invq::kMaxPageNumber ||
        op.npages - 1 > invq::kMaxPageNumber - page)
      return -EINVAL;
  } else if (!targeted && op.scope != invq::Scope::kDomain && op.scope != invq::Scope::kGlobal &&
             op.scope != invq::Scope::kDevice) {
    return -EINVAL;
  }
  std::lock_guard lock(mu_);
  if (!pasids_.has_owner(owner)) return -ENOENT;
  std::vector<invq::InvalidationOp> ops;
  if (int r = owner_ops(owner, op, flags, &ops); r != 0) return r;
  for (const auto &o : ops) flush_first_level(o);
  sync();
  return 0;
}

}  // namespace nestor
