// The one translate pipeline, from a resolved PASID entry to a result: IOTLB lookup, walks that
// start from the deepest paging-structure-cache hit, fills. With caching off it is the same code
// with every lookup and fill compiled out (kCaching = false), so the uncached engine, the
// reference the cached one is checked against, cannot drift from it in anything but caching.
// Which entries an invalidation removes is CacheSet::apply's (nestor/cache_set.h). Template
// definitions of EngineCore (nestor/engine.h), included where it is instantiated.
#pragma once

#include <algorithm>
#include <array>

#include "nestor/engine.h"
#include "nestor/walkers/nested.h"

namespace nestor {
namespace pipeline_detail {

// IOTLB permission byte: first-level attribute bits in the low nibble (so a hit can be
// re-judged for either privilege and the PASID entry's SRE/WPE/ERE), second-level R/W/X above.
constexpr uint8_t pack_perms(uint8_t fl_attrs, uint8_t sl_perms) {
  return uint8_t((fl_attrs & 0xF) | ((sl_perms & 7) << 4));
}

// Second-level permissions are cached before SLEE: SL-only entries are shared by every PASID of
// the domain, which need not agree on SLEE, so the requester's SLEE is applied on each hit (and
// likewise its first-level SRE/WPE/ERE/SMEP and privilege).
inline uint8_t hit_perms(const caches::IotlbEntry &e, const WalkContext &c) {
  const uint8_t sl_perms = sl::apply_execute_enable((e.perms >> 4) & 7, c.slc.execute_enable);
  if (e.flags & caches::kIotlbSecondLevelOnly) return sl_perms;
  return uint8_t(fl::perms_for(e.perms & 0xF, c.privileged, c.flc) & sl_perms);
}

inline uint8_t level_of_shift(unsigned shift) {
  return uint8_t((shift - 12) / 9 + 1);
}

}  // namespace pipeline_detail

// Second-level walks that start below the deepest cached second-level non-leaf entry and
// refill the cache on the way down; first-level table pages resolve through the nested-table
// cache. Without caching, plain walks from the root. One instance per translation, on the stack.
template <Personality P, bool kCaching>
class PipelineTables {
 public:
  PipelineTables(EngineCore<P> &e, uint64_t stamp, uint16_t did, const sl::Config &slc)
      : e_(e), stamp_(stamp), did_(did), slc_(slc) {}

  sl::Result sl_walk(uint64_t gpa, uint8_t access) {
    if constexpr (!kCaching) {
      return sl::walk(e_.mem_, slc_, gpa, access);
    } else {
      sl::Start start;
      caches::PscEntry pe;
      for (unsigned level = caches::kPscMinLevel; level <= slc_.levels; ++level) {
        if (e_.caches_.psc().lookup_sl(did_, level, gpa, &pe)) {
          start = {int(level) - 1, pe.next_table, pe.attrs};
          break;
        }
      }
      sl::Path path;
      sl::Result r = sl::walk(e_.mem_, slc_, gpa, access, start, &path);
      const int top = start.level ? start.level : slc_.levels;
      // Non-leaf entries the walk went through are valid whatever the leaf said.
      for (int level = top; level >= int(caches::kPscMinLevel); --level) {
        if (!path.next_table[level]) break;
        const bool kept = e_.caches_.psc().fill_sl(stamp_, did_, unsigned(level), gpa,
                                                   {path.next_table[level], path.perms[level]});
        if (e_.hooks_.wants(kEventCacheFill)) [[unlikely]] {
          FillEvent f;
          f.cache = EventCache::kPscSecondLevel;
          f.accepted = kept;
          f.domain = did_;
          f.level = uint8_t(level);
          f.address = gpa & page_mask(caches::psc_level_shift(unsigned(level)));
          f.output = path.next_table[level];
          e_.note_fill(f);
        }
      }
      return r;
    }
  }

  // --- the Tables interface of fl::walk / nested::walk ---
  bool fetch_table(uint64_t gpa, int fl_level, bool is_root, uint64_t *hpa, WalkFault *f,
                   uint8_t *refs) {
    if constexpr (kCaching) {
      // Before anything is read through the page: a second-level change of it that this walk
      // misses is then seen by the invalidation announcing it (TablePageFilter::add).
      if (caches::TablePageFilter *marks = e_.caches_.table_pages()) marks->add(did_, gpa);
      caches::NestedTableEntry nt;
      if (!bypass_nested_tables_ && e_.caches_.psc().lookup_nested_table(did_, gpa, &nt) &&
          (nt.sl_perms & kAccessRead)) {
        *hpa = nt.hpa_page;
        remember(gpa, *hpa);
        return true;
      }
    }
    if (nested::beyond_second_level(gpa, slc_, fl_level, f)) return false;
    sl::Result r = sl_walk(gpa, kAccessRead);
    *refs = uint8_t(*refs + r.refs);
    if (!r.ok) {
      *f = nested::table_fault(r.fault, gpa, nested::table_read_denied(is_root));
      return false;
    }
    *hpa = r.t.out & page_mask(12);
    if constexpr (kCaching) {
      remember(gpa, *hpa);
      const bool kept = e_.caches_.psc().fill_nested_table(stamp_, did_, gpa, {*hpa, r.t.perms});
      if (e_.hooks_.wants(kEventCacheFill)) [[unlikely]] {
        FillEvent f;
        f.cache = EventCache::kNestedTable;
        f.accepted = kept;
        f.domain = did_;
        f.perms = r.t.perms;
        f.address = gpa & page_mask(12);
        f.output = *hpa;
        e_.note_fill(f);
      }
    }
    return true;
  }

  bool table_for_update(uint64_t gpa, int fl_level, uint64_t *hpa, WalkFault *f) {
    // A/D updates are rare (first touch): always check write permission with a real walk.
    if (nested::beyond_second_level(gpa, slc_, fl_level, f)) return false;
    sl::Result r = sl_walk(gpa, kAccessWrite);
    if (!r.ok) {
      *f = nested::table_fault(r.fault, gpa, WalkError::kTableWriteDenied);
      return false;
    }
    *hpa = r.t.out & page_mask(12);
    // The host remapped the table page after this walk read it through a cached translation
    // whose invalidation is still on its way: the A/D update (a compare-exchange at the new
    // page) then fails and the walker restarts, which must read the page where it now is, or
    // it would fail the same way until the invalidation lands.
    if constexpr (kCaching)
      for (const ReadTable &t : read_)
        if (t.gpa == (gpa & page_mask(12)) && t.hpa != *hpa) bypass_nested_tables_ = true;
    return true;
  }

  sl::Result final_walk(uint64_t gpa, uint8_t access) { return sl_walk(gpa, access); }

 private:
  void remember(uint64_t gpa, uint64_t hpa) {
    read_[next_read_++ % read_.size()] = {gpa & page_mask(12), hpa};
  }

  struct ReadTable {
    uint64_t gpa = ~uint64_t{0}, hpa = 0;
  };
  std::array<ReadTable, 5> read_{};  // the tables of one walk (five levels at most)
  unsigned next_read_ = 0;
  bool bypass_nested_tables_ = false;
  EngineCore<P> &e_;
  uint64_t stamp_;
  uint16_t did_;
  const sl::Config &slc_;
};

template <Personality P>
[[gnu::always_inline]] inline bool EngineCore<P>::iotlb_answer(const WalkContext &c,
                                                               const Request &req, Result *r,
                                                               PipelineNotes *notes) {
  using pipeline_detail::hit_perms;
  using pipeline_detail::level_of_shift;
  caches::IotlbEntry hit;
  const bool found = caches_.iotlb().lookup(c.domain, iotlb_space(c), req.iova, &hit);
  if (notes) notes->iotlb = found ? PipelineNotes::Iotlb::kHit : PipelineNotes::Iotlb::kMiss;
  if (!found) return false;
  const uint8_t perms = hit_perms(hit, c);
  const bool needs_dirty = (req.access & kAccessWrite) && !(hit.flags & caches::kIotlbDirty);
  // A denied or first-write access walks again: the walk decides the fault or sets D.
  if ((req.access & ~perms) != 0 || needs_dirty) return false;
  if (notes) notes->write_ready = hit.flags & caches::kIotlbDirty;
  r->ok = true;
  r->t.out = hit.hpa_base | (req.iova & ~page_mask(hit.page_shift));
  r->t.page_shift = hit.page_shift;
  r->t.perms = perms;
  r->t.level = level_of_shift(hit.page_shift);
  return true;
}

template <Personality P>
template <bool kCaching>
Result EngineCore<P>::walk_pipeline(const WalkStamp &walk_stamp_source, const WalkContext &c,
                                    const Request &req, PipelineNotes *notes) {
  using pipeline_detail::hit_perms;
  using pipeline_detail::level_of_shift;
  using pipeline_detail::pack_perms;
  Result r;
  if (c.stages == StageSet::kPassThrough) {
    if ((req.iova >> c.slc.host_width) != 0) {
      r.fault =
          P::walk_fault({WalkError::kInputBeyondWidth, FaultStage::kSecondLevel, 0, req.iova});
      return r;
    }
    if (notes) notes->write_ready = true;
    r.ok = true;
    r.t = {req.iova, 12, kAccessRead | kAccessWrite | kAccessExec, 0};
    return r;
  }
  const uint32_t key_space = iotlb_space(c);
  if constexpr (kCaching) {
    if (!(notes && notes->iotlb_probed) && iotlb_answer(c, req, &r, notes)) return r;
  }

  if (notes) notes->walked = true;
  // Taken where the walk starts, after the IOTLB missed: hits never need one.
  const uint64_t stamp = kCaching ? walk_stamp(walk_stamp_source) : 0;
  const sl::Config &slc = c.slc;
  PipelineTables<P, kCaching> tables(*this, stamp, c.domain, slc);
  caches::IotlbEntry fill;
  switch (c.stages) {
    case StageSet::kSecondOnly: {
      sl::Result s = tables.sl_walk(req.iova, req.access);
      caches_.iotlb().count_walk(s.refs);
      r.ok = s.ok;
      r.t = s.t;
      if (!s.ok) r.fault = P::walk_fault(s.fault);
      if (!s.ok) return r;
      fill.page_shift = s.t.page_shift;
      fill.hpa_base = s.t.out & page_mask(s.t.page_shift);
      fill.gpa_base = req.iova & page_mask(s.t.page_shift);
      fill.perms = pack_perms(0, s.raw_perms);
      fill.flags = caches::kIotlbSecondLevelOnly | (s.dirty ? caches::kIotlbDirty : 0);
      break;
    }
    case StageSet::kFirstOnly:
    case StageSet::kNested: {
      const fl::Config &flc = c.flc;
      fl::Start start;
      if constexpr (kCaching) {
        caches::PscEntry cached;
        for (unsigned level = caches::kPscMinLevel; level <= flc.levels; ++level) {
          if (caches_.psc().lookup_fl(c.domain, c.space, level, req.iova, &cached)) {
            start = {int(level) - 1, cached.next_table, cached.attrs};
            break;
          }
        }
      }
      fl::Path path;
      fl::Path *const path_out = kCaching ? &path : nullptr;
      uint8_t fl_attrs, sl_perms = 7;
      bool sl_dirty = true;
      if (c.stages == StageSet::kFirstOnly) {
        fl::DirectTables direct;
        fl::Result f =
            fl::walk(mem_, direct, flc, req.iova, req.access, c.privileged, start, path_out);
        caches_.iotlb().count_walk(f.refs);
        r.ok = f.ok;
        r.t = f.t;
        if (!f.ok) r.fault = P::walk_fault(f.fault);
        fl_attrs = f.attrs;
      } else {
        nested::Result n = nested::walk(mem_, tables, flc, slc, req.iova, req.access, c.privileged,
                                        start, path_out);
        caches_.iotlb().count_walk(n.refs);
        r.ok = n.ok;
        r.t = n.t;
        if (!n.ok) r.fault = P::walk_fault(n.fault);
        fl_attrs = n.fl_attrs;
        sl_perms = n.sl_perms;
        sl_dirty = n.sl_dirty;
        fill.gpa_base = n.gpa & page_mask(n.t.page_shift);
        fill.sl_page_shift = n.sl_page_shift;
        fill.flags = caches::kIotlbNested;
      }
      if constexpr (kCaching) {
        const int top = start.level ? start.level : flc.levels;
        for (int level = top; level >= int(caches::kPscMinLevel); --level) {
          if (!path.next_table[level]) break;
          const bool kept =
              caches_.psc().fill_fl(stamp, c.domain, c.space, unsigned(level), req.iova,
                                    {path.next_table[level], path.attrs[level]});
          if (hooks_.wants(kEventCacheFill)) [[unlikely]] {
            FillEvent f;
            f.cache = EventCache::kPscFirstLevel;
            f.accepted = kept;
            f.domain = c.domain;
            f.pasid = c.space;
            f.level = uint8_t(level);
            f.address = req.iova & page_mask(caches::psc_level_shift(unsigned(level)));
            f.output = path.next_table[level];
            note_fill(f);
          }
        }
      }
      if (!r.ok) return r;
      fill.page_shift = r.t.page_shift;
      fill.hpa_base = r.t.out & page_mask(r.t.page_shift);
      fill.perms = pack_perms(fl_attrs, sl_perms);
      if ((fl_attrs & fl::kAttrDirty) && sl_dirty) fill.flags |= caches::kIotlbDirty;
      break;
    }
    case StageSet::kPassThrough:
      return r;  // answered above, before the IOTLB
  }
  if constexpr (kCaching) {
    const bool kept = caches_.iotlb().fill(stamp, c.domain, key_space, req.iova, fill);
    if (hooks_.wants(kEventCacheFill)) [[unlikely]] {
      FillEvent f;
      f.cache = EventCache::kIotlb;
      f.accepted = kept;
      f.domain = c.domain;
      f.pasid = key_space;
      f.page_shift = fill.page_shift;
      f.perms = r.t.perms;
      f.address = req.iova & page_mask(fill.page_shift);
      f.output = fill.hpa_base;
      note_fill(f);
    }
  }
  if (notes) notes->write_ready = fill.flags & caches::kIotlbDirty;
  return r;
}

template <Personality P>
Result EngineCore<P>::translate_resolved(const WalkStamp &stamp, const Resolved &rs,
                                         const Request &req, PipelineNotes *notes) {
  Result r = cfg_.caching ? walk_pipeline<true>(stamp, rs, req, notes)
                          : walk_pipeline<false>(stamp, rs, req, notes);
  // One return object (NRVO): with a second one, a hit was copied out 16 bytes at a time from
  // where walk_pipeline had written it field by field, two failed store-to-load forwards.
  if (!r.ok) r = fail(req, r.fault, rs.fpd, &rs);
  return r;
}

}  // namespace nestor
