/* why_fault: answering "why did this DMA fault?" and "what did this invalidation remove?" from
 * nestor's event hooks alone, in strict C99 through the C ABI.
 *
 * An emulator that gives a guest a nested VT-d (the guest owns first-level tables, the host
 * the second level) usually sees a DMA fault as a bare code in a fault record. An event hook
 * sees the whole story at the moment it happens: the request, the address space it resolved
 * to, the stage and paging level of the walk that failed and the address that level was
 * walking (the IOVA, or the GPA for a second-level fault). Likewise an invalidation event lists
 * every cache entry the operation removed, and marks the ones it removed beyond what the
 * operation required (over-invalidation), which is what a driver-side performance question
 * ("why is my IOTLB hit rate so low after unmaps?") needs.
 *
 * Scenario (every step is checked; the exit code is 0 only if all checks hold):
 *   1. the host builds a VM through the bind layer: an owner, a nesting second-level domain
 *      mapping guest RAM, a device 00:03.0 attached to it, a PASID bound to the guest's
 *      first-level page table; the guest maps a few IOVA pages in its own table;
 *   2. the emulator registers one hook for fault and invalidation events;
 *   3. a DMA to an IOVA the guest never mapped faults in the first level; a DMA to an IOVA
 *      the guest mapped to a GPA the host never mapped faults in the second level. The hook
 *      prints why, from the fault event alone;
 *   4. the device translates the mapped pages (filling the IOTLB), the guest unmaps two of them
 *      and invalidates that range; the hook prints what the invalidation removed, from the
 *      invalidation event alone;
 *   5. the emulator resets the device and flushes everything cached for it (device scope): the
 *      event shows the IOTLB entries the engine removed beyond what that scope names.
 * The callback only copies and prints: it never calls back into the engine (nestor.h, "Event
 * hooks", lists what a callback may not call). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <nestor.h>

/* ---- checks: count failures instead of aborting, so one run shows everything wrong ---- */
static int g_failures;
#define CHECK(cond, ...)                                             \
  do {                                                               \
    if (!(cond)) {                                                   \
      ++g_failures;                                                  \
      fprintf(stderr, "CHECK FAILED (%s:%d): ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                                  \
      fputc('\n', stderr);                                           \
    }                                                                \
  } while (0)

/* ---- machine layout ---- */
#define PAGE 4096u
#define GUEST_RAM (64ull << 20)  /* guest-physical [0, 64M) ... */
#define GUEST_HPA (256ull << 20) /* ... lives at host-physical [256M, 320M) */
#define BIND_TABLES (1ull << 30) /* host RAM the bind layer builds its structures in */
#define BIND_TABLES_SIZE (8ull << 20)
#define DEV_SID 0x0018u /* 00:03.0 */

/* The guest's first-level page tables live in guest RAM, from GPA 0x1000 on. */
#define GUEST_FL_ROOT 0x1000ull
#define FL_P 0x1ull
#define FL_RW 0x2ull
#define FL_US 0x4ull
#define ADDR_MASK 0x000ffffffffff000ull

#define IOVA_BASE 0x40000000ull
#define NPAGES 4u
#define UNMAPPED_IOVA (IOVA_BASE + 5 * PAGE) /* the guest never maps it */
#define STRAY_IOVA (IOVA_BASE + 6 * PAGE)    /* the guest maps it to ... */
#define STRAY_GPA (128ull << 20)             /* ... a GPA the host never mapped */
#define FAR_IOVA (IOVA_BASE + 0x200000ull)   /* another 2M region, another page table */

typedef struct guest {
  nestor_engine *e;
  uint64_t next_table; /* bump allocator for table pages, in GPA */
} guest;

static uint64_t gld64(guest *g, uint64_t gpa) {
  uint64_t v = 0;
  CHECK(nestor_mem_read(g->e, GUEST_HPA + gpa, &v, sizeof v) == 0, "guest load 0x%" PRIx64, gpa);
  return v;
}

static void gst64(guest *g, uint64_t gpa, uint64_t v) {
  CHECK(nestor_mem_write(g->e, GUEST_HPA + gpa, &v, sizeof v) == 0, "guest store 0x%" PRIx64, gpa);
}

/* The guest's page-table code: the level-1 slot of `iova`, creating tables on the way (guest
 * RAM starts zeroed, so a fresh page is an empty table). */
static uint64_t fl_leaf_slot(guest *g, uint64_t iova) {
  uint64_t table = GUEST_FL_ROOT;
  int level;
  for (level = 4; level > 1; --level) {
    uint64_t slot = table + ((iova >> (12 + 9 * (level - 1))) & 511) * 8;
    uint64_t ent = gld64(g, slot);
    if (!(ent & FL_P)) {
      g->next_table += PAGE;
      ent = g->next_table | FL_P | FL_RW | FL_US;
      gst64(g, slot, ent);
    }
    table = ent & ADDR_MASK;
  }
  return table + ((iova >> 12) & 511) * 8;
}

static void fl_map(guest *g, uint64_t iova, uint64_t gpa) {
  gst64(g, fl_leaf_slot(g, iova), (gpa & ADDR_MASK) | FL_P | FL_RW | FL_US);
}

static void fl_unmap(guest *g, uint64_t iova) {
  gst64(g, fl_leaf_slot(g, iova), 0);
}

static uint64_t data_gpa(unsigned i) {
  return 0x200000ull + (uint64_t)(3 * i + 1) * PAGE;
}

/* ---- the hook: everything below is answered from the events alone ---- */
#define MAX_KEPT 64
typedef struct report {
  unsigned faults;
  nestor_event_translate last_fault; /* copies: the event dies with the call */
  unsigned invalidations;
  nestor_event_invalidation last_inv;
  nestor_event_removed removed[MAX_KEPT];
  unsigned kept;
} report;

static const char *access_name(uint8_t access) {
  return (access & NESTOR_ACCESS_WRITE) ? "Write" : (access & NESTOR_ACCESS_EXEC) ? "Exec" : "Read";
}

static const char *stages_name(unsigned stages) {
  switch (stages) {
    case NESTOR_STAGES_PASS_THROUGH:
      return "pass-through";
    case NESTOR_STAGES_SECOND_ONLY:
      return "second-level only";
    case NESTOR_STAGES_FIRST_ONLY:
      return "first-level only";
    case NESTOR_STAGES_NESTED:
      return "nested";
  }
  return "unknown";
}

/* "iotlb+paging" for NESTOR_CACHE_* bits. */
static const char *cache_bits_name(unsigned bits, char *buf, size_t n) {
  static const char *const names[] = {"context", "pasid", "iotlb", "paging", "devtlb"};
  unsigned i;
  buf[0] = '\0';
  for (i = 0; i < 5; ++i) {
    if (!(bits & (1u << i))) continue;
    if (buf[0]) strncat(buf, "+", n - strlen(buf) - 1);
    strncat(buf, names[i], n - strlen(buf) - 1);
  }
  return buf;
}

static const char *scope_name(unsigned scope) {
  static const char *const names[] = {"global", "domain", "device", "pasid", "range"};
  return scope < 5 ? names[scope] : "unknown";
}

/* "4 KiB", "2 MiB", "512 GiB" for a count of 4K pages (structure entries: 0 pages). */
static const char *pages_size(uint64_t pages, char *buf, size_t n) {
  static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
  uint64_t v = pages * 4;
  unsigned u = 0;
  while (v >= 1024 && v % 1024 == 0 && u < 3) {
    v /= 1024;
    ++u;
  }
  snprintf(buf, n, "%" PRIu64 " %s", v, units[u]);
  return buf;
}

static void print_fault(const nestor_event_translate *t) {
  const nestor_request *q = &t->request;
  printf("why did this DMA fault?\n");
  printf("  DMA %s by %02x:%02x.%d PASID 0x%" PRIx32 " at iova 0x%" PRIx64 "\n",
         access_name(q->access), q->source_id >> 8, (q->source_id >> 3) & 0x1f, q->source_id & 7,
         q->pasid, q->iova);
  printf("  fault reason 0x%02x: %s\n", (unsigned)t->result.fault,
         nestor_fault_name(t->result.fault));
  printf("  stage %s, level %u, address 0x%" PRIx64 "%s\n", nestor_fault_stage_name(t->fault_stage),
         (unsigned)t->result.level, t->fault_address,
         t->fault_stage == NESTOR_STAGE_SECOND_LEVEL || t->fault_stage == NESTOR_STAGE_NESTED_TABLE
             ? " (guest-physical)"
             : " (iova)");
  if (t->source != NESTOR_TRANSLATE_SOURCE_STRUCTURES)
    printf("  address space: %s, domain %u, PASID %" PRIu32 "; %s\n", stages_name(t->stages),
           (unsigned)t->domain, t->space,
           t->fault_suppressed ? "not recorded (FPD)" : "recorded in the fault log");
}

static void print_invalidation(const nestor_event_invalidation *inv) {
  const nestor_event_op *op = &inv->op;
  uint64_t i, total = 0, over = 0;
  unsigned c;
  char caches[64], size[32];
  printf("what did this invalidation remove?\n");
  printf("  operation: %s, %s", cache_bits_name(op->cache, caches, sizeof caches),
         scope_name(op->scope));
  if (op->scope == NESTOR_SCOPE_DEVICE)
    printf(" %02x:%02x.%d", op->source_id >> 8, (op->source_id >> 3) & 0x1f, op->source_id & 7);
  else if (op->scope != NESTOR_SCOPE_GLOBAL)
    printf(" domain %u", (unsigned)op->did);
  if (op->scope == NESTOR_SCOPE_PASID || op->scope == NESTOR_SCOPE_RANGE)
    printf(" PASID %" PRIu32, op->pasid);
  if (op->scope == NESTOR_SCOPE_RANGE)
    printf(" %s 0x%" PRIx64 " + %" PRIu64 " page%s", op->addr_is_gpa ? "gpa" : "iova", op->addr,
           op->npages, op->npages == 1 ? "" : "s");
  printf("%s\n", op->leaf ? " (leaf)" : "");
  for (c = 0; c < NESTOR_EVENT_CACHES; ++c) {
    total += inv->removed[c];
    over += inv->over[c];
    if (inv->removed[c])
      printf("  %s: %" PRIu64 " removed, %" PRIu64 " beyond the operation\n",
             nestor_event_cache_name(c), inv->removed[c], inv->over[c]);
  }
  for (i = 0; i < inv->entry_count; ++i) {
    const nestor_event_removed *r = nestor_event_removed_at(inv, i);
    printf("  - %s", nestor_event_cache_name(r->cache));
    if (r->cache == NESTOR_EVENT_CACHE_CONTEXT)
      printf(" %02x:%02x.%d", r->source_id >> 8, (r->source_id >> 3) & 0x1f, r->source_id & 7);
    else if (r->cache == NESTOR_EVENT_CACHE_PASID)
      printf(" PASID %" PRIu32, r->pasid);
    else {
      if (r->level) printf(" level %u", (unsigned)r->level);
      printf(" %s 0x%" PRIx64 " (%s)", r->second_level ? "gpa" : "iova", r->page << 12,
             pages_size(r->pages, size, sizeof size));
    }
    if (r->has_domain) printf(" domain %u", (unsigned)r->did);
    if (r->cache != NESTOR_EVENT_CACHE_CONTEXT && r->cache != NESTOR_EVENT_CACHE_PASID &&
        !r->second_level)
      printf(" PASID %" PRIu32, r->pasid);
    printf("%s\n", r->required ? "" : "  <- over-invalidation");
  }
  printf("  total: %" PRIu64 " entries, %" PRIu64 " over-invalidated\n", total, over);
}

static void on_event(void *user, const nestor_event *ev) {
  report *rep = (report *)user;
  if (ev->kind == NESTOR_EVENT_FAULT) {
    rep->last_fault = *ev->translate;
    ++rep->faults;
    print_fault(ev->translate);
  } else if (ev->kind == NESTOR_EVENT_INVALIDATION) {
    uint64_t i;
    rep->last_inv = *ev->invalidation;
    rep->last_inv.entries = NULL; /* points into the engine's call frame */
    rep->kept = 0;
    for (i = 0; i < ev->invalidation->entry_count && rep->kept < MAX_KEPT; ++i)
      rep->removed[rep->kept++] = *nestor_event_removed_at(ev->invalidation, i);
    ++rep->invalidations;
    print_invalidation(ev->invalidation);
  }
}

/* ---- the device ---- */
static int dma(nestor_engine *e, uint32_t pasid, uint64_t iova, uint8_t access,
               nestor_result *res) {
  nestor_request req;
  memset(&req, 0, sizeof req);
  req.source_id = DEV_SID;
  req.has_pasid = 1;
  req.pasid = pasid;
  req.iova = iova;
  req.access = access;
  CHECK(nestor_translate(e, &req, res) == 0, "nestor_translate");
  return res->fault;
}

int main(void) {
  nestor_bind_config bc;
  nestor_domain_config dc;
  nestor_bind_data bd;
  nestor_bind_inv inv;
  nestor_inv_op op;
  nestor_result res;
  nestor_bind *b;
  report rep;
  guest g;
  uint32_t owner = 0, pasid = 0;
  uint16_t did = 0;
  int hook = -1, err = 0, f;
  unsigned i, iotlb_in_range = 0;

  memset(&g, 0, sizeof g);
  memset(&rep, 0, sizeof rep);
  g.e = nestor_engine_create(NULL);
  if (!g.e) {
    fprintf(stderr, "nestor_engine_create: %s\n", nestor_last_error());
    return 1;
  }
  g.next_table = GUEST_FL_ROOT;

  /* 1. The VM. */
  CHECK(nestor_mem_add_ram(g.e, GUEST_HPA, GUEST_RAM) == 0, "guest RAM");
  CHECK(nestor_mem_add_ram(g.e, BIND_TABLES, BIND_TABLES_SIZE) == 0, "table RAM");
  memset(&bc, 0, sizeof bc);
  bc.size = sizeof bc;
  bc.table_base = BIND_TABLES;
  bc.table_size = BIND_TABLES_SIZE;
  b = nestor_bind_create(g.e, &bc, &err);
  if (!b) {
    fprintf(stderr, "nestor_bind_create: %s (%s)\n", nestor_strerror(err), nestor_last_error());
    nestor_engine_destroy(g.e);
    return 1;
  }
  CHECK(nestor_owner_create(b, 0, &owner) == 0, "owner");
  memset(&dc, 0, sizeof dc);
  dc.size = sizeof dc;
  dc.levels = 4;
  dc.flags = NESTOR_DOMAIN_NESTING;
  dc.owner = owner;
  CHECK(nestor_domain_create(b, &dc, &did) == 0, "domain");
  CHECK(nestor_domain_map(b, did, 0, GUEST_HPA, GUEST_RAM,
                          NESTOR_ACCESS_READ | NESTOR_ACCESS_WRITE) == 0,
        "map guest RAM");
  CHECK(nestor_device_attach(b, DEV_SID, did) == 0, "attach");
  CHECK(nestor_pasid_alloc(b, owner, 0, NESTOR_NO_GUEST_PASID, &pasid) == 0, "PASID");
  for (i = 0; i < NPAGES; ++i) fl_map(&g, IOVA_BASE + i * PAGE, data_gpa(i));
  fl_map(&g, STRAY_IOVA, STRAY_GPA);
  fl_map(&g, FAR_IOVA, data_gpa(NPAGES));
  memset(&bd, 0, sizeof bd);
  bd.size = sizeof bd;
  bd.fl_root_gpa = GUEST_FL_ROOT;
  bd.addr_width = 48;
  bd.guest_pasid = NESTOR_NO_GUEST_PASID;
  CHECK(nestor_bind_pgtbl(b, owner, DEV_SID, pasid, &bd) == 0, "bind");

  /* 2. The hook. Registered after setup so the bind layer's own invalidations stay quiet. */
  CHECK(nestor_event_hook_add(g.e, NESTOR_EVENT_FAULT | NESTOR_EVENT_INVALIDATION, on_event, &rep,
                              &hook) == 0,
        "nestor_event_hook_add");

  /* 3. Two DMAs that fault, for two different reasons. */
  f = dma(g.e, pasid, UNMAPPED_IOVA, NESTOR_ACCESS_READ, &res);
  CHECK(rep.faults == 1, "one fault event, got %u", rep.faults);
  CHECK(f == NESTOR_FAULT_FL_ENTRY_NOT_PRESENT && rep.last_fault.result.fault == f,
        "first-level fault 0x%x, event 0x%x", (unsigned)f, (unsigned)rep.last_fault.result.fault);
  CHECK(rep.last_fault.fault_stage == NESTOR_STAGE_FIRST_LEVEL && rep.last_fault.result.level == 1,
        "the guest's page table exists, its PTE does not: stage %d level %u",
        rep.last_fault.fault_stage, (unsigned)rep.last_fault.result.level);
  CHECK(rep.last_fault.fault_address == UNMAPPED_IOVA, "fault address");

  f = dma(g.e, pasid, STRAY_IOVA + 0x10, NESTOR_ACCESS_WRITE, &res);
  CHECK(rep.faults == 2, "two fault events, got %u", rep.faults);
  CHECK(f == NESTOR_FAULT_SL_ENTRY_NOT_PRESENT && rep.last_fault.result.fault == f,
        "second-level fault 0x%x, event 0x%x", (unsigned)f, (unsigned)rep.last_fault.result.fault);
  CHECK(rep.last_fault.fault_stage == NESTOR_STAGE_SECOND_LEVEL, "stage %d",
        rep.last_fault.fault_stage);
  CHECK(rep.last_fault.fault_address == STRAY_GPA + 0x10,
        "a second-level fault names the GPA: 0x%" PRIx64, rep.last_fault.fault_address);

  /* 4. The device uses the mapped pages; the guest unmaps pages 1 and 2 and invalidates them
   *    as a driver does after unmapping (IOTLB and paging-structure caches, no IH). */
  for (i = 0; i < NPAGES; ++i) {
    f = dma(g.e, pasid, IOVA_BASE + i * PAGE, NESTOR_ACCESS_READ, &res);
    CHECK(f == 0 && res.hpa == GUEST_HPA + data_gpa(i), "page %u", i);
  }
  f = dma(g.e, pasid, FAR_IOVA, NESTOR_ACCESS_READ, &res);
  CHECK(f == 0, "far page");
  fl_unmap(&g, IOVA_BASE + 1 * PAGE);
  fl_unmap(&g, IOVA_BASE + 2 * PAGE);
  memset(&inv, 0, sizeof inv);
  inv.size = sizeof inv;
  inv.caches = NESTOR_BIND_INV_CACHE_IOTLB | NESTOR_BIND_INV_CACHE_PAGING;
  inv.scope = NESTOR_BIND_INV_SCOPE_RANGE;
  inv.source_id = DEV_SID;
  inv.pasid = pasid;
  inv.addr = IOVA_BASE + 1 * PAGE;
  inv.npages = 2;
  CHECK(nestor_cache_invalidate(b, owner, &inv) == 0, "nestor_cache_invalidate");
  CHECK(rep.invalidations >= 1, "no invalidation event");
  CHECK(rep.last_inv.op.scope == NESTOR_SCOPE_RANGE && rep.last_inv.op.did == did &&
            rep.last_inv.op.pasid == pasid && rep.last_inv.op.addr == inv.addr,
        "the event names the operation, in host terms");
  for (i = 0; i < rep.kept; ++i) {
    const nestor_event_removed *r = &rep.removed[i];
    if (r->cache != NESTOR_EVENT_CACHE_IOTLB) continue;
    CHECK(r->page == ((IOVA_BASE >> 12) + 1) || r->page == ((IOVA_BASE >> 12) + 2),
          "IOTLB entry 0x%" PRIx64 " outside the range was removed", r->page << 12);
    CHECK(r->required, "an IOTLB entry in the range is required");
    ++iotlb_in_range;
  }
  CHECK(iotlb_in_range == 2 && rep.last_inv.removed[NESTOR_EVENT_CACHE_IOTLB] == 2,
        "two IOTLB entries removed, got %u", iotlb_in_range);
  /* 5. The emulator resets the device (a function-level reset) and flushes everything the
   *    IOMMU may hold for 00:03.0: device scope in every cache. Context entries carry the
   *    source-id; IOTLB and paging-structure entries are tagged by domain and PASID only, so
   *    the engine widens the operation to all of them, and the event says so. */
  memset(&op, 0, sizeof op);
  op.cache = NESTOR_CACHE_CONTEXT | NESTOR_CACHE_PASID | NESTOR_CACHE_IOTLB | NESTOR_CACHE_PAGING;
  op.scope = NESTOR_SCOPE_DEVICE;
  op.source_id = DEV_SID;
  CHECK(nestor_inv_submit(g.e, &op) == 0 && nestor_inv_wait(g.e) == 0, "device flush");
  CHECK(rep.invalidations == 2, "%u invalidation events", rep.invalidations);
  CHECK(rep.last_inv.removed[NESTOR_EVENT_CACHE_CONTEXT] == 1 &&
            rep.last_inv.over[NESTOR_EVENT_CACHE_CONTEXT] == 0,
        "the device's context entry is what the operation named");
  CHECK(rep.last_inv.removed[NESTOR_EVENT_CACHE_IOTLB] == 3 &&
            rep.last_inv.over[NESTOR_EVENT_CACHE_IOTLB] == 3,
        "pages 0 and 3 and the far page: removed %" PRIu64 ", over %" PRIu64,
        rep.last_inv.removed[NESTOR_EVENT_CACHE_IOTLB],
        rep.last_inv.over[NESTOR_EVENT_CACHE_IOTLB]);

  /* Removed hooks are never called again: the checks below print nothing. */
  CHECK(nestor_event_hook_remove(g.e, hook) == 0, "nestor_event_hook_remove");
  /* What the event said is what happened: the unmapped pages fault, the rest still translate. */
  CHECK(dma(g.e, pasid, IOVA_BASE + 1 * PAGE, NESTOR_ACCESS_READ, &res) ==
            NESTOR_FAULT_FL_ENTRY_NOT_PRESENT,
        "page 1 after the invalidation");
  CHECK(dma(g.e, pasid, IOVA_BASE + 3 * PAGE, NESTOR_ACCESS_READ, &res) == 0, "page 3");
  CHECK(rep.faults == 2, "a removed hook was called");

  nestor_bind_destroy(b);
  nestor_engine_destroy(g.e);
  if (g_failures) {
    fprintf(stderr, "why_fault: %d check(s) failed\n", g_failures);
    return 1;
  }
  printf("why_fault: all checks passed\n");
  return 0;
}
