// The IOTLB algorithm QEMU's VT-d emulation uses, rebuilt from its published behaviour for a
// side-by-side comparison: one mutex around a GLib hash table, at most 1024 entries and the
// table emptied completely when full, one heap allocation per entry, and domain / PASID / page
// invalidations that visit every entry. It caches nestor's own walk results, so the two differ
// only in caching and invalidation design.
#pragma once

#include <glib.h>

#include <cstdint>
#include <mutex>

#include "nestor/engine.h"

namespace nestor::baseline {

class QemuStyleIotlb {
 public:
  static constexpr guint kMaxEntries = 1024;

  // `walker` must be an uncached engine (EngineConfig::caching = false).
  explicit QemuStyleIotlb(Engine &walker) : walker_(walker) {
    table_ = g_hash_table_new_full(hash_key, equal_key, g_free, g_free);
  }
  ~QemuStyleIotlb() { g_hash_table_destroy(table_); }
  QemuStyleIotlb(const QemuStyleIotlb &) = delete;
  QemuStyleIotlb &operator=(const QemuStyleIotlb &) = delete;

  // QEMU holds its IOMMU lock across lookup, walk and insert; so does this. *hit (optional):
  // whether this lookup counted as a hit, for callers that count per address space.
  Result translate(const Request &req, bool *hit = nullptr) {
    Key probe{req.source_id, req.has_pasid ? req.pasid : kNoPasid, req.iova >> 12};
    std::lock_guard lock(mu_);
    if (hit) *hit = false;
    if (auto *e = static_cast<Entry *>(g_hash_table_lookup(table_, &probe))) {
      if ((req.access & ~e->perms) == 0) {
        ++hits_;
        if (hit) *hit = true;
        Result r;
        r.ok = true;
        r.t.out = e->hpa_page | (req.iova & 0xFFF);
        r.t.page_shift = 12;
        r.t.perms = e->perms;
        r.t.level = 1;
        return r;
      }
    }
    ++misses_;
    const Result r = walker_.translate(req);
    if (!r.ok) return r;
    if (g_hash_table_size(table_) >= kMaxEntries) {
      g_hash_table_remove_all(table_);
      ++flushes_;
    }
    auto *key = g_new(Key, 1);
    *key = probe;
    auto *entry = g_new(Entry, 1);
    entry->hpa_page = r.t.out & ~uint64_t{0xFFF};
    entry->perms = r.t.perms;
    entry->did = did_of(req);
    g_hash_table_replace(table_, key, entry);
    return r;
  }

  // Page-selective invalidation within (did, pasid): visits every entry.
  void invalidate_pages(uint16_t did, uint32_t pasid, uint64_t addr, uint64_t npages) {
    Match m{did, pasid, addr >> 12, (addr >> 12) + npages};
    std::lock_guard lock(mu_);
    g_hash_table_foreach_remove(table_, match_page, &m);
  }
  void invalidate_pasid(uint16_t did, uint32_t pasid) {
    Match m{did, pasid, 0, ~uint64_t{0}};
    std::lock_guard lock(mu_);
    g_hash_table_foreach_remove(table_, match_page, &m);
  }
  void invalidate_domain(uint16_t did) {
    Match m{did, kAnyPasid, 0, ~uint64_t{0}};
    std::lock_guard lock(mu_);
    g_hash_table_foreach_remove(table_, match_page, &m);
  }
  void invalidate_all() {
    std::lock_guard lock(mu_);
    g_hash_table_remove_all(table_);
  }
  guint size() {
    std::lock_guard lock(mu_);
    return g_hash_table_size(table_);
  }
  // Lookups that hit / missed, and how often the full table was emptied to make room.
  struct Counts {
    uint64_t hits, misses, full_flushes;
  };
  Counts counts() {
    std::lock_guard lock(mu_);
    return {hits_, misses_, flushes_};
  }
  // The baseline learns each device's DID once (QEMU reads it from the context/PASID entry).
  void set_did(uint16_t source_id, uint16_t did) { dids_[source_id] = did; }

 private:
  static constexpr uint32_t kNoPasid = 0xFFFFFFFFu;
  static constexpr uint32_t kAnyPasid = 0xFFFFFFFEu;
  struct Key {
    uint16_t source_id;
    uint32_t pasid;
    uint64_t gfn;
  };
  struct Entry {
    uint64_t hpa_page;
    uint8_t perms;
    uint16_t did;
  };
  struct Match {
    uint16_t did;
    uint32_t pasid;
    uint64_t first, end;  // page numbers [first, end)
  };
  static guint hash_key(gconstpointer p) {
    const Key *k = static_cast<const Key *>(p);
    const uint64_t h = k->gfn ^ (uint64_t(k->pasid) << 20) ^ (uint64_t(k->source_id) << 42);
    return guint(h ^ (h >> 32));
  }
  static gboolean equal_key(gconstpointer a, gconstpointer b) {
    const Key *x = static_cast<const Key *>(a), *y = static_cast<const Key *>(b);
    return x->source_id == y->source_id && x->pasid == y->pasid && x->gfn == y->gfn;
  }
  static gboolean match_page(gpointer key, gpointer value, gpointer data) {
    const Key *k = static_cast<const Key *>(key);
    const Entry *e = static_cast<const Entry *>(value);
    const Match *m = static_cast<const Match *>(data);
    return e->did == m->did && (m->pasid == kAnyPasid || k->pasid == m->pasid) &&
           k->gfn >= m->first && k->gfn < m->end;
  }
  uint16_t did_of(const Request &req) const { return dids_[req.source_id]; }

  Engine &walker_;
  std::mutex mu_;
  uint64_t hits_ = 0, misses_ = 0, flushes_ = 0;
  GHashTable *table_;
  uint16_t dids_[65536] = {};
};

}  // namespace nestor::baseline
