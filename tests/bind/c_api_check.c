/* Compiled as C99 (-pedantic-errors): proves nestor.h, bind and event-hook sections included, is
 * valid C and drives the whole bind flow through the C ABI, watched by an event hook. Returns
 * 0, or the line of the failed check. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "nestor.h"

#define CHECK(x)               \
  do {                         \
    if (!(x)) return __LINE__; \
  } while (0)

int nestor_bind_c_smoke(void);

static int write_entry(nestor_engine *e, uint64_t hpa_base, uint64_t table_gpa, unsigned index,
                       uint64_t value) {
  return nestor_mem_write(e, hpa_base + table_gpa + index * 8u, &value, sizeof value);
}

/* What the hook saw: events by kind, the bind-event types, the last fault. */
typedef struct seen {
  unsigned by_kind[6];
  unsigned bind_types; /* bit per NESTOR_BIND_EVENT_* */
  int last_fault, last_fault_stage;
  uint64_t iotlb_removed;
} seen;

static void on_event(void *user, const nestor_event *ev) {
  seen *s = (seen *)user;
  unsigned k;
  for (k = 0; k < 6; ++k)
    if (ev->kind == (1u << k)) ++s->by_kind[k];
  if (ev->kind == NESTOR_EVENT_FAULT) {
    s->last_fault = ev->translate->result.fault;
    s->last_fault_stage = ev->translate->fault_stage;
  }
  if (ev->bind) s->bind_types |= 1u << ev->bind->type;
  if (ev->invalidation) s->iotlb_removed += ev->invalidation->removed[NESTOR_EVENT_CACHE_IOTLB];
}

static int run(nestor_engine *e, nestor_bind **out_bind) {
  const uint64_t hpa_base = 4ull << 30, iova = 0x7f0000000000ull, data_gpa = 0x200000ull;
  const uint64_t tables[4] = {0x100000ull, 0x101000ull, 0x102000ull, 0x103000ull};
  nestor_bind_config bc;
  nestor_domain_config dc;
  nestor_bind_data bd;
  nestor_bind_inv inv;
  nestor_nesting_info info;
  nestor_request req;
  nestor_result res;
  nestor_bind *b;
  uint32_t owner = 0, pasid = 0, host = 0;
  uint16_t did = 0;
  int err = 0, level, hook = -1;
  seen s;

  CHECK(nestor_mem_add_ram(e, 0, (4ull << 30) + (64ull << 20)) == 0);
  memset(&bc, 0, sizeof bc);
  bc.size = sizeof bc;
  bc.table_base = 1ull << 30;
  bc.table_size = 16ull << 20;
  b = nestor_bind_create(e, &bc, &err);
  CHECK(b != NULL && err == 0);
  *out_bind = b;
  memset(&s, 0, sizeof s);
  CHECK(nestor_event_hook_add(e, NESTOR_EVENT_ALL, on_event, &s, &hook) == 0 && hook >= 0);

  CHECK(nestor_get_nesting_info(b, &info, sizeof info) == 0);
  CHECK(info.format == NESTOR_NESTING_FORMAT_VTD && info.features == NESTOR_NESTING_FEAT_ALL);
  CHECK(((info.vtd.ecap_reg >> 26) & 1) == 1); /* NEST */

  CHECK(nestor_owner_create(b, 8, &owner) == 0);
  CHECK(nestor_pasid_alloc(b, owner, 0, 1, &pasid) == 0 && pasid != 0);
  CHECK(nestor_pasid_guest_to_host(b, owner, 1, &host) == 0 && host == pasid);
  memset(&dc, 0, sizeof dc);
  dc.size = sizeof dc;
  dc.levels = 4;
  dc.flags = NESTOR_DOMAIN_NESTING;
  dc.owner = owner;
  CHECK(nestor_domain_create(b, &dc, &did) == 0 && did != 0);
  CHECK(nestor_domain_map(b, did, 0, hpa_base, 64ull << 20,
                          NESTOR_ACCESS_READ | NESTOR_ACCESS_WRITE) == 0);
  CHECK(nestor_device_attach(b, 0x0100, did) == 0);

  /* The guest writes a 4-level table for one page in its own memory (GPA = HPA - base). */
  for (level = 0; level < 3; ++level)
    CHECK(write_entry(e, hpa_base, tables[level], (unsigned)((iova >> (39 - 9 * level)) & 511),
                      tables[level + 1] | 7u) == 0);
  CHECK(write_entry(e, hpa_base, tables[3], (unsigned)((iova >> 12) & 511), data_gpa | 7u) == 0);

  memset(&bd, 0, sizeof bd);
  bd.size = sizeof bd;
  bd.fl_root_gpa = tables[0];
  bd.addr_width = 48;
  bd.guest_pasid = 1;
  CHECK(nestor_bind_pgtbl(b, owner, 0x0100, pasid, &bd) == 0);

  memset(&req, 0, sizeof req);
  req.source_id = 0x0100;
  req.has_pasid = 1;
  req.pasid = pasid;
  req.iova = iova + 0x44;
  req.access = NESTOR_ACCESS_READ;
  CHECK(nestor_translate(e, &req, &res) == 0);
  CHECK(res.fault == 0 && res.hpa == hpa_base + data_gpa + 0x44);
  CHECK(s.by_kind[0] == 1 && s.by_kind[1] == 0); /* one translation, no fault */
  CHECK(s.by_kind[2] >= 1);                      /* its walk filled the IOTLB */

  memset(&inv, 0, sizeof inv);
  inv.size = sizeof inv;
  inv.caches = NESTOR_BIND_INV_CACHE_IOTLB | NESTOR_BIND_INV_CACHE_PAGING;
  inv.scope = NESTOR_BIND_INV_SCOPE_RANGE;
  inv.source_id = 0x0100;
  inv.pasid = 1;
  inv.flags = NESTOR_BIND_INV_GUEST_PASID;
  inv.addr = iova;
  inv.npages = 1;
  CHECK(nestor_cache_invalidate(b, owner, &inv) == 0);
  inv.pasid = 2;
  CHECK(nestor_cache_invalidate(b, owner, &inv) == -ENOENT);

  CHECK(nestor_pasid_free(b, owner, pasid) == -EBUSY);
  CHECK(nestor_unbind_pgtbl(b, owner, 0x0100, pasid) == 0);
  CHECK(nestor_translate(e, &req, &res) == 0 && res.fault != 0);
  CHECK(s.by_kind[1] == 1 && s.last_fault == res.fault); /* the fault event, as returned */
  CHECK(s.last_fault_stage == NESTOR_STAGE_STRUCTURES);  /* unbound: the PASID entry is gone */
  CHECK(nestor_pasid_free(b, owner, pasid) == 0);
  CHECK(nestor_pasid_free(b, owner, pasid) == -EALREADY);
  CHECK(nestor_domain_unmap(b, did, 0, 2ull << 20) == 0);
  CHECK(nestor_device_detach(b, 0x0100) == 0);
  CHECK(nestor_domain_destroy(b, did) == 0);
  CHECK(nestor_owner_release(b, owner) == 0);
  CHECK(nestor_owner_destroy(b, owner) == 0);
  CHECK(nestor_owner_destroy(NULL, owner) == -EINVAL);
  /* Every kind of bind-layer change was reported, and the invalidations that came with them. */
  CHECK((s.bind_types & 0x1FFFu) == 0x1FFFu);
  CHECK(s.by_kind[3] >= 1 && s.iotlb_removed >= 1);
  CHECK(nestor_event_hook_remove(e, hook) == 0);
  CHECK(nestor_event_hook_remove(e, hook) == -ENOENT);
  return 0;
}

/* A fresh engine for `body`, torn down whatever it returns. */
static int with_engine(int (*body)(nestor_engine *, nestor_bind **)) {
  nestor_engine *e = nestor_engine_create(NULL);
  nestor_bind *b = NULL;
  int line;
  if (!e) return __LINE__;
  line = body(e, &b);
  nestor_bind_destroy(b);
  nestor_engine_destroy(e);
  return line;
}

int nestor_bind_c_smoke(void) {
  return with_engine(run);
}

/* Owner-direct queue through the C ABI: a guest writes 256-bit VT-d descriptors into its own
 * memory and moves the tail; the engine answers in the guest's memory. */
int nestor_owner_queue_c_smoke(void);

static int put_desc(nestor_engine *e, uint64_t hpa, uint64_t qw0, uint64_t qw1) {
  uint64_t d[4];
  d[0] = qw0;
  d[1] = qw1;
  d[2] = 0;
  d[3] = 0;
  return nestor_mem_write(e, hpa, d, sizeof d);
}

/* Queue events of one owner queue: what a C embedder's hook sees of the wait completing. */
struct queue_seen {
  uint32_t completions, owner_queue, status_data;
  uint64_t status_addr;
};

static void on_queue_event(void *user, const nestor_event *ev) {
  struct queue_seen *s = (struct queue_seen *)user;
  if (ev->queue->type != NESTOR_QUEUE_EVENT_WAIT_COMPLETED) return;
  ++s->completions;
  s->owner_queue = ev->queue->owner_queue;
  s->status_addr = ev->queue->status_addr;
  s->status_data = ev->queue->status_data;
}

static int run_queue(nestor_engine *e, nestor_bind **out_bind) {
  const uint64_t hpa_base = 4ull << 30, queue_gpa = 0x300000ull, status_gpa = 0x301000ull;
  nestor_bind_config bc;
  nestor_domain_config dc;
  nestor_nesting_info info;
  nestor_owner_queue_stats st;
  nestor_bind *b;
  uint32_t owner = 0, other = 0, queue = 0, status = 0;
  uint16_t did = 0, other_did = 0;
  uint64_t head = 99;
  int err = 0, qerr = -1, hook = -1;
  struct queue_seen seen;

  CHECK(nestor_mem_add_ram(e, 0, (4ull << 30) + (64ull << 20)) == 0);
  memset(&bc, 0, sizeof bc);
  bc.size = sizeof bc;
  bc.features = NESTOR_NESTING_FEAT_ALL | NESTOR_NESTING_FEAT_DIRECT_INVLD;
  bc.table_base = 1ull << 30;
  bc.table_size = 16ull << 20;
  b = nestor_bind_create(e, &bc, &err);
  CHECK(b != NULL && err == 0);
  *out_bind = b;
  CHECK(nestor_get_nesting_info(b, &info, sizeof info) == 0);
  /* Direct invalidation replaces CACHE_INVLD: the host forwards nothing any more. */
  CHECK(info.features == (NESTOR_NESTING_FEAT_SYSWIDE_PASID | NESTOR_NESTING_FEAT_BIND_PGTBL |
                          NESTOR_NESTING_FEAT_DIRECT_INVLD));
  CHECK(nestor_owner_create(b, 8, &owner) == 0 && nestor_owner_create(b, 8, &other) == 0);
  memset(&dc, 0, sizeof dc);
  dc.size = sizeof dc;
  dc.levels = 4;
  dc.flags = NESTOR_DOMAIN_NESTING;
  dc.owner = owner;
  CHECK(nestor_domain_create(b, &dc, &did) == 0);
  dc.owner = other;
  CHECK(nestor_domain_create(b, &dc, &other_did) == 0);
  CHECK(nestor_domain_map(b, did, 0, hpa_base, 64ull << 20,
                          NESTOR_ACCESS_READ | NESTOR_ACCESS_WRITE) == 0);
  /* Someone else's domain, a geometry IQA cannot express, an unmapped queue page. */
  CHECK(nestor_owner_queue_create(b, owner, other_did, queue_gpa, 128, 256, &queue) == -EPERM);
  CHECK(nestor_owner_queue_create(b, owner, did, queue_gpa, 100, 256, &queue) == -EINVAL);
  CHECK(nestor_owner_queue_create(b, owner, did, 64ull << 20, 128, 256, &queue) == -EINVAL);
  CHECK(nestor_owner_queue_create(b, owner, did, queue_gpa, 128, 256, &queue) == 0);

  /* Domain-selective PASID-cache invalidation (0x7, G=00b) and a wait with status write
   * (0x5, SW bit 5, data in 63:32, address in qw1). */
  CHECK(put_desc(e, hpa_base + queue_gpa, 0x7 | (0x42ull << 16), 0) == 0);
  CHECK(put_desc(e, hpa_base + queue_gpa + 32, 0x5 | (1u << 5) | (0xC0DEull << 32), status_gpa) ==
        0);
  memset(&seen, 0, sizeof seen);
  CHECK(nestor_event_hook_add(e, NESTOR_EVENT_QUEUE, on_queue_event, &seen, &hook) == 0);
  CHECK(nestor_owner_queue_write_tail(b, queue, 2) == 0);
  CHECK(nestor_event_hook_remove(e, hook) == 0);
  CHECK(nestor_mem_read(e, hpa_base + status_gpa, &status, sizeof status) == 0);
  CHECK(status == 0xC0DE);
  /* The completion names the owner's queue and the guest's status address. */
  CHECK(seen.completions == 1 && seen.owner_queue == queue && seen.status_addr == status_gpa &&
        seen.status_data == 0xC0DE);
  CHECK(nestor_owner_queue_state(b, queue, &head, &qerr) == 0 && head == 2 &&
        qerr == NESTOR_QI_ERR_NONE);
  /* A context-cache invalidation (0x1, global) is the host's: IQE, head stays on it. */
  CHECK(put_desc(e, hpa_base + queue_gpa + 64, 0x1 | (1u << 4), 0) == 0);
  CHECK(nestor_owner_queue_write_tail(b, queue, 3) == -EBUSY);
  CHECK(nestor_owner_queue_state(b, queue, &head, &qerr) == 0 && head == 2 &&
        qerr == NESTOR_QI_ERR_IQE);
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  CHECK(nestor_owner_queue_get_stats(b, queue, &st) == 0 && st.size == sizeof st);
  CHECK(st.fault == NESTOR_OWNER_QUEUE_FAULT_HOST_ONLY && st.errors == 1 && st.descriptors == 2 &&
        st.waits == 1 && st.refused_host_only == 1 && st.descriptors_by_type[7] == 1);
  CHECK(nestor_owner_queue_clear_error(b, queue) == 0);
  CHECK(nestor_owner_queue_state(b, queue, NULL, &qerr) == 0 && qerr == NESTOR_QI_ERR_NONE);
  CHECK(nestor_domain_destroy(b, did) == -EBUSY); /* the queue lives in it */
  CHECK(nestor_owner_queue_destroy(b, queue) == 0);
  CHECK(nestor_owner_queue_destroy(b, queue) == -ENOENT);
  CHECK(nestor_owner_queue_write_tail(b, queue, 0) == -ENOENT);
  CHECK(nestor_cache_invalidate(b, owner, NULL) == -EINVAL);
  return 0;
}

int nestor_owner_queue_c_smoke(void) {
  return with_engine(run_queue);
}
