#include "nestor/vtd/personality.h"

#include <cerrno>

namespace nestor {

int VtdPersonality::set_root_table(uint64_t pa) {
  if (pa & 0xFFF || (pa >> cfg_.host_address_width) != 0) return -EINVAL;
  root_table_.store(pa, std::memory_order_release);
  root_set_.store(true, std::memory_order_release);
  return 0;
}

void VtdPersonality::clear_root_table() {
  root_set_.store(false, std::memory_order_release);
  root_table_.store(0, std::memory_order_release);
}

bool VtdPersonality::read_context(uint16_t sid, vtd::ContextEntry *ctx, Fault *fault, bool *fpd) {
  *fpd = false;
  const unsigned haw = cfg_.host_address_width;
  auto structure_fault = [&](FaultReason r) {
    *fault = {r, FaultStage::kStructures, 0, 0};
    return false;
  };
  if (!root_set_.load(std::memory_order_acquire))
    return structure_fault(FaultReason::kRootTableAddressInvalid);
  // Scalable-mode root entry (VT-d 9.2): 128 bits per bus.
  const uint64_t root_pa = root_table() + uint64_t(sid >> 8) * 16;
  uint64_t root[2];
  if (!mem_.read64(root_pa, &root[0]) || !mem_.read64(root_pa + 8, &root[1]))
    return structure_fault(FaultReason::kRootEntryAccess);
  const uint8_t devfn = uint8_t(sid & 0xFF);
  uint64_t ctx_table;
  if (FaultReason r = vtd::decode_root(root, devfn, haw, &ctx_table); r != FaultReason::kNone)
    return structure_fault(r);
  // Scalable-mode context entry (VT-d 9.4): 256 bits; each half of the root entry points at a
  // table of 128 of them.
  const uint64_t ctx_pa = ctx_table + uint64_t(devfn & 0x7F) * 32;
  uint64_t w[4];
  for (int i = 0; i < 4; ++i)
    if (!mem_.read64(ctx_pa + 8 * unsigned(i), &w[i]))
      return structure_fault(FaultReason::kContextEntryAccess);
  vtd::DecodeError err = vtd::decode_context(w, haw, ctx);
  *fpd = err.fpd;
  if (err.reason != FaultReason::kNone) return structure_fault(err.reason);
  return true;
}

bool VtdPersonality::read_pasid_entry(const vtd::ContextEntry &ctx, uint32_t pasid,
                                      vtd::PasidEntry *pe, Fault *fault, bool *fpd) {
  const unsigned haw = cfg_.host_address_width;
  auto structure_fault = [&](FaultReason r) {
    *fault = {r, FaultStage::kStructures, 0, 0};
    return false;
  };
  if (!pasid_in_range(ctx, pasid)) return structure_fault(FaultReason::kPasidTooLarge);
  // PASID directory entry (VT-d 9.5): PASID[19:6] indexes the directory.
  uint64_t pde;
  if (!mem_.read64(ctx.pasid_dir + uint64_t(pasid >> 6) * 8, &pde))
    return structure_fault(FaultReason::kPasidDirEntryAccess);
  uint64_t table;
  vtd::DecodeError err = vtd::decode_pasid_dir(pde, haw, &table);
  *fpd = err.fpd;
  if (err.reason != FaultReason::kNone) return structure_fault(err.reason);
  // PASID-table entry (VT-d 9.6): 512 bits, PASID[5:0] indexes the table.
  uint64_t w[8];
  const uint64_t pe_pa = table + uint64_t(pasid & 0x3F) * 64;
  for (int i = 0; i < 8; ++i)
    if (!mem_.read64(pe_pa + 8 * unsigned(i), &w[i]))
      return structure_fault(FaultReason::kPasidEntryAccess);
  err = vtd::decode_pasid_entry(w, haw, cfg_.sagaw, cfg_.first_level_5, pe);
  *fpd = *fpd || err.fpd;
  if (err.reason != FaultReason::kNone) return structure_fault(err.reason);
  return true;
}

bool VtdPersonality::resolve(uint64_t stamp, const Request &req, WalkContext *out, Fault *fault,
                             bool *fpd) {
  // 1. The source-id's bus selects the root entry and its devfn the context entry (read
  //    through the context cache when there is one).
  vtd::ContextEntry ctx;
  *fpd = false;
  if (!context_ || !context_->lookup(req.source_id, &ctx)) {
    if (!read_context(req.source_id, &ctx, fault, fpd)) return false;
    if (context_) {
      const bool kept = context_->fill(stamp, req.source_id, ctx);
      if (hooks_ && hooks_->wants(kEventCacheFill)) [[unlikely]] {
        FillEvent f;
        f.cache = EventCache::kContext;
        f.accepted = kept;
        f.source_id = req.source_id;
        hooks_->emit({.kind = kEventCacheFill, .fill = &f});
      }
    }
  }
  // FPD in the context entry (and in the PASID directory entry) covers every structure and
  // paging entry reached through it, not just the entry itself.
  const bool ctx_fpd = ctx.fpd;
  auto context_fault = [&](FaultReason r) {
    *fault = {r, FaultStage::kStructures, 0, req.iova};
    *fpd = ctx_fpd;
    return false;
  };
  // 2. A request with PASID needs the context's PASID enable; one without takes the context's
  //    RID_PASID and RID_PRIV.
  if (req.has_pasid && !ctx.pasid_enable) return context_fault(FaultReason::kContextPasidDisabled);
  const uint32_t pasid = req.has_pasid ? req.pasid : ctx.rid_pasid;
  // A RID_PASID the context's own PASID directory cannot hold is a programming error of the
  // context entry (VT-d 7.1.3 fault 0x48), not a request for a too-large PASID (0x46).
  if (!req.has_pasid && !pasid_in_range(ctx, ctx.rid_pasid))
    return context_fault(FaultReason::kRidPasidError);
  const bool privileged = req.has_pasid ? req.privileged : ctx.rid_priv;
  // 3. The PASID selects a PASID-directory entry and, in the table it points at, the PASID
  //    entry (through the PASID cache when there is one).
  vtd::PasidEntry pe;
  if (!pasid_ || !pasid_->lookup(req.source_id, pasid, &pe)) {
    bool dir_fpd = false;
    if (!read_pasid_entry(ctx, pasid, &pe, fault, &dir_fpd)) {
      *fpd = ctx_fpd || dir_fpd;
      return false;
    }
    pe.fpd = pe.fpd || dir_fpd;  // the directory entry's FPD travels with the cached PASID entry
    if (pasid_) {
      const bool kept = pasid_->fill(stamp, req.source_id, pasid, pe.did, pe);
      if (hooks_ && hooks_->wants(kEventCacheFill)) [[unlikely]] {
        FillEvent f;
        f.cache = EventCache::kPasid;
        f.accepted = kept;
        f.source_id = req.source_id;
        f.pasid = pasid;
        f.domain = pe.did;
        hooks_->emit({.kind = kEventCacheFill, .fill = &f});
      }
    }
  }
  // 4. Its PGTT says which stages to walk, its DID and the PASID tag what the walk caches.
  *out = walk_context(pe, pasid, privileged, ctx_fpd || pe.fpd);
  return true;
}

WalkContext VtdPersonality::walk_context(const vtd::PasidEntry &pe, uint32_t pasid, bool privileged,
                                         bool fpd) const {
  WalkContext c;
  switch (pe.pgtt) {
    case vtd::Pgtt::kPassThrough:
      c.stages = StageSet::kPassThrough;
      break;
    case vtd::Pgtt::kFirstLevel:
      c.stages = StageSet::kFirstOnly;
      break;
    case vtd::Pgtt::kNested:
      c.stages = StageSet::kNested;
      break;
    case vtd::Pgtt::kSecondLevel:
      c.stages = StageSet::kSecondOnly;
      break;
  }
  c.domain = pe.did;
  c.space = pasid;
  c.privileged = privileged;
  c.fpd = fpd;
  c.slc = {.root = pe.sl_root,
           .levels = uint8_t(pe.sl_levels()),
           .host_width = cfg_.host_address_width,
           .ad_enabled = pe.slade,
           .execute_enable = pe.slee,
           .large_2m = cfg_.second_level_2m,
           .large_1g = cfg_.second_level_1g};
  c.flc = {.root = pe.fl_root,
           .levels = pe.fl_levels,
           // Nested: GPAs beyond the second level are reported as 0x74 when resolved, not as
           // reserved.
           .host_width = pe.pgtt == vtd::Pgtt::kNested ? uint8_t(52) : cfg_.host_address_width,
           .sre = pe.sre,
           .wpe = pe.wpe,
           .ere = pe.ere,
           .eafe = pe.eafe,
           .nxe = pe.nxe,
           .smep = pe.smep,
           .update_ad = cfg_.first_level_ad,
           .large_1g = cfg_.first_level_1g};
  return c;
}

}  // namespace nestor
