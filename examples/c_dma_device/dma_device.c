/* An emulator's view of nestor, in strict C99 through the C ABI only.
 *
 * The emulator gives the guest a VT-d IOMMU in scalable mode and a DMA-capable device (a toy
 * "copy engine" at PCI 00:03.0). nestor's machine memory *is* guest-physical memory here: the
 * guest's IOMMU driver writes the root table, the scalable-mode context entry, the PASID
 * directory and table and its first-level page tables into it, exactly as on hardware, with
 * nestor_mem_write (the emulator's "guest store"). The device model never touches guest memory
 * by IOVA: it translates every page through nestor_translate and then reads/writes the
 * resulting physical address, the way a real device's DMA goes through the IOMMU.
 *
 * Scenario (every step is checked; the exit code is 0 only if all checks hold):
 *   1. guest builds structures + first-level tables and sets the root-table pointer (the
 *      emulator's SRTP handler calls nestor_set_root_table and resets the caches with a typed
 *      nestor_inv_submit + nestor_inv_wait); the guest then sets up queued invalidation (QI)
 *      and invalidates globally with descriptors, as Linux's intel-iommu driver does;
 *   2. device copies a buffer that is scattered over non-contiguous guest pages, at unaligned
 *      offsets, page by page; the guest verifies the copy;
 *   3. guest unmaps one destination page, queues a page-selective PASID-based IOTLB
 *      invalidation descriptor and a wait descriptor with a status write, writes the queue's
 *      tail register (nestor_qi_write_tail) and polls the status;
 *   4. the device's next DMA faults on that page; the emulator reports it as Linux's DMAR
 *      driver prints it and drains the fault log (the fault-recording registers). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <nestor.h>

/* ---- checks: count failures instead of aborting, so one run shows everything wrong ---- */
static int g_failures;
#define CHECK(cond, ...)                                  \
  do {                                                    \
    if (!(cond)) {                                        \
      ++g_failures;                                       \
      fprintf(stderr, "CHECK FAILED (%s:%d): ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                       \
      fputc('\n', stderr);                                \
    }                                                     \
  } while (0)

/* ---- guest physical layout ---- */
#define PAGE 4096u
#define GUEST_RAM (64u << 20)
#define TABLE_AREA 0x100000u /* the driver's page allocator for IOMMU structures */
#define DATA_AREA 0x800000u  /* data pages, handed out in a scattered order */

#define DEV_SID 0x0018u /* 00:03.0: bus 0, device 3, function 0 */
#define DEV_PASID 1u
#define DEV_DID 1u
#define NPAGES 4u
#define SRC_IOVA 0x7f0000000000ull /* a high user-style IOVA: exercises all four levels */
#define DST_IOVA 0x000040000000ull

/* x86 first-level entry bits (VT-d first-level tables use the IA-32e format). */
#define FL_P 0x1ull
#define FL_RW 0x2ull
#define FL_US 0x4ull /* the device issues user (non-privileged) requests */
#define ADDR_MASK 0x000ffffffffff000ull

#define QI_ENTRIES 128u /* 128 x 256-bit descriptors = one 4K page */
#define QI_DESC_BYTES 32u

typedef struct guest {
  nestor_engine *e;
  uint64_t next_table; /* bump allocator over TABLE_AREA */
  uint64_t root_table, fl_root;
  uint64_t qi_base, qi_tail; /* invalidation queue: base, next free descriptor index */
  uint64_t status_pa;        /* wait-descriptor status dword */
  uint32_t status_seq;
} guest;

/* A 64-bit guest store. Every structure write goes through here: nestor_mem_write only. */
static void gst64(guest *g, uint64_t pa, uint64_t v) {
  CHECK(nestor_mem_write(g->e, pa, &v, sizeof v) == 0, "guest store at 0x%" PRIx64, pa);
}

static uint64_t gld64(guest *g, uint64_t pa) {
  uint64_t v = 0;
  CHECK(nestor_mem_read(g->e, pa, &v, sizeof v) == 0, "guest load at 0x%" PRIx64, pa);
  return v;
}

/* RAM from nestor_mem_add_ram starts zeroed, so a fresh page is already an empty table. */
static uint64_t alloc_table(guest *g) {
  uint64_t pa = g->next_table;
  g->next_table += PAGE;
  return pa;
}

/* Address of the leaf (level-1) entry for `iova`, creating intermediate tables. */
static uint64_t fl_leaf_slot(guest *g, uint64_t iova) {
  uint64_t table = g->fl_root;
  int level;
  for (level = 4; level > 1; --level) {
    uint64_t slot = table + ((iova >> (12 + 9 * (level - 1))) & 511) * 8;
    uint64_t ent = gld64(g, slot);
    if (!(ent & FL_P)) {
      ent = alloc_table(g) | FL_P | FL_RW | FL_US; /* non-leaf: permissive, the leaf decides */
      gst64(g, slot, ent);
    }
    table = ent & ADDR_MASK;
  }
  return table + ((iova >> 12) & 511) * 8;
}

static void fl_map(guest *g, uint64_t iova, uint64_t gpa, int writable) {
  gst64(g, fl_leaf_slot(g, iova), (gpa & ADDR_MASK) | FL_P | FL_US | (writable ? FL_RW : 0));
}

static void fl_unmap(guest *g, uint64_t iova) { gst64(g, fl_leaf_slot(g, iova), 0); }

/* ---- queued invalidation, the guest driver's side (VT-d 6.5.2; docs/INVQ.md) ---- */
#define QI_CC_GLOBAL (0x1ull | (1ull << 4))    /* context cache, G = 1 global */
#define QI_IOTLB_GLOBAL (0x2ull | (1ull << 4)) /* IOTLB, G = 1 global */
#define QI_PC_GLOBAL (0x7ull | (3ull << 4))    /* PASID cache, G = 3 global */
#define QI_PIOTLB_PSI 0x6ull                   /* PASID-based IOTLB; G = 3 page in PASID */
#define QI_WAIT 0x5ull                         /* invalidation wait; SW = bit 5 */

static void qi_queue(guest *g, uint64_t qw0, uint64_t qw1) {
  uint64_t d = g->qi_base + (g->qi_tail % QI_ENTRIES) * QI_DESC_BYTES;
  gst64(g, d, qw0);
  gst64(g, d + 8, qw1);
  gst64(g, d + 16, 0); /* 256-bit descriptors: the upper half is zero for these types */
  gst64(g, d + 24, 0);
  g->qi_tail = (g->qi_tail + 1) % QI_ENTRIES;
}

/* Appends a wait descriptor that writes a fresh status value, rings the tail register and
 * polls the status dword, as a driver's qi_submit_sync() does. With nestor_qi_write_tail's
 * synchronous processing the status has landed by the time the call returns; the poll is
 * what a guest would do anyway and what proves the wait completed. */
static void qi_sync(guest *g) {
  uint32_t status = 0;
  uint64_t head = 0;
  int error = -1;
  const uint32_t want = ++g->status_seq;
  qi_queue(g, QI_WAIT | (1ull << 5) | ((uint64_t)want << 32), g->status_pa);
  CHECK(nestor_qi_write_tail(g->e, g->qi_tail) == 0, "nestor_qi_write_tail");
  CHECK(nestor_mem_read(g->e, g->status_pa, &status, sizeof status) == 0, "status read");
  CHECK(status == want, "wait status 0x%x, expected 0x%x", (unsigned)status, (unsigned)want);
  CHECK(nestor_qi_state(g->e, &head, &error) == 0 && error == NESTOR_QI_ERR_NONE &&
            head == g->qi_tail,
        "queue state: head %" PRIu64 " tail %" PRIu64 " error %d", head, g->qi_tail, error);
}

/* The emulator's handler for the guest's "set root-table pointer" command: points the engine
 * at the new root table and drops whatever the caches held (QEMU does the same on SRTP). */
static void emulator_set_root_table(guest *g, uint64_t root) {
  nestor_inv_op op;
  CHECK(nestor_set_root_table(g->e, root) == 0, "set_root_table");
  memset(&op, 0, sizeof op);
  op.cache = NESTOR_CACHE_CONTEXT | NESTOR_CACHE_PASID | NESTOR_CACHE_IOTLB | NESTOR_CACHE_PAGING |
             NESTOR_CACHE_DEVTLB;
  op.scope = NESTOR_SCOPE_GLOBAL;
  CHECK(nestor_inv_submit(g->e, &op) == 0, "nestor_inv_submit");
  CHECK(nestor_inv_wait(g->e) == 0, "nestor_inv_wait");
}

static void guest_setup(guest *g) {
  uint64_t ctx_table, pasid_dir, pasid_table, w[8];
  unsigned i;

  g->next_table = TABLE_AREA;
  g->root_table = alloc_table(g);
  ctx_table = alloc_table(g);
  pasid_dir = alloc_table(g);
  pasid_table = alloc_table(g);
  g->fl_root = alloc_table(g);

  /* Root entry for bus 0 (VT-d 9.1): lower context-table pointer + present (devfn < 128). */
  gst64(g, g->root_table + 0 * 16, ctx_table | 1);
  /* Scalable-mode context entry for devfn 0x18 (9.4): present, PASID enable, PDTS 0
   * (a 128-entry directory), RID_PASID 0. 32 bytes; the upper words stay zero. */
  gst64(g, ctx_table + (DEV_SID & 0x7f) * 32, pasid_dir | (0u << 9) | 0x8 | 0x1);
  /* PASID directory entry for PASID[19:6] = 0 (9.5): present. */
  gst64(g, pasid_dir + (DEV_PASID >> 6) * 8, pasid_table | 1);
  /* PASID table entry (9.6): present, PGTT = 1 (first-level only), DID, 4-level FL root. */
  memset(w, 0, sizeof w);
  w[0] = 1u | (1u << 6);
  w[1] = DEV_DID;
  w[2] = g->fl_root; /* FLPM 0: 4-level; SRE 0: user requests only */
  for (i = 0; i < 8; ++i) gst64(g, pasid_table + (DEV_PASID & 63) * 64 + i * 8, w[i]);

  /* Buffers on deliberately scattered guest pages, so a copy that ignored the per-page
   * translation would read or write the wrong memory. Source read-only, destination RW. */
  for (i = 0; i < NPAGES; ++i) {
    fl_map(g, SRC_IOVA + i * PAGE, DATA_AREA + (uint64_t)(7 * i + 3) * PAGE, 0);
    fl_map(g, DST_IOVA + i * PAGE, DATA_AREA + (uint64_t)(5 * i + 40) * PAGE, 1);
  }

  /* Enable translation: set the root-table pointer, set up the invalidation queue (IQA:
   * base, DW = 256-bit descriptors, QS = one page), then invalidate every cache globally. */
  emulator_set_root_table(g, g->root_table);
  g->qi_base = alloc_table(g);
  g->status_pa = alloc_table(g);
  CHECK(nestor_qi_configure(g->e, g->qi_base, QI_ENTRIES, 256) == 0, "nestor_qi_configure");
  qi_queue(g, QI_CC_GLOBAL, 0);
  qi_queue(g, QI_PC_GLOBAL, 0);
  qi_queue(g, QI_IOTLB_GLOBAL, 0);
  qi_sync(g);
}

/* ---- the device model ---- */
typedef struct dma_device {
  nestor_engine *e;
  uint16_t sid;
  uint32_t pasid;
  unsigned faults_raised;
} dma_device;

/* What an emulator does when a DMA faults: the IOMMU has recorded the fault (nestor's fault
 * log plays the fault-recording registers); raise the fault event and let the "driver" read
 * the records. The line format is Linux's (drivers/iommu/intel/dmar.c, dmar_fault_do_one). */
static void raise_dmar_fault(dma_device *d, nestor_fault_record *last) {
  nestor_fault_record rec[8];
  int overflow = 0, n, i;
  n = nestor_fault_log_drain(d->e, rec, 8, &overflow);
  CHECK(n >= 1, "fault log should hold the fault (drained %d)", n);
  for (i = 0; i < n; ++i) {
    const nestor_fault_record *r = &rec[i];
    char pasid[24];
    if (r->has_pasid)
      snprintf(pasid, sizeof pasid, "PASID 0x%" PRIx32, r->pasid);
    else
      snprintf(pasid, sizeof pasid, "NO_PASID");
    printf("DMAR: [%s %s] Request device [%02x:%02x.%d] fault addr 0x%" PRIx64
           " [fault reason 0x%02x] %s\n",
           (r->access & NESTOR_ACCESS_WRITE) ? "DMA Write" : "DMA Read", pasid,
           r->source_id >> 8, (r->source_id >> 3) & 0x1f, r->source_id & 7, r->address,
           r->reason, nestor_fault_name(r->reason));
    ++d->faults_raised;
  }
  CHECK(!overflow, "fault log overflowed");
  if (n >= 1) *last = rec[n - 1];
}

/* Translates `iova` for `access`; on a fault reports it and returns the reason. */
static int dma_translate(dma_device *d, uint64_t iova, uint8_t access, nestor_result *res,
                         nestor_fault_record *fault) {
  nestor_request req;
  int rc;
  memset(&req, 0, sizeof req);
  req.source_id = d->sid;
  req.has_pasid = 1;
  req.pasid = d->pasid;
  req.iova = iova;
  req.access = access;
  rc = nestor_translate(d->e, &req, res);
  CHECK(rc == 0, "nestor_translate: %s", nestor_strerror(rc));
  if (rc != 0) return -1;
  if (res->fault) raise_dmar_fault(d, fault);
  return res->fault;
}

/* Copies `len` bytes from src_iova to dst_iova. Each step stays inside one source page and
 * one destination page (whatever their sizes), because contiguous IOVAs need not be contiguous
 * in physical memory. Returns 0, or the fault reason of the first faulting access. */
static int dma_copy(dma_device *d, uint64_t src_iova, uint64_t dst_iova, size_t len,
                    nestor_fault_record *fault) {
  unsigned char buf[PAGE];
  while (len > 0) {
    nestor_result s, t;
    uint64_t src_left, dst_left, n;
    int f = dma_translate(d, src_iova, NESTOR_ACCESS_READ, &s, fault);
    if (f) return f;
    f = dma_translate(d, dst_iova, NESTOR_ACCESS_WRITE, &t, fault);
    if (f) return f;
    src_left = s.page_size - (src_iova & (s.page_size - 1));
    dst_left = t.page_size - (dst_iova & (t.page_size - 1));
    n = len;
    if (n > src_left) n = src_left;
    if (n > dst_left) n = dst_left;
    if (n > sizeof buf) n = sizeof buf;
    /* res.hpa is the physical address of the iova itself, offset within the page included. */
    CHECK(nestor_mem_read(d->e, s.hpa, buf, (size_t)n) == 0, "DMA read 0x%" PRIx64, s.hpa);
    CHECK(nestor_mem_write(d->e, t.hpa, buf, (size_t)n) == 0, "DMA write 0x%" PRIx64, t.hpa);
    src_iova += n;
    dst_iova += n;
    len -= (size_t)n;
  }
  return 0;
}

/* The guest's view of a buffer: reads it back by walking its own page tables (it knows its
 * mappings), so the check does not trust the engine it is checking. */
static void guest_read_buffer(guest *g, uint64_t iova, unsigned char *out, size_t len) {
  while (len > 0) {
    uint64_t pte = gld64(g, fl_leaf_slot(g, iova));
    uint64_t off = iova & (PAGE - 1), n = PAGE - off;
    if (n > len) n = len;
    CHECK(pte & FL_P, "guest buffer page 0x%" PRIx64 " not mapped", iova);
    CHECK(nestor_mem_read(g->e, (pte & ADDR_MASK) + off, out, (size_t)n) == 0, "guest read");
    iova += n;
    out += n;
    len -= (size_t)n;
  }
}

static void guest_write_buffer(guest *g, uint64_t iova, const unsigned char *in, size_t len) {
  while (len > 0) {
    uint64_t pte = gld64(g, fl_leaf_slot(g, iova));
    uint64_t off = iova & (PAGE - 1), n = PAGE - off;
    if (n > len) n = len;
    CHECK(nestor_mem_write(g->e, (pte & ADDR_MASK) + off, in, (size_t)n) == 0, "guest write");
    iova += n;
    in += n;
    len -= (size_t)n;
  }
}

int main(void) {
  static unsigned char pattern[NPAGES * PAGE], readback[NPAGES * PAGE];
  const uint64_t src_off = 0x123, dst_off = 0x9a8; /* unaligned: copies straddle pages */
  const size_t len = 3 * PAGE + 77;
  nestor_config cfg;
  nestor_fault_record fault;
  nestor_result res;
  guest g;
  dma_device dev;
  size_t i;
  int f;

  memset(&cfg, 0, sizeof cfg);
  cfg.size = sizeof cfg; /* versioned struct: zero fields take defaults */
  memset(&g, 0, sizeof g);
  g.e = nestor_engine_create(&cfg);
  if (!g.e) {
    fprintf(stderr, "nestor_engine_create failed\n");
    return 1;
  }
  CHECK(nestor_mem_add_ram(g.e, 0, GUEST_RAM) == 0, "add guest RAM");
  guest_setup(&g);
  dev.e = g.e;
  dev.sid = DEV_SID;
  dev.pasid = DEV_PASID;
  dev.faults_raised = 0;

  /* 2. A copy across pages. */
  for (i = 0; i < sizeof pattern; ++i) pattern[i] = (unsigned char)(i * 131u + 7u);
  guest_write_buffer(&g, SRC_IOVA, pattern, sizeof pattern);
  f = dma_copy(&dev, SRC_IOVA + src_off, DST_IOVA + dst_off, len, &fault);
  CHECK(f == 0, "first copy faulted: 0x%x %s", (unsigned)f, nestor_fault_name(f));
  memset(readback, 0, sizeof readback);
  guest_read_buffer(&g, DST_IOVA + dst_off, readback, len);
  CHECK(memcmp(readback, pattern + src_off, len) == 0, "copied data differs");
  printf("copy: %zu bytes from iova 0x%" PRIx64 " to 0x%" PRIx64 " verified\n", len,
         (uint64_t)(SRC_IOVA + src_off), (uint64_t)(DST_IOVA + dst_off));

  /* Writes to the read-only source are refused with a fault, never performed. */
  f = dma_translate(&dev, SRC_IOVA, NESTOR_ACCESS_WRITE, &res, &fault);
  CHECK(f != 0, "write to a read-only page was allowed");
  CHECK(f == 0 || (fault.reason == f && fault.iova == SRC_IOVA), "fault record mismatch");

  /* 3. The guest unmaps destination page 2 and invalidates exactly that page. Until the
   *    invalidation the IOTLB may legitimately still hold the old translation (VT-d caches
   *    are not coherent with table writes), which is why the driver must invalidate. */
  fl_unmap(&g, DST_IOVA + 2 * PAGE);
  /* PASID-based IOTLB, page-selective within (DID, PASID): AM 0 (one page), IH set because
   * only a leaf entry changed (paging-structure caches may keep the upper levels). */
  qi_queue(&g, QI_PIOTLB_PSI | (3ull << 4) | ((uint64_t)DEV_DID << 16) | ((uint64_t)DEV_PASID << 32),
           (DST_IOVA + 2 * PAGE) | (1ull << 6) | 0);
  qi_sync(&g);

  /* 4. The next DMA faults at the first byte of the unmapped page, and nothing past it is
   *    written. Page 1 is copied again (the copy proceeds in order up to the fault). */
  memset(&fault, 0, sizeof fault);
  f = dma_copy(&dev, SRC_IOVA, DST_IOVA, NPAGES * PAGE, &fault);
  CHECK(f == NESTOR_FAULT_FL_ENTRY_NOT_PRESENT, "expected fault 0x71, got 0x%x (%s)",
        (unsigned)f, nestor_fault_name(f));
  CHECK(fault.source_id == DEV_SID && fault.has_pasid && fault.pasid == DEV_PASID,
        "fault record names the wrong requester");
  CHECK(fault.iova == DST_IOVA + 2 * PAGE, "fault iova 0x%" PRIx64, fault.iova);
  CHECK(fault.access & NESTOR_ACCESS_WRITE, "fault should be a DMA write");
  CHECK(fault.reason == NESTOR_FAULT_FL_ENTRY_NOT_PRESENT, "fault record reason 0x%x",
        (unsigned)fault.reason);
  CHECK(fault.stage == NESTOR_STAGE_FIRST_LEVEL, "fault stage %d", fault.stage);
  CHECK(nestor_fault_log_drain(g.e, &fault, 1, NULL) == 0, "fault log should be empty now");
  CHECK(dev.faults_raised == 2, "raised %u faults, expected 2", dev.faults_raised);

  /* The pages that remain mapped still translate. */
  f = dma_translate(&dev, DST_IOVA + 3 * PAGE, NESTOR_ACCESS_WRITE, &res, &fault);
  CHECK(f == 0, "page 3 should still be mapped");

  nestor_engine_destroy(g.e);
  if (g_failures) {
    fprintf(stderr, "c_dma_device: %d check(s) failed\n", g_failures);
    return 1;
  }
  printf("c_dma_device: all checks passed\n");
  return 0;
}
