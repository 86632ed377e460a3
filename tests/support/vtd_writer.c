/* Compiled as strict C99: proves nestor.h is a C header and encodes the VT-d structures
 * independently of the engine's C++ encoders. Layout: VT-d spec chapter 9 (root entry 9.1,
 * scalable-mode context entry 9.4, PASID directory entry 9.5, PASID table entry 9.6), with bit
 * positions cross-checked against Linux drivers/iommu/intel/pasid.h and QEMU
 * hw/i386/intel_iommu_internal.h (see docs/VTD-FORMATS.md). */
#include "vtd_writer.h"

static int capi_write(void *ctx, uint64_t pa, const void *buf, size_t len) {
  return nestor_mem_write((nestor_engine *)ctx, pa, buf, len);
}

vtdw_writer vtdw_capi_writer(nestor_engine *e) {
  vtdw_writer w;
  w.write = capi_write;
  w.ctx = e;
  return w;
}

static int capi_write_indirect(void *ctx, uint64_t pa, const void *buf, size_t len) {
  return nestor_mem_write(*(nestor_engine **)ctx, pa, buf, len);
}

vtdw_writer vtdw_capi_writer_indirect(nestor_engine **ep) {
  vtdw_writer w;
  w.write = capi_write_indirect;
  w.ctx = ep;
  return w;
}

static const uint64_t kPageAddr = ~(uint64_t)0xFFF;

int vtdw_root(const vtdw_writer *w, uint64_t root_table, unsigned bus, uint64_t lctp,
              uint64_t uctp, uint64_t extra_lo, uint64_t extra_hi) {
  uint64_t e[2];
  e[0] = (lctp ? ((lctp & kPageAddr) | 1u) : 0) | extra_lo; /* bit 0 LP, bits 63:12 LCTP */
  e[1] = (uctp ? ((uctp & kPageAddr) | 1u) : 0) | extra_hi; /* bit 64 UP, bits 127:76 UCTP */
  return w->write(w->ctx, root_table + (uint64_t)(bus & 0xFF) * 16, e, sizeof e);
}

int vtdw_context_entry(const vtdw_writer *w, uint64_t ctx_table, unsigned devfn,
                       const vtdw_context *c) {
  uint64_t e[4];
  int i;
  e[0] = (c->present ? 1u : 0u)               /* bit 0: P */
         | (c->fpd ? 2u : 0u)                 /* bit 1: FPD */
         | (c->paside ? 8u : 0u)              /* bit 3: PASIDE */
         | ((uint64_t)(c->pdts & 7) << 9)     /* bits 11:9: PDTS */
         | (c->pasid_dir & kPageAddr);        /* bits 63:12: PASIDDIRPTR */
  e[1] = (uint64_t)(c->rid_pasid & 0xFFFFF)   /* bits 83:64: RID_PASID */
         | (c->rid_priv ? (1ull << 20) : 0);  /* bit 84: RID_PRIV */
  e[2] = 0;
  e[3] = 0;
  for (i = 0; i < 4; ++i) e[i] |= c->extra[i];
  return w->write(w->ctx, ctx_table + (uint64_t)(devfn & 0x7F) * 32, e, sizeof e);
}

int vtdw_pasid_dir_entry(const vtdw_writer *w, uint64_t dir, uint32_t pasid, uint64_t table,
                         int present, int fpd, uint64_t extra) {
  uint64_t e = (present ? 1u : 0u) | (fpd ? 2u : 0u) | (table & kPageAddr) | extra;
  return w->write(w->ctx, dir + (uint64_t)(pasid >> 6) * 8, &e, sizeof e);
}

int vtdw_pasid_entry_write(const vtdw_writer *w, uint64_t table, uint32_t pasid,
                           const vtdw_pasid_entry *pe) {
  uint64_t e[8];
  int i;
  for (i = 0; i < 8; ++i) e[i] = 0;
  e[0] = (pe->present ? 1u : 0u)             /* bit 0: P */
         | (pe->fpd ? 2u : 0u)               /* bit 1: FPD */
         | ((uint64_t)(pe->aw & 7) << 2)     /* bits 4:2: AW */
         | ((uint64_t)(pe->pgtt & 7) << 6)   /* bits 8:6: PGTT */
         | (pe->slade ? (1u << 9) : 0u)      /* bit 9: SLADE */
         | (pe->sl_root & kPageAddr);        /* bits 63:12: SLPTPTR */
  e[1] = pe->did;                            /* bits 79:64: DID */
  e[2] = (pe->sre ? 1u : 0u)                 /* bit 128: SRE */
         | (pe->ere ? 2u : 0u)               /* bit 129: ERE */
         | ((uint64_t)(pe->flpm & 3) << 2)   /* bits 131:130: FLPM */
         | (pe->wpe ? (1u << 4) : 0u)        /* bit 132: WPE */
         | (pe->eafe ? (1u << 7) : 0u)       /* bit 135: EAFE */
         | (pe->fl_root & kPageAddr);        /* bits 191:140: FLPTPTR */
  for (i = 0; i < 8; ++i) e[i] |= pe->extra[i];
  return w->write(w->ctx, table + (uint64_t)(pasid & 63) * 64, e, sizeof e);
}

int vtdw_translate(nestor_engine *e, uint16_t sid, int has_pasid, uint32_t pasid, uint64_t iova,
                   uint8_t access, int privileged, nestor_result *out) {
  nestor_request req;
  int rc;
  req.source_id = sid;
  req.has_pasid = (uint8_t)(has_pasid != 0);
  req.pasid = pasid;
  req.iova = iova;
  req.access = access;
  req.privileged = (uint8_t)(privileged != 0);
  rc = nestor_translate(e, &req, out);
  if (rc != 0) return -1000 + rc;
  return out->fault;
}
