/* Test-only writer of VT-d scalable-mode structures, in C99. It knows the architectural layout
 * on its own (it does not use the engine's encoders), so tests check the engine's decoders
 * against an independent encoding. Bytes reach memory through a write callback; the
 * vtdw_capi_writer() one uses nestor_mem_write only. */
#ifndef NESTOR_TEST_VTD_WRITER_H
#define NESTOR_TEST_VTD_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "nestor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vtdw_writer {
  int (*write)(void *ctx, uint64_t pa, const void *buf, size_t len);
  void *ctx;
} vtdw_writer;

/* A writer that stores through nestor_mem_write(e, ...). */
vtdw_writer vtdw_capi_writer(nestor_engine *e);
/* The same, through *ep (for fixtures that replace the engine over the same memory). */
vtdw_writer vtdw_capi_writer_indirect(nestor_engine **ep);

/* Root entry for `bus`: 16 bytes at root_table + bus * 16. lctp/uctp = 0 leaves the half
 * not present. `extra_lo/extra_hi` are ORed into the halves (to set reserved bits). */
int vtdw_root(const vtdw_writer *w, uint64_t root_table, unsigned bus, uint64_t lctp,
              uint64_t uctp, uint64_t extra_lo, uint64_t extra_hi);

typedef struct vtdw_context {
  int present, fpd, paside;
  unsigned pdts; /* directory has 2^(pdts + 7) entries */
  uint64_t pasid_dir;
  uint32_t rid_pasid;
  int rid_priv;
  uint64_t extra[4]; /* ORed into the four words */
} vtdw_context;

/* Scalable-mode context entry for devfn: 32 bytes at ctx_table + (devfn & 0x7F) * 32. */
int vtdw_context_entry(const vtdw_writer *w, uint64_t ctx_table, unsigned devfn,
                       const vtdw_context *c);

/* PASID directory entry for `pasid`: 8 bytes at dir + (pasid >> 6) * 8. */
int vtdw_pasid_dir_entry(const vtdw_writer *w, uint64_t dir, uint32_t pasid, uint64_t table,
                         int present, int fpd, uint64_t extra);

typedef struct vtdw_pasid_entry {
  int present, fpd;
  unsigned aw;   /* 1: 39-bit (3-level), 2: 48-bit, 3: 57-bit second level */
  unsigned pgtt; /* 1 FL, 2 SL, 3 nested, 4 pass-through */
  int slade;
  uint64_t sl_root;
  uint16_t did;
  int sre, ere, wpe, eafe;
  unsigned flpm; /* 0: 4-level, 1: 5-level */
  uint64_t fl_root;
  uint64_t extra[8];
} vtdw_pasid_entry;

/* PASID table entry for `pasid`: 64 bytes at table + (pasid & 63) * 64. */
int vtdw_pasid_entry_write(const vtdw_writer *w, uint64_t table, uint32_t pasid,
                           const vtdw_pasid_entry *pe);

/* Convenience: translate through the C ABI and return the result's fault code (0 = ok). */
int vtdw_translate(nestor_engine *e, uint16_t sid, int has_pasid, uint32_t pasid, uint64_t iova,
                   uint8_t access, int privileged, nestor_result *out);

#ifdef __cplusplus
}
#endif
#endif
