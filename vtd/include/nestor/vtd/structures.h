// VT-d scalable-mode translation structures as laid out in memory: root table, scalable-mode
// context entries, PASID directory and PASID table entries. Decoders check what hardware checks
// and name the fault; encoders are used by the bind layer and tests. Bit positions were checked
// against the VT-d specification (chapter 9), Linux's drivers/iommu/intel/{iommu,pasid}.h and
// QEMU's intel_iommu_internal.h (docs/VTD-FORMATS.md).
#pragma once

#include <cstdint>

#include "nestor/vtd/faults.h"

namespace nestor::vtd {

// --- Root entry (128 bits, 256 per 4K table, indexed by bus) ---
inline constexpr uint64_t kRootPresent = 1;       // LP in the low word, UP in the high word
inline constexpr uint64_t kRootReserved = 0xFFE;  // bits 11:1 of each half

// --- Scalable-mode context entry (256 bits, 128 per 4K table) ---
// Low context table: devfn 0..127; upper: devfn 128..255.
inline constexpr uint64_t kCtxPresent = 1ull << 0;
inline constexpr uint64_t kCtxFpd = 1ull << 1;
inline constexpr uint64_t kCtxDte = 1ull << 2;
inline constexpr uint64_t kCtxPasidEnable = 1ull << 3;
inline constexpr uint64_t kCtxPre = 1ull << 4;
inline constexpr uint64_t kCtxReserved0 = 0x1E0;  // bits 8:5
inline constexpr unsigned kCtxPdtsShift = 9;      // bits 11:9: directory has 2^(PDTS+7) entries
inline constexpr uint64_t kCtxRidPasidMask = 0xFFFFF;  // word 1 bits 19:0
inline constexpr uint64_t kCtxRidPriv = 1ull << 20;
inline constexpr uint64_t kCtxReserved1 = 0xFFFF'FFFF'FFE0'0000ull;

// --- PASID directory entry (64 bits, indexed by PASID[19:6]) ---
inline constexpr uint64_t kPdePresent = 1ull << 0;
inline constexpr uint64_t kPdeFpd = 1ull << 1;
inline constexpr uint64_t kPdeReserved = 0xFFC;  // bits 11:2

// --- Scalable-mode PASID table entry (512 bits, 64 per 4K table, indexed by PASID[5:0]) ---
inline constexpr uint64_t kPtePresent = 1ull << 0;  // word 0
inline constexpr uint64_t kPteFpd = 1ull << 1;
inline constexpr unsigned kPteAwShift = 2;       // bits 4:2: 1=39, 2=48, 3=57-bit second level
inline constexpr uint64_t kPteSlee = 1ull << 5;  // second-level execute enable
inline constexpr unsigned kPtePgttShift = 6;     // bits 8:6
inline constexpr uint64_t kPteSlade = 1ull << 9;
inline constexpr uint64_t kPteReserved0 = 0xC00;      // bits 11:10
inline constexpr uint64_t kPteDidMask = 0xFFFF;       // word 1 bits 15:0
inline constexpr uint64_t kPteReserved1 = 0x7F'0000;  // bits 86:80 (PWSNP 87 .. PAT 127:96)
inline constexpr uint64_t kPtePwt = 1ull << 30;       // bit 94
inline constexpr uint64_t kPtePcd = 1ull << 31;       // bit 95
inline constexpr uint64_t kPteSre = 1ull << 0;        // word 2
inline constexpr uint64_t kPteEre = 1ull << 1;
inline constexpr unsigned kPteFlpmShift = 2;  // bits 3:2: 0 = 4-level, 1 = 5-level
inline constexpr uint64_t kPteWpe = 1ull << 4;
inline constexpr uint64_t kPteNxe = 1ull << 5;   // bit 133
inline constexpr uint64_t kPteSmep = 1ull << 6;  // bit 134
inline constexpr uint64_t kPteEafe = 1ull << 7;
inline constexpr uint64_t kPteReserved2 = 0xF00;  // bits 139:136
inline constexpr uint64_t kAddr = ~uint64_t{0xFFF};

enum class Pgtt : uint8_t {
  kFirstLevel = 1,
  kSecondLevel = 2,
  kNested = 3,
  kPassThrough = 4,
};

struct ContextEntry {
  bool present = false;
  bool fpd = false;
  bool pasid_enable = false;
  uint8_t pdts = 0;
  uint64_t pasid_dir = 0;
  uint32_t rid_pasid = 0;
  bool rid_priv = false;
  uint32_t max_pasids() const { return 1u << (pdts + 7 + 6); }  // directory entries * 64
};

struct PasidEntry {
  bool present = false;
  bool fpd = false;
  Pgtt pgtt = Pgtt::kSecondLevel;
  uint8_t aw = 2;
  bool slade = false;
  // Decoding sets every field. The defaults are what an encoder writes unless told otherwise:
  // an x86-64 driver's setting (XD in use, SMEP on, second-level X honoured).
  bool slee = true;
  uint64_t sl_root = 0;
  uint16_t did = 0;
  bool sre = false, ere = false, wpe = false, eafe = false;
  bool nxe = true, smep = true;
  uint8_t fl_levels = 4;
  uint64_t fl_root = 0;
  unsigned sl_levels() const { return aw + 2u; }
};

struct DecodeError {
  FaultReason reason = FaultReason::kNone;
  bool fpd = false;  // fault processing disabled by the entry that faulted
};

inline uint64_t haw_reserved(unsigned haw) {
  return haw >= 64 ? 0 : (~uint64_t{0} << haw);
}

// Root entry half for a devfn: low half covers devfn 0..127.
inline FaultReason decode_root(const uint64_t root[2], uint8_t devfn, unsigned haw,
                               uint64_t *context_table) {
  const uint64_t half = devfn < 128 ? root[0] : root[1];
  if (!(half & kRootPresent)) return FaultReason::kRootEntryNotPresent;
  if (half & (kRootReserved | haw_reserved(haw))) return FaultReason::kRootEntryReserved;
  *context_table = half & kAddr;
  return FaultReason::kNone;
}

inline DecodeError decode_context(const uint64_t w[4], unsigned haw, ContextEntry *out) {
  DecodeError err;
  out->present = w[0] & kCtxPresent;
  out->fpd = w[0] & kCtxFpd;
  err.fpd = out->fpd;
  if (!out->present) {
    err.reason = FaultReason::kContextEntryNotPresent;
    return err;
  }
  if ((w[0] & (kCtxReserved0 | haw_reserved(haw))) || (w[1] & kCtxReserved1) || w[2] || w[3]) {
    err.reason = FaultReason::kContextEntryReserved;
    return err;
  }
  out->pasid_enable = w[0] & kCtxPasidEnable;
  out->pdts = uint8_t((w[0] >> kCtxPdtsShift) & 7);
  out->pasid_dir = w[0] & kAddr;
  out->rid_pasid = uint32_t(w[1] & kCtxRidPasidMask);
  out->rid_priv = w[1] & kCtxRidPriv;
  return err;
}

inline DecodeError decode_pasid_dir(uint64_t pde, unsigned haw, uint64_t *table) {
  DecodeError err;
  err.fpd = pde & kPdeFpd;
  if (!(pde & kPdePresent))
    err.reason = FaultReason::kPasidDirEntryNotPresent;
  else if (pde & (kPdeReserved | haw_reserved(haw)))
    err.reason = FaultReason::kPasidDirEntryReserved;
  else
    *table = pde & kAddr;
  return err;
}

// `sagaw` is the bitmask of supported second-level widths (bit 1: 39, bit 2: 48, bit 3: 57).
inline DecodeError decode_pasid_entry(const uint64_t w[8], unsigned haw, uint8_t sagaw,
                                      bool fl5_supported, PasidEntry *out) {
  DecodeError err;
  out->present = w[0] & kPtePresent;
  out->fpd = w[0] & kPteFpd;
  err.fpd = out->fpd;
  if (!out->present) {
    err.reason = FaultReason::kPasidEntryNotPresent;
    return err;
  }
  const unsigned pgtt = unsigned(w[0] >> kPtePgttShift) & 7;
  if (pgtt < 1 || pgtt > 4) {
    err.reason = FaultReason::kPasidEntryInvalid;
    return err;
  }
  // Reserved fields of the 512-bit entry (VT-d 9.6): bits 11:10, 86:80, 139:136 and 511:192.
  if ((w[0] & kPteReserved0) || (w[1] & kPteReserved1) || (w[2] & kPteReserved2) || w[3] || w[4] ||
      w[5] || w[6] || w[7]) {
    err.reason = FaultReason::kPasidEntryReserved;
    return err;
  }
  out->pgtt = Pgtt(pgtt);
  out->aw = uint8_t((w[0] >> kPteAwShift) & 7);
  out->slee = w[0] & kPteSlee;
  out->slade = w[0] & kPteSlade;
  out->sl_root = w[0] & kAddr & ~haw_reserved(haw);
  out->did = uint16_t(w[1] & kPteDidMask);
  out->sre = w[2] & kPteSre;
  out->ere = w[2] & kPteEre;
  out->wpe = w[2] & kPteWpe;
  out->nxe = w[2] & kPteNxe;
  out->smep = w[2] & kPteSmep;
  out->eafe = w[2] & kPteEafe;
  const unsigned flpm = unsigned(w[2] >> kPteFlpmShift) & 3;
  out->fl_levels = flpm == 1 ? 5 : 4;
  out->fl_root = w[2] & kAddr;
  const bool uses_sl = out->pgtt == Pgtt::kSecondLevel || out->pgtt == Pgtt::kNested;
  const bool uses_fl = out->pgtt == Pgtt::kFirstLevel || out->pgtt == Pgtt::kNested;
  if (uses_sl) {
    // QEMU (vtd_get_pe_in_pasid_leaf_table) answers a width the hardware lacks with the
    // invalid-entry fault; an SLPTPTR above HAW is a reserved-field fault (VT-d 9.6).
    if (out->aw < 1 || out->aw > 3 || !(sagaw & (1u << out->aw))) {
      err.reason = FaultReason::kPasidEntryInvalid;
      return err;
    }
    if (w[0] & kAddr & haw_reserved(haw)) {
      err.reason = FaultReason::kPasidEntryReserved;
      return err;
    }
  }
  if (uses_fl) {
    // Same choice as QEMU for a paging mode the hardware lacks (FLPM 2/3, or 5-level without
    // FL5LP). In nested mode the first-level root is a GPA, checked through the second level.
    if (flpm > 1 || (flpm == 1 && !fl5_supported)) {
      err.reason = FaultReason::kPasidEntryInvalid;
      return err;
    }
    if (out->pgtt == Pgtt::kFirstLevel && (out->fl_root & haw_reserved(haw))) {
      err.reason = FaultReason::kPasidEntryReserved;
      return err;
    }
  }
  return err;
}

// --- Encoders (what a driver would write) ---
inline void encode_root(uint64_t out[2], uint64_t lower_ctx, uint64_t upper_ctx) {
  out[0] = lower_ctx ? (lower_ctx & kAddr) | kRootPresent : 0;
  out[1] = upper_ctx ? (upper_ctx & kAddr) | kRootPresent : 0;
}

inline void encode_context(uint64_t out[4], uint64_t pasid_dir, uint8_t pdts, bool pasid_enable,
                           uint32_t rid_pasid, bool rid_priv = false) {
  out[0] = (pasid_dir & kAddr) | (uint64_t(pdts & 7) << kCtxPdtsShift) |
           (pasid_enable ? kCtxPasidEnable : 0) | kCtxPresent;
  out[1] = (rid_pasid & kCtxRidPasidMask) | (rid_priv ? kCtxRidPriv : 0);
  out[2] = out[3] = 0;
}

inline uint64_t encode_pasid_dir(uint64_t table) {
  return (table & kAddr) | kPdePresent;
}

inline void encode_pasid_entry(uint64_t out[8], const PasidEntry &e) {
  for (int i = 0; i < 8; ++i) out[i] = 0;
  out[0] = (e.present ? kPtePresent : 0) | (e.fpd ? kPteFpd : 0) |
           (uint64_t(e.aw & 7) << kPteAwShift) | (uint64_t(uint8_t(e.pgtt) & 7) << kPtePgttShift) |
           (e.slade ? kPteSlade : 0) | (e.slee ? kPteSlee : 0) | (e.sl_root & kAddr);
  out[1] = e.did;
  out[2] = (e.sre ? kPteSre : 0) | (e.ere ? kPteEre : 0) | (e.wpe ? kPteWpe : 0) |
           (e.nxe ? kPteNxe : 0) | (e.smep ? kPteSmep : 0) | (e.eafe ? kPteEafe : 0) |
           (uint64_t(e.fl_levels == 5 ? 1 : 0) << kPteFlpmShift) | (e.fl_root & kAddr);
}

}  // namespace nestor::vtd
