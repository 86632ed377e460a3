// EngineCore's request path (nestor/engine.h): resolution (memo, handles), batches, the drain
// bracket, fault recording. Template definitions, included where the core is instantiated for
// a personality (engine_core_vtd.cpp); the pipeline is in translate_pipeline.h.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <optional>

#include "nestor/engine.h"
#include "nestor/invalidation.h"

namespace nestor {

namespace core_detail {

// Engine ids are never reused, so a per-thread memo entry of a destroyed engine can never
// match one allocated at the same address.
inline uint64_t next_engine_id() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1);
}

inline CacheSetConfig cache_set_config(const EngineConfig &cfg) {
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

}  // namespace core_detail

template <Personality P>
EngineCore<P>::EngineCore(const EngineConfig &cfg, MachineMemory &mem, FaultLog &faults,
                          const typename P::Config &personality_config)
    : cfg_(cfg),
      id_(core_detail::next_engine_id()),
      mem_(mem),
      faults_(faults),
      caches_(core_detail::cache_set_config(cfg)),
      personality_(mem_, personality_config, cfg.caching ? &caches_.context() : nullptr,
                   cfg.caching ? &caches_.pasid() : nullptr) {
  caches_.set_event_hooks(&hooks_);
  // A personality that fills structure caches of its own may report those fills too.
  if constexpr (requires(P & p, const EventHooks *h) { p.set_event_hooks(h); })
    personality_.set_event_hooks(&hooks_);
  update_gate();
}

template <Personality P>
void EngineCore<P>::update_gate() {
  gate_.store((cfg_.drain ? kGateDrain : 0) | (hooks_.wants(kEventTranslate) ? kGateEvents : 0),
              std::memory_order_relaxed);
}

template <Personality P>
int EngineCore<P>::add_event_hook(uint32_t kinds, EventCallback callback, void *user) {
  std::lock_guard lock(hook_mu_);
  const int id = hooks_.add(kinds, callback, user);
  update_gate();
  return id;
}

template <Personality P>
int EngineCore<P>::remove_event_hook(int id) {
  std::lock_guard lock(hook_mu_);
  const int r = hooks_.remove(id);
  update_gate();
  return r;
}

template <Personality P>
Result EngineCore<P>::fail(const Request &req, Fault f, bool fpd, const Resolved *rs) {
  if (f.address == 0 && f.stage == FaultStage::kStructures) f.address = req.iova;
  if (!fpd) faults_.record({req, f});
  Result r;
  r.fault = f;
  if (hooks_.wants(kEventFault)) [[unlikely]] {
    TranslateEvent ev;
    ev.request = req;
    ev.result = r;
    ev.fault_suppressed = fpd;
    if (rs) {
      ev.source = rs->stages == StageSet::kPassThrough ? TranslateSource::kPassThrough
                                                       : TranslateSource::kWalk;
      ev.stages = rs->stages;
      ev.domain = rs->domain;
      ev.space = rs->space;
    } else {
      ev.source = TranslateSource::kStructures;
    }
    emit_translate(kEventFault, ev);
  }
  return r;
}

template <Personality P>
bool EngineCore<P>::resolve(uint64_t stamp, const Request &req, Resolved *out, Result *fault_out,
                            bool *fpd_out) {
  Fault f;
  bool fpd = false;
  if (personality_.resolve(stamp, req, out, &f, &fpd)) return true;
  *fault_out = fail(req, f, fpd);
  if (fpd_out) *fpd_out = fpd;
  return false;
}

template <Personality P>
Result EngineCore<P>::translate(const Request &req) {
  // Drain needs every translation bracketed in the epoch domain, and translation events need
  // the observed path; without either, this predictable branch is the whole cost.
  if (gate_.load(std::memory_order_relaxed)) [[unlikely]]
    return translate_gated(req);
  return translate_undrained(req);
}

template <Personality P>
Result EngineCore<P>::translate_gated(const Request &req) {
  std::optional<EngineInvalidation::TranslationGuard> drain_guard;
  if (cfg_.drain) drain_guard.emplace(*inv_);
  if (!hooks_.wants(kEventTranslate)) return translate_undrained(req);
  return translate_observed(req);
}

template <Personality P>
void EngineCore<P>::describe(TranslateEvent *ev, const Resolved &rs, const PipelineNotes &notes) {
  ev->stages = rs.stages;
  ev->domain = rs.domain;
  ev->space = rs.space;
  ev->fault_suppressed = rs.fpd;
  if (rs.stages == StageSet::kPassThrough)
    ev->source = TranslateSource::kPassThrough;
  else if (notes.walked)
    ev->source = TranslateSource::kWalk;
  else
    ev->source = TranslateSource::kIotlb;
}

// The request path with its outcome reported: the same steps, with an event filled on the way.
template <Personality P>
Result EngineCore<P>::translate_observed(const Request &req) {
  TranslateEvent ev;
  ev.request = req;
  ev.result = translate_request_impl<true>(req, &ev);
  emit_translate(kEventTranslate, ev);
  return ev.result;
}

template <Personality P>
typename EngineCore<P>::RecentResolution &EngineCore<P>::recent_resolution(uint16_t source_id,
                                                                           uint32_t pasid) {
  thread_local std::array<RecentResolution, kRecentResolutions> recent;
  return recent[(source_id ^ pasid) & (kRecentResolutions - 1)];
}

template <Personality P>
Result EngineCore<P>::translate_undrained(const Request &req) {
  return translate_request_impl<false>(req, nullptr);
}

template <Personality P>
template <bool kObserved>
[[gnu::always_inline]] inline Result EngineCore<P>::translate_request_impl(const Request &req,
                                                                           TranslateEvent *ev) {
  // The pipeline, and with kObserved where its answer came from.
  auto run = [&](const WalkStamp &stamp, const Resolved &rs) {
    if constexpr (kObserved) {
      PipelineNotes notes;
      const Result r = translate_resolved(stamp, rs, req, &notes);
      describe(ev, rs, notes);
      return r;
    } else {
      return translate_resolved(stamp, rs, req);
    }
  };
  bool fpd = false;
  auto resolve_failed = [&] {
    if constexpr (kObserved) {
      ev->source = TranslateSource::kStructures;
      ev->fault_suppressed = fpd;
    }
  };
  if (cfg_.caching) {
    // Same protocol as translate_in(): the generation is read before resolving, and a walk of a
    // resolution still current stamps itself (walk_stamp); the resolution's stamp is what it
    // falls back on when the generation has moved meanwhile.
    const uint64_t gen = caches_.generation();
    const uint8_t flags = uint8_t(req.has_pasid | (req.privileged << 1));
    RecentResolution &m = recent_resolution(req.source_id, req.pasid);
    if (m.engine_id == id_ && m.generation == gen && m.source_id == req.source_id &&
        m.pasid == req.pasid && m.flags == flags) {
      // The IOTLB asked straight from the memo, as the handle path does: a hit needs neither
      // the copy below nor the pipeline's two calls and frames.
      const bool probe = !kObserved && m.rs.stages != StageSet::kPassThrough;
      if (probe) {
        Result r;
        if (iotlb_answer(m.rs, req, &r, nullptr)) return r;
      }
      // A copy: an I/O callback reached from the walk may translate on this thread again.
      const Resolved rs = m.rs;
      if (!probe) return run({m.stamp, gen}, rs);
      PipelineNotes notes;
      notes.iotlb_probed = true;
      return translate_resolved({m.stamp, gen}, rs, req, &notes);
    }
    const uint64_t stamp = caches_.clock().now();
    Result fault;
    if (!resolve(stamp, req, &m.rs, &fault, kObserved ? &fpd : nullptr)) {
      m.engine_id = 0;
      resolve_failed();
      return fault;
    }
    m.engine_id = id_;
    m.generation = gen;
    m.stamp = stamp;
    m.source_id = req.source_id;
    m.pasid = req.pasid;
    m.flags = flags;
    const Resolved rs = m.rs;
    return run({stamp, gen}, rs);
  }
  // Taken before anything is read: a fill is refused if an invalidation of its key was issued
  // after this point, so a walk racing an invalidation never leaves a stale entry behind.
  const uint64_t stamp = caches_.clock().now();
  Resolved rs;
  Result fault;
  if (!resolve(stamp, req, &rs, &fault, kObserved ? &fpd : nullptr)) {
    resolve_failed();
    return fault;
  }
  return run({stamp}, rs);
}

// Inlined into AddressSpace::translate, so a caller's loop reaches a micro-TLB hit through one
// call (BM_Hit_Handle/64 6.7 -> 5.7 ns), and that call is a leaf (5.3 -> 4.2 ns).
template <Personality P>
template <class Handle>
[[gnu::always_inline]] inline Result EngineCore<P>::translate_in(Handle &as, const Request &req) {
  if (!cfg_.caching) return translate(req);
  if (gate_.load(std::memory_order_relaxed)) [[unlikely]]
    return translate_in_gated(as, req);
  // The micro-TLB hit alone, here in the caller: with the IOTLB probe and the walk behind a
  // call (translate_in_miss), the hit path needs no frame and saves no registers. Same tags
  // as translate_in_impl's.
  const uint64_t gen = caches_.generation();
  if (as.generation_ == gen) [[likely]] {
    const uint64_t tag = gen + caches_.domain_generation(as.resolved_.domain);
    const uint64_t page = req.iova >> 12;
    Result r;
    if (micro_answer(as.micro_[page & (Handle::kMicroEntries - 1)], page, tag, req, &r)) return r;
  }
  return translate_in_miss(as, req);
}

template <Personality P>
template <class MicroEntry>
[[gnu::always_inline]] inline bool EngineCore<P>::micro_answer(const MicroEntry &m, uint64_t page,
                                                               uint64_t tag, const Request &req,
                                                               Result *r) {
  if (m.page != page || m.generation != tag || (req.access & ~m.allowed) != 0) return false;
  r->ok = true;
  r->t.out = m.out_page | (req.iova & 0xFFF);
  r->t.page_shift = m.page_shift;
  r->t.perms = m.perms;
  r->t.level = m.level;
  return true;
}

template <Personality P>
template <class Handle>
[[gnu::noinline]] Result EngineCore<P>::translate_in_miss(Handle &as, const Request &req) {
  return translate_in_impl<false, true>(as, req, nullptr);
}

template <Personality P>
template <class Handle>
[[gnu::noinline]] Result EngineCore<P>::translate_in_gated(Handle &as, const Request &req) {
  // Drain: bracketed like translate() so waits also cover handle translations.
  std::optional<EngineInvalidation::TranslationGuard> drain_guard;
  if (cfg_.drain) drain_guard.emplace(*inv_);
  if (!hooks_.wants(kEventTranslate)) return translate_in_impl<false, false>(as, req, nullptr);
  TranslateEvent ev;
  ev.request = req;
  ev.result = translate_in_impl<true, false>(as, req, &ev);
  emit_translate(kEventTranslate, ev);
  return ev.result;
}

template <Personality P>
template <bool kObserved, bool kMicroChecked, class Handle>
[[gnu::always_inline]] inline Result EngineCore<P>::translate_in_impl(Handle &as,
                                                                      const Request &req,
                                                                      TranslateEvent *ev) {
  // One result object for every return, built in place (NRVO): a hit assembled in a local and
  // then copied out was written field by field and read back 16 bytes at a time, two failed
  // store-to-load forwards that were half of an IOTLB hit's time through a handle.
  Result r;
  // Read before resolving: an invalidation that lands after this read bumps the generation
  // again once applied, so the next translation re-resolves.
  const uint64_t gen = caches_.generation();
  if (as.generation_ != gen) {
    const uint64_t stamp = caches_.clock().now();
    bool fpd = false;
    // Its own fault object: r's address given away here would keep the hit paths below from
    // building r in registers.
    Result fault;
    if (!resolve(stamp, req, &as.resolved_, &fault, kObserved ? &fpd : nullptr)) {
      as.generation_ = kStaleGeneration;
      if constexpr (kObserved) {
        ev->source = TranslateSource::kStructures;
        ev->fault_suppressed = fpd;
      }
      r = fault;
      return r;
    }
    as.stamp_ = stamp;
    as.generation_ = gen;
  }
  // The micro-TLB's tag: moves with every operation on the handle's domain (its bucket) as
  // well as with the resolution generation, and with nothing else (CacheSet).
  const uint64_t tag = gen + caches_.domain_generation(as.resolved_.domain);
  const uint64_t page = req.iova >> 12;
  auto &m = as.micro_[page & (Handle::kMicroEntries - 1)];
  if (!kMicroChecked && micro_answer(m, page, tag, req, &r)) {
    if constexpr (kObserved) {
      describe(ev, as.resolved_, PipelineNotes{});
      ev->source = TranslateSource::kHandleCache;
    }
    return r;
  }
  PipelineNotes notes;
  // Tagged with the generations read before the lookup: an invalidation applied meanwhile has
  // moved one of them on, so this entry can never outlive it.
  auto remember = [&] {
    m.page = page;
    m.out_page = r.t.out & ~uint64_t{0xFFF};
    m.generation = tag;
    m.page_shift = r.t.page_shift;
    m.perms = r.t.perms;
    // As the hit used to derive it (the IOTLB's rule), now once per fill instead of per hit.
    m.level = uint8_t((r.t.page_shift - 12) / 9 + 1);
    m.allowed = notes.write_ready ? r.t.perms : uint8_t(r.t.perms & ~kAccessWrite);
  };
  // The IOTLB asked here rather than through translate_resolved: on a hit that saves the
  // pipeline's frame and fault plumbing, about a third of a hit's instructions.
  if (!kObserved && as.resolved_.stages != StageSet::kPassThrough) {
    if (iotlb_answer(as.resolved_, req, &r, &notes)) {
      ++as.stats_.iotlb_hits;
      remember();
      return r;
    }
    notes.iotlb_probed = true;
  }
  // A walk stamps itself while the resolution is still current (EngineCore::walk_stamp).
  r = translate_resolved({as.stamp_, gen}, as.resolved_, req, &notes);
  if constexpr (kObserved) describe(ev, as.resolved_, notes);
  if (notes.iotlb != PipelineNotes::Iotlb::kNotLookedUp)
    ++(notes.iotlb == PipelineNotes::Iotlb::kHit ? as.stats_.iotlb_hits : as.stats_.iotlb_misses);
  if (r.ok) remember();
  return r;
}

template <Personality P>
template <class Handle>
void EngineCore<P>::translate_batch_in(Handle &as, const uint64_t *iovas, uint8_t access,
                                       Result *out, size_t n) {
  Request req = as.base_;
  req.access = access;
  if (n && cfg_.caching) {
    // Resolve once up front so the prefetches below use the right tags.
    req.iova = iovas[0];
    out[0] = translate_in(as, req);
  }
  const uint32_t key_space = iotlb_space(as.resolved_);
  // Request i + kTagsAhead gets its set's tag line requested, request i + kSlotAhead (whose tag
  // line has had kTagsAhead - kSlotAhead translations' time to arrive) its slot: on an IOTLB
  // far beyond the last-level cache both of a lookup's lines are then in flight early.
  constexpr size_t kTagsAhead = 32, kSlotAhead = 8;
  const bool prefetch = cfg_.caching && as.generation_ != kStaleGeneration;
  const uint16_t did = as.resolved_.domain;
  if (prefetch)
    for (size_t j = 1; j < n && j <= kTagsAhead; ++j)
      caches_.iotlb().prefetch_tags(did, key_space, iovas[j]);
  for (size_t i = cfg_.caching ? 1 : 0; i < n; ++i) {
    if (prefetch) {
      if (i + kTagsAhead < n) caches_.iotlb().prefetch_tags(did, key_space, iovas[i + kTagsAhead]);
      if (i + kSlotAhead < n) caches_.iotlb().prefetch_slot(did, key_space, iovas[i + kSlotAhead]);
    }
    req.iova = iovas[i];
    out[i] = translate_in(as, req);
  }
}

template <Personality P>
void EngineCore<P>::translate_batch(const Request *reqs, Result *out, size_t n) {
  // Observed: one event per request, as from n translate() calls.
  if (hooks_.wants(kEventTranslate)) [[unlikely]] {
    for (size_t i = 0; i < n; ++i) out[i] = translate(reqs[i]);
    return;
  }
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
      if (ok[i]) out[base + i] = translate_resolved({stamp}, rs[i], reqs[base + i]);
  }
}

template <Personality P>
EngineStats EngineCore<P>::stats() const {
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
