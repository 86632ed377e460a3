/* nestor: VT-d scalable-mode IOMMU translation and invalidation engine -- C ABI.
 *
 * Conventions: functions return 0 or a negative errno value (see nestor_strerror); structs
 * passed in carry no hidden state; a NULL engine pointer yields -EINVAL.
 * Thread safety: nestor_translate may run on any number of threads at once, alongside
 * nestor_mem_read/nestor_mem_write. Configuration calls (nestor_mem_add_*, set_root_table)
 * must not race with each other. This header compiles as C99 and as C++. */
#ifndef NESTOR_H
#define NESTOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define NESTOR_API __attribute__((visibility("default")))
#else
#define NESTOR_API
#endif

typedef struct nestor_engine nestor_engine;

/* Versioned: set size = sizeof(nestor_config); fields past an older caller's size take
 * their defaults. Zero fields take defaults too. */
typedef struct nestor_config {
  uint32_t size;
  uint8_t host_address_width; /* HAW, default 48 */
  uint8_t pasid_bits;         /* default 20 */
  uint8_t sagaw;              /* bit1: 39-bit, bit2: 48-bit, bit3: 57-bit second level */
  uint8_t flags;              /* NESTOR_CFG_* (0 = all features on) */
  uint32_t fault_log_entries; /* default 256 */
  /* Cache geometry (0 = default). Capacities are rounded up to powers of two. */
  uint32_t iotlb_entries;         /* default 65536 */
  uint32_t iotlb_shards;          /* default 16 */
  uint32_t iotlb_ways;            /* default 8 (the maximum) */
  uint32_t context_cache_entries; /* default 1024 */
  uint32_t pasid_cache_entries;   /* default 4096 */
  uint32_t psc_entries;           /* default 4096 per paging-structure cache */
  /* What a second-level (GPA-addressed, VT-d type 0x2) IOTLB invalidation removes:
     NESTOR_GPA_INV_ARCHITECTURAL (0, default) or NESTOR_GPA_INV_DEPENDENCIES (docs/CACHES.md). */
  uint32_t gpa_invalidation;
} nestor_config;

/* VT-d's rule: every first-level-only and nested IOTLB and paging-structure entry of the domain
   goes, whatever its address, besides the second-level entries in the range. */
#define NESTOR_GPA_INV_ARCHITECTURAL 0
/* Only nested entries whose final GPA or first-level table pages lie in the range. Exact when
   first-level changes are announced with PASID-based invalidations (the nesting contract). */
#define NESTOR_GPA_INV_DEPENDENCIES 1

#define NESTOR_CFG_NO_FL5 0x01      /* no 5-level first-level tables */
#define NESTOR_CFG_NO_FL1G 0x02     /* no 1G first-level pages */
#define NESTOR_CFG_NO_SL_LARGE 0x04 /* no 2M/1G second-level pages */
#define NESTOR_CFG_NO_FL_AD 0x08    /* do not update first-level A/D bits */
#define NESTOR_CFG_NO_CACHES 0x80   /* uncached reference engine: every translation walks */

#define NESTOR_ACCESS_READ 1
#define NESTOR_ACCESS_WRITE 2
#define NESTOR_ACCESS_EXEC 4

typedef struct nestor_request {
  uint16_t source_id; /* bus << 8 | device << 3 | function */
  uint8_t has_pasid;  /* 0: the context entry's RID_PASID applies */
  uint32_t pasid;
  uint64_t iova;
  uint8_t access; /* NESTOR_ACCESS_* */
  uint8_t privileged;
} nestor_request;

typedef struct nestor_result {
  int fault; /* 0 = translated, else a NESTOR_FAULT_* reason */
  uint64_t hpa;
  uint64_t page_size;
  uint8_t perms; /* NESTOR_ACCESS_* granted */
  uint8_t level; /* leaf level; on a fault, the level that faulted */
} nestor_result;

/* VT-d scalable-mode fault reasons (architectural codes). */
enum {
  NESTOR_FAULT_NONE = 0,
  NESTOR_FAULT_ROOT_TABLE_ADDRESS = 0x30,
  NESTOR_FAULT_ROOT_ENTRY_ACCESS = 0x38,
  NESTOR_FAULT_ROOT_ENTRY_NOT_PRESENT = 0x39,
  NESTOR_FAULT_ROOT_ENTRY_RESERVED = 0x3A,
  NESTOR_FAULT_CONTEXT_ENTRY_ACCESS = 0x40,
  NESTOR_FAULT_CONTEXT_ENTRY_NOT_PRESENT = 0x41,
  NESTOR_FAULT_CONTEXT_ENTRY_RESERVED = 0x42,
  NESTOR_FAULT_CONTEXT_ENTRY_INVALID = 0x43, /* named, never produced */
  NESTOR_FAULT_CONTEXT_PASID_DISABLED = 0x45,
  NESTOR_FAULT_PASID_TOO_LARGE = 0x46,
  NESTOR_FAULT_RID_PASID = 0x48,
  NESTOR_FAULT_PASID_DIR_ACCESS = 0x50,
  NESTOR_FAULT_PASID_DIR_NOT_PRESENT = 0x51,
  NESTOR_FAULT_PASID_DIR_RESERVED = 0x52,
  NESTOR_FAULT_PASID_ENTRY_ACCESS = 0x58,
  NESTOR_FAULT_PASID_ENTRY_NOT_PRESENT = 0x59,
  NESTOR_FAULT_PASID_ENTRY_RESERVED = 0x5A,
  NESTOR_FAULT_PASID_ENTRY_INVALID = 0x5B,
  NESTOR_FAULT_ERE_CLEAR = 0x5C,
  NESTOR_FAULT_SRE_CLEAR = 0x5D,
  NESTOR_FAULT_FL_ENTRY_ACCESS = 0x70,
  NESTOR_FAULT_FL_ENTRY_NOT_PRESENT = 0x71,
  NESTOR_FAULT_FL_ENTRY_RESERVED = 0x72,
  NESTOR_FAULT_FL_ROOT_ACCESS = 0x73,
  NESTOR_FAULT_FL_ADDRESS_BEYOND_GAW = 0x74,
  NESTOR_FAULT_FL_ROOT_READ_DENIED = 0x75,
  NESTOR_FAULT_FL_ENTRY_READ_DENIED = 0x76,
  NESTOR_FAULT_FL_ENTRY_WRITE_DENIED = 0x77,
  NESTOR_FAULT_SL_ENTRY_ACCESS = 0x78,
  NESTOR_FAULT_SL_ENTRY_NOT_PRESENT = 0x79,
  NESTOR_FAULT_SL_ENTRY_RESERVED = 0x7A,
  NESTOR_FAULT_SL_POINTER_INVALID = 0x7B,
  NESTOR_FAULT_NON_CANONICAL = 0x80,
  NESTOR_FAULT_USER_DENIED = 0x81,
  NESTOR_FAULT_EXEC_DENIED = 0x82,
  NESTOR_FAULT_ADDRESS_BEYOND_MAX = 0x83,
  NESTOR_FAULT_SL_ADDRESS_BEYOND_MAX = 0x84, /* never produced: such an entry is 0x7A */
  NESTOR_FAULT_WRITE_DENIED = 0x85,
  NESTOR_FAULT_READ_DENIED = 0x86
};

/* Where in the translation a fault arose. */
enum {
  NESTOR_STAGE_NONE = 0,
  NESTOR_STAGE_STRUCTURES = 1,
  NESTOR_STAGE_FIRST_LEVEL = 2,
  NESTOR_STAGE_SECOND_LEVEL = 3,
  NESTOR_STAGE_NESTED_TABLE = 4 /* second-level fault while fetching a first-level table */
};

typedef struct nestor_fault_record {
  uint16_t source_id;
  uint8_t has_pasid;
  uint32_t pasid;
  uint64_t iova;
  uint8_t access;
  uint8_t privileged;
  int reason;       /* NESTOR_FAULT_* */
  int stage;        /* NESTOR_STAGE_* */
  uint8_t level;
  uint64_t address; /* iova, or the GPA for second-level and nested-table faults */
} nestor_fault_record;

/* NULL on an invalid configuration (a field outside the documented limits, docs/LIMITS.md:
 * HAW 32..52, pasid_bits 1..20, sagaw within bits 1-3, cache and fault-log sizes) or no
 * memory; nestor_last_error() then says which. */
NESTOR_API nestor_engine *nestor_engine_create(const nestor_config *cfg); /* NULL: defaults */
/* As nestor_engine_create; *err (if non-NULL) is 0, -EINVAL (invalid configuration) or
 * -ENOMEM. */
NESTOR_API nestor_engine *nestor_engine_create2(const nestor_config *cfg, int *err);
/* The calling thread's reason for its last failed nestor_engine_create/_create2 or
 * nestor_bind_create ("" if none). Valid until that thread's next failing create call. */
NESTOR_API const char *nestor_last_error(void);
NESTOR_API void nestor_engine_destroy(nestor_engine *e);
/* Platform reset (e.g. a guest reboot): empties every cache, processes queued invalidations
 * and returns the invalidation-queue registers to their power-on values, empties the fault
 * log (and its overflow flag), unsets the root-table pointer and zeroes engine-owned RAM
 * (nestor_mem_add_ram) without unmapping it. Configuration, RAM regions (caller-owned RAM
 * keeps its contents), callbacks (I/O and event hooks) and statistics stay. Only while no
 * other thread uses the engine. Returns 0 or -EINVAL. */
NESTOR_API int nestor_engine_reset(nestor_engine *e);

NESTOR_API int nestor_mem_add_ram(nestor_engine *e, uint64_t base, uint64_t size); /* zeroed, engine-owned */
/* Caller-owned RAM: `host` must stay valid (and 8-byte aligned) while the engine lives. */
NESTOR_API int nestor_mem_add_host_ram(nestor_engine *e, uint64_t base, uint64_t size, void *host);
/* Removes the RAM region added (nestor_mem_add_ram or nestor_mem_add_host_ram) with exactly this
 * base and size: engine-owned RAM is unmapped, caller-owned RAM is the caller's again. Cached
 * translations stay until invalidated (or nestor_engine_reset). Only while no other thread
 * uses the engine. Returns 0, -EINVAL (NULL engine) or -ENOENT (no such region). */
NESTOR_API int nestor_mem_remove_ram(nestor_engine *e, uint64_t base, uint64_t size);
/* Everything outside RAM goes to these callbacks (either may be NULL: accesses fault). */
typedef int (*nestor_io_read_fn)(void *ctx, uint64_t pa, void *buf, size_t len);
typedef int (*nestor_io_write_fn)(void *ctx, uint64_t pa, const void *buf, size_t len);
NESTOR_API int nestor_mem_set_io(nestor_engine *e, nestor_io_read_fn rd, nestor_io_write_fn wr,
                                 void *ctx);
NESTOR_API int nestor_mem_write(nestor_engine *e, uint64_t pa, const void *buf, size_t len);
NESTOR_API int nestor_mem_read(nestor_engine *e, uint64_t pa, void *buf, size_t len);

NESTOR_API int nestor_set_root_table(nestor_engine *e, uint64_t root_table_pa);
NESTOR_API int nestor_translate(nestor_engine *e, const nestor_request *req, nestor_result *res);

/* Fault log: copies up to `max` records out (oldest first) and removes them. Returns the
 * number copied (>= 0) or a negative errno. *overflow (if non-NULL) reports whether faults
 * were dropped since the last nestor_fault_log_clear_overflow. */
NESTOR_API int nestor_fault_log_drain(nestor_engine *e, nestor_fault_record *out, size_t max,
                                      int *overflow);
NESTOR_API int nestor_fault_log_clear_overflow(nestor_engine *e);

/* ==== Address spaces, batch translation, statistics ======================================
 * A handle pre-resolves (source-id, PASID): translations through it skip the context and
 * PASID-cache lookups until an invalidation is applied. A handle is used by one thread at a
 * time; open as many as needed (one per device per thread). Close before destroying the engine. */
typedef struct nestor_handle nestor_handle;
NESTOR_API nestor_handle *nestor_handle_open(nestor_engine *e, uint16_t source_id, uint8_t has_pasid,
                                             uint32_t pasid, uint8_t privileged);
NESTOR_API void nestor_handle_close(nestor_handle *h);
NESTOR_API int nestor_handle_translate(nestor_handle *h, uint64_t iova, uint8_t access,
                                       nestor_result *res);
/* n requests -> n results (same as n nestor_translate calls); thread-safe like nestor_translate. */
NESTOR_API int nestor_translate_batch(nestor_engine *e, const nestor_request *reqs,
                                      nestor_result *res, size_t n);

typedef struct nestor_cache_stats {
  uint64_t hits, misses, fills, refused_fills, evictions;
  uint64_t inv_global, inv_domain, inv_pasid, inv_device, inv_page, inv_range, inv_gpa;
  uint64_t inv_promoted, over_invalidations, entries_removed;
} nestor_cache_stats;

/* Versioned: set size = sizeof(nestor_stats); counters are summed over threads on demand. */
typedef struct nestor_stats {
  uint32_t size;
  uint32_t reserved;
  nestor_cache_stats context, pasid, iotlb, psc_first_level, psc_second_level, psc_nested_table;
  /* Page walks (IOTLB misses, or every translation with caching off) and the table entries
   * they read, nested-table translations included: walk_refs / walks is references per miss. */
  uint64_t walks, walk_refs;
} nestor_stats;
NESTOR_API int nestor_get_stats(nestor_engine *e, nestor_stats *out);

NESTOR_API const char *nestor_fault_name(int reason);
/* Every negative errno the ABI returns has a text; an I/O callback's own code comes back
 * unchanged and is described as such. */
NESTOR_API const char *nestor_strerror(int err);

/* ==== Invalidation (typed) ================================================================
 * A canonical invalidation operation. Submitted operations are applied to the engine's caches
 * in order; nestor_inv_wait returns once every earlier operation is applied. Thread-safe:
 * any thread may submit and wait, concurrently with translations. */
#define NESTOR_CACHE_CONTEXT 1
#define NESTOR_CACHE_PASID 2
#define NESTOR_CACHE_IOTLB 4
#define NESTOR_CACHE_PAGING 8
#define NESTOR_CACHE_DEVTLB 16
#define NESTOR_SCOPE_GLOBAL 0
#define NESTOR_SCOPE_DOMAIN 1
#define NESTOR_SCOPE_DEVICE 2
#define NESTOR_SCOPE_PASID 3
#define NESTOR_SCOPE_RANGE 4

typedef struct nestor_inv_op {
  uint8_t  cache;     /* bitmask: NESTOR_CACHE_CONTEXT=1, _PASID=2, _IOTLB=4, _PAGING=8, _DEVTLB=16 */
  uint8_t  scope;     /* NESTOR_SCOPE_GLOBAL, _DOMAIN, _DEVICE, _PASID, _RANGE */
  uint16_t did;
  uint16_t source_id;
  uint32_t pasid;
  uint64_t addr;      /* _RANGE: first byte */
  uint64_t npages;    /* _RANGE: 4K pages */
  uint8_t  leaf;      /* invalidation hint: paging-structure caches may be kept */
} nestor_inv_op;

/* Enqueues (see "Invalidation queue" below); nestor_inv_wait makes it take effect.
 * -EINVAL for an unknown cache bit or scope, a range with npages 0 or past 2^64, or a range
 * address that is not 4K aligned (the rule of every invalidation front end). */
NESTOR_API int nestor_inv_submit(nestor_engine *e, const nestor_inv_op *op);
NESTOR_API int nestor_inv_wait(nestor_engine *e); /* returns once all earlier ops are applied (and drained) */

/* ==== Invalidation queue (engine/src/c_api_invalidation.cpp; C++: nestor/invalidation.h) ====
 * Every front end below (typed ops above, VT-d queued invalidation, uAPI-style calls) feeds one
 * queue per engine: operations are batched up to the next wait, coalesced, applied to the
 * caches, drained (with NESTOR_CFG_DRAIN), then the wait completes. nestor_inv_submit and the
 * uAPI calls only enqueue; nestor_inv_wait (or a QI wait descriptor) makes them take effect.
 * Without NESTOR_CFG_BACKGROUND_INV the thread that waits (or writes the QI tail) does the
 * processing; with it, a worker thread does. Never call nestor_inv_wait or nestor_qi_write_tail
 * from an I/O callback of a translation (with drain on, the wait would wait for itself). */

/* The queue holds at most NESTOR_INV_MAX_PENDING entries (ops + waits, from every front end)
 * not yet taken for processing. At the limit, without a worker, the submitting call applies
 * what is queued itself (applying early is always allowed); with NESTOR_CFG_BACKGROUND_INV it
 * blocks until the worker has taken the queue, and a QI tail write then fetches (and advances
 * head) only as fast as the worker accepts: descriptors not yet fetched stay in the ring. */
#define NESTOR_INV_MAX_PENDING 65536

/* nestor_config.flags bits for invalidation. */
#define NESTOR_CFG_DRAIN 0x10          /* waits also wait for translations already in flight */
#define NESTOR_CFG_NO_COALESCE 0x20    /* apply every queued op as submitted */
#define NESTOR_CFG_BACKGROUND_INV 0x40 /* a worker thread processes the queue */

/* VT-d queued invalidation (QI): descriptors (128- or 256-bit, VT-d 6.5.2 formats) live in
 * machine memory at base_pa, `entries` of them (entries * descriptor size must be 2^n 4K pages,
 * n <= 7). Configuring resets head and tail to 0 and clears any error. */
#define NESTOR_QI_ERR_NONE 0
#define NESTOR_QI_ERR_IQE 1 /* invalid descriptor, unreadable descriptor or bad tail */
#define NESTOR_QI_ERR_ITE 2 /* device-TLB invalidation time-out (never raised here) */
#define NESTOR_QI_ERR_ICE 3 /* invalidation completion error (never raised here) */
NESTOR_API int nestor_qi_configure(nestor_engine *e, uint64_t base_pa, uint64_t entries,
                                   unsigned descriptor_bits /* 128 or 256 */);
/* Tail-register write (descriptor index): fetches, decodes and queues [head, tail), stopping on
 * the first bad descriptor (head stays on it; nothing after it is applied until
 * nestor_qi_clear_error and the next tail write). Without a worker it also processes the
 * queue, so wait-descriptor status writes have landed in machine memory when it returns.
 * Returns 0, -EINVAL (not configured) or -EBUSY (the queue is stopped on an error). */
NESTOR_API int nestor_qi_write_tail(nestor_engine *e, uint64_t tail_index);
/* head_index: next descriptor to fetch; error: NESTOR_QI_ERR_*. Either pointer may be NULL. */
NESTOR_API int nestor_qi_state(nestor_engine *e, uint64_t *head_index, int *error);
NESTOR_API int nestor_qi_clear_error(nestor_engine *e);

/* uAPI-style cache invalidation (Linux iommu_cache_invalidate_info-like), for (did, source_id).
 * Valid cache x granularity: IOTLB: DOMAIN, PASID, ADDR; DEV_IOTLB: PASID, ADDR; PASID cache:
 * DOMAIN, PASID. Every type in the mask must be valid for the granularity. ADDR: granule_size
 * a power of two >= 4K, addr aligned to it, nb_granules >= 1, no overflow; with
 * NESTOR_UAPI_FLAG_ADDR_NO_PASID the range has no PASID (IOTLB: every PASID of the domain is
 * flushed; device TLB: its requests without PASID). Else -EINVAL, nothing queued. */
#define NESTOR_UAPI_CACHE_IOTLB 0x1u
#define NESTOR_UAPI_CACHE_DEV_IOTLB 0x2u
#define NESTOR_UAPI_CACHE_PASID 0x4u
#define NESTOR_UAPI_GRAN_DOMAIN 0u
#define NESTOR_UAPI_GRAN_PASID 1u
#define NESTOR_UAPI_GRAN_ADDR 2u
#define NESTOR_UAPI_FLAG_LEAF 0x1u
#define NESTOR_UAPI_FLAG_ADDR_NO_PASID 0x2u /* Linux: IOMMU_INV_ADDR_FLAGS_PASID clear */
typedef struct nestor_uapi_cache_inv {
  uint32_t size;        /* sizeof(nestor_uapi_cache_inv) */
  uint32_t cache;       /* NESTOR_UAPI_CACHE_* mask */
  uint32_t granularity; /* NESTOR_UAPI_GRAN_* */
  uint32_t flags;       /* NESTOR_UAPI_FLAG_* */
  uint16_t did;         /* domain of the IOTLB / PASID-cache entries */
  uint16_t source_id;   /* device of the device-TLB entries */
  uint32_t pasid;
  uint64_t addr;         /* ADDR: first byte, aligned to granule_size */
  uint64_t granule_size; /* ADDR: a power of two >= 4K */
  uint64_t nb_granules;  /* ADDR: >= 1 */
} nestor_uapi_cache_inv;
NESTOR_API int nestor_uapi_cache_invalidate(nestor_engine *e, const nestor_uapi_cache_inv *inv);

/* iommufd IOMMU_HWPT_INVALIDATE_DATA_VTD_S1-like array of first-level IOTLB ranges for
 * (did, pasid). Like every call in this section it is the host's (the engine's owner's): it
 * takes host DIDs and checks no ownership. A first-level owner (a VM) invalidates through the
 * bind layer's nestor_cache_invalidate, which checks that it bound (source-id, PASID) and
 * fills in the host DID itself. addr 0 with npages NESTOR_UAPI_ALL_PAGES = the whole PASID. Returns the number
 * of entries queued before the first invalid one (== count on success), or -EINVAL for NULL
 * arguments; *error (if non-NULL) is 0, -EOPNOTSUPP (unknown flags or non-zero reserved, as
 * Linux's intel_nested_cache_invalidate_user) or -EINVAL for entry [return value]. */
#define NESTOR_UAPI_IOTLB_LEAF 0x1u
#define NESTOR_UAPI_ALL_PAGES UINT64_MAX
typedef struct nestor_uapi_iotlb_entry {
  uint64_t addr;   /* 4K aligned */
  uint64_t npages; /* >= 1 */
  uint32_t flags;  /* NESTOR_UAPI_IOTLB_LEAF */
  uint32_t reserved; /* must be 0 */
} nestor_uapi_iotlb_entry;
NESTOR_API int nestor_uapi_iotlb_invalidate_array(nestor_engine *e, uint16_t did, uint32_t pasid,
                                                  const nestor_uapi_iotlb_entry *entries,
                                                  uint32_t count, int *error);

/* Statistics, versioned by size: the engine fills min(size, what it knows) bytes and reports
 * what it knows in out->size. -EINVAL if out is NULL or size < 8. */
#define NESTOR_INV_STATS_VERSION 2u /* 2: pending_max */
#define NESTOR_INV_STATS_TYPES 16 /* descriptor types 0x0..0xF */
typedef struct nestor_inv_stats {
  uint32_t size;    /* in: sizeof(nestor_inv_stats); out: bytes the engine filled */
  uint32_t version; /* out: NESTOR_INV_STATS_VERSION */
  uint64_t descriptors_by_type[NESTOR_INV_STATS_TYPES]; /* QI descriptors decoded, by type */
  uint64_t ops_submitted;       /* from every front end */
  uint64_t waits_submitted;
  uint64_t batches;             /* batches applied (ops between two waits) */
  uint64_t batch_ops_sum;       /* ops entering coalescing, summed over batches */
  uint64_t batch_ops_max;       /* largest batch */
  uint64_t ops_applied;         /* ops applied to the caches after coalescing */
  uint64_t coalesced_away;      /* batch_ops_sum - ops_applied */
  uint64_t promotions;          /* ranges widened to PASID/domain scope */
  uint64_t waits_completed;
  uint64_t wait_latency_sum_ns; /* submission to completion */
  uint64_t wait_latency_max_ns;
  uint64_t interrupts;          /* waits with IF set */
  uint64_t drains;              /* grace periods waited for */
  uint64_t errors;              /* queue errors and failed status writes */
  uint64_t pending_max;         /* most entries queued at once (<= NESTOR_INV_MAX_PENDING) */
} nestor_inv_stats;
NESTOR_API int nestor_inv_get_stats(nestor_engine *e, nestor_inv_stats *out);
/* ==== end of Invalidation queue ============================================================ */

/* ==== Bind layer (engine/src/bind_c_api.cpp; C++: nestor/bind.h) ============================
 * The host side that feeds the engine: second-level domains, devices, system-wide PASIDs,
 * binding guest first-level tables, and first-level owners' cache invalidations.
 * Every function returns 0 (or a count) or a negative errno; a refusal changes nothing:
 *   -EINVAL bad arguments, -ENOENT unknown object, -EPERM not the owner, -EOPNOTSUPP feature
 *   off or not supported by the engine configuration, -EDQUOT quota, -ENOSPC exhausted,
 *   -EALREADY double free, -EBUSY in use, -EEXIST overlapping mapping, -ENOMEM no table page.
 * Thread safety: every nestor_bind_* / nestor_owner_* / nestor_pasid_* / nestor_domain_* /
 * nestor_device_* function may be called from any thread at once (serialised internally;
 * nestor_pasid_alloc runs in parallel), and concurrently with nestor_translate. Only
 * nestor_bind_destroy must not race with anything on the same handle.
 * Each operation that changes a structure invalidates the engine's caches and waits before it
 * returns: a translation that starts afterwards sees the new state. */

typedef struct nestor_bind nestor_bind;

/* Nesting features (see nestor/nesting_info.h for the exact duties). */
#define NESTOR_NESTING_FEAT_SYSWIDE_PASID 0x1u /* allocate/free PASIDs through the engine */
#define NESTOR_NESTING_FEAT_BIND_PGTBL 0x2u    /* bind first-level tables explicitly */
#define NESTOR_NESTING_FEAT_CACHE_INVLD 0x4u   /* invalidate explicitly after table changes */
/* The owner invalidates through its own direct queue (nestor_owner_queue_*); opt-in, and a
 * configuration with it has no CACHE_INVLD (nestor_cache_invalidate answers -EOPNOTSUPP). */
#define NESTOR_NESTING_FEAT_DIRECT_INVLD 0x8u
#define NESTOR_NESTING_FEAT_ALL 0x7u /* the default set: SYSWIDE_PASID, BIND_PGTBL, CACHE_INVLD */
#define NESTOR_NESTING_FORMAT_VTD 1u

/* Versioned: set size = sizeof(nestor_bind_config). features == 0 means all features (use
 * NESTOR_BIND_CFG_NO_FEATURES for none). table_base/table_size: RAM already added to the
 * engine from which the layer takes every table (4K aligned, >= 256 KiB). */
typedef struct nestor_bind_config {
  uint32_t size;
  uint32_t features; /* NESTOR_NESTING_FEAT_* */
  uint64_t table_base;
  uint64_t table_size;
  uint16_t max_domain_id; /* 0: 65535 */
  uint16_t reserved0;
  uint32_t reserved1;
} nestor_bind_config;
#define NESTOR_BIND_CFG_NO_FEATURES 0x80000000u

/* Creates the bind layer of `e` (one per engine) and points the engine's root-table register
 * at it. NULL on bad arguments or no memory; *err (if non-NULL) says which. */
NESTOR_API nestor_bind *nestor_bind_create(nestor_engine *e, const nestor_bind_config *cfg,
                                           int *err);
/* Frees the layer's bookkeeping; the structures stay in machine memory. Not thread-safe. */
NESTOR_API void nestor_bind_destroy(nestor_bind *b);

/* Nesting information, versioned by size: the engine copies min(size, what it knows) bytes
 * and zeroes the rest of the caller's buffer; out->size reports what it knows. */
typedef struct nestor_nesting_info_vtd {
  uint64_t cap_reg;  /* VT-d CAP register value matching the engine configuration */
  uint64_t ecap_reg; /* VT-d ECAP register value */
  uint32_t flags;
  uint32_t reserved;
} nestor_nesting_info_vtd;

typedef struct nestor_nesting_info {
  uint32_t size;     /* out: bytes the engine knows */
  uint32_t format;   /* NESTOR_NESTING_FORMAT_VTD */
  uint32_t features; /* NESTOR_NESTING_FEAT_* */
  uint32_t flags;
  uint8_t host_address_width;  /* HAW */
  uint8_t guest_address_width; /* MGAW: widest second-level input width */
  uint8_t pasid_bits;
  uint8_t fl_levels; /* bit n: n-level first-level tables supported (bits 4, 5) */
  uint8_t sl_levels; /* bit n: n-level second-level tables supported (bits 3, 4, 5) */
  uint8_t reserved[3];
  nestor_nesting_info_vtd vtd;
} nestor_nesting_info;

/* -EINVAL if info is NULL or size < 4. */
NESTOR_API int nestor_get_nesting_info(nestor_bind *b, void *info, uint32_t size);

/* Owners (one per VM, typically). IDs are >= 1. quota 0 = unlimited PASIDs. */
NESTOR_API int nestor_owner_create(nestor_bind *b, uint32_t pasid_quota, uint32_t *owner);
/* -EBUSY while the owner holds PASIDs, bindings or domains. */
NESTOR_API int nestor_owner_destroy(nestor_bind *b, uint32_t owner);
/* Unbinds everything the owner bound and frees all its PASIDs; returns how many PASIDs. */
NESTOR_API int nestor_owner_release(nestor_bind *b, uint32_t owner);

/* System-wide PASIDs from [1, 2^pasid_bits) (SYSWIDE_PASID). want 0 = any free PASID;
 * guest_pasid NESTOR_NO_GUEST_PASID = the guest uses host PASIDs. */
#define NESTOR_NO_GUEST_PASID 0xFFFFFFFFu
NESTOR_API int nestor_pasid_alloc(nestor_bind *b, uint32_t owner, uint32_t want,
                                  uint32_t guest_pasid, uint32_t *pasid);
NESTOR_API int nestor_pasid_free(nestor_bind *b, uint32_t owner, uint32_t pasid);
NESTOR_API int nestor_pasid_guest_to_host(nestor_bind *b, uint32_t owner, uint32_t guest_pasid,
                                          uint32_t *pasid);

/* Second-level domains. levels 3/4/5; flags NESTOR_DOMAIN_*; owner 0 = host only. */
#define NESTOR_DOMAIN_NESTING 0x1u /* first-level tables may be bound on top */
#define NESTOR_DOMAIN_AD 0x2u      /* second-level A/D tracking */
typedef struct nestor_domain_config {
  uint32_t size;
  uint8_t levels;
  uint8_t reserved[3];
  uint32_t flags;
  uint32_t owner;
} nestor_domain_config;

NESTOR_API int nestor_domain_create(nestor_bind *b, const nestor_domain_config *cfg, uint16_t *did);
/* Wraps a second-level root the caller built and keeps owning (no map/unmap through it). */
NESTOR_API int nestor_domain_adopt(nestor_bind *b, const nestor_domain_config *cfg,
                                   uint64_t sl_root, uint16_t *did);
NESTOR_API int nestor_domain_destroy(nestor_bind *b, uint16_t did);
/* perms: NESTOR_ACCESS_* (read or write required). Page sizes are chosen automatically. */
NESTOR_API int nestor_domain_map(nestor_bind *b, uint16_t did, uint64_t gpa, uint64_t hpa,
                                 uint64_t size, uint8_t perms);
/* Invalidates the range (IOTLB + paging-structure caches, by GPA) and waits. */
NESTOR_API int nestor_domain_unmap(nestor_bind *b, uint16_t did, uint64_t gpa, uint64_t size);

/* Devices: attach writes the context entry and a second-level-only RID_PASID (0) entry. */
NESTOR_API int nestor_device_attach(nestor_bind *b, uint16_t source_id, uint16_t did);
NESTOR_API int nestor_device_detach(nestor_bind *b, uint16_t source_id);

/* Binding a guest first-level table (BIND_PGTBL). pasid 0 = the device's default PASID. */
#define NESTOR_BIND_SRE 0x1u
#define NESTOR_BIND_WPE 0x2u
#define NESTOR_BIND_EAFE 0x4u
#define NESTOR_BIND_PCD 0x8u
#define NESTOR_BIND_PWT 0x10u
typedef struct nestor_bind_data {
  uint32_t size;
  uint32_t flags;       /* NESTOR_BIND_* */
  uint64_t fl_root_gpa; /* 4K aligned guest-physical address of the top table */
  uint32_t addr_width;  /* 48 (4-level) or 57 (5-level) */
  uint32_t guest_pasid; /* NESTOR_NO_GUEST_PASID if none */
} nestor_bind_data;

NESTOR_API int nestor_bind_pgtbl(nestor_bind *b, uint32_t owner, uint16_t source_id, uint32_t pasid,
                                 const nestor_bind_data *data);
NESTOR_API int nestor_unbind_pgtbl(nestor_bind *b, uint32_t owner, uint16_t source_id,
                                   uint32_t pasid);

/* First-level owner's invalidation (CACHE_INVLD). caches: NESTOR_BIND_INV_CACHE_* (context
 * cache refused); scope: NESTOR_BIND_INV_SCOPE_PASID or _RANGE target (source_id, pasid), which
 * the owner must have bound; _GLOBAL/_DOMAIN mean all the owner's bindings, _DEVICE all of
 * them on source_id. Values equal nestor::invq::CacheBits / Scope. */
#define NESTOR_BIND_INV_CACHE_PASID 0x2u
#define NESTOR_BIND_INV_CACHE_IOTLB 0x4u
#define NESTOR_BIND_INV_CACHE_PAGING 0x8u
#define NESTOR_BIND_INV_CACHE_DEVTLB 0x10u
#define NESTOR_BIND_INV_SCOPE_GLOBAL 0u
#define NESTOR_BIND_INV_SCOPE_DOMAIN 1u
#define NESTOR_BIND_INV_SCOPE_DEVICE 2u
#define NESTOR_BIND_INV_SCOPE_PASID 3u
#define NESTOR_BIND_INV_SCOPE_RANGE 4u
#define NESTOR_BIND_INV_GUEST_PASID 0x1u /* flags: pasid is the owner's guest PASID */
#define NESTOR_BIND_INV_LEAF 0x2u        /* flags: only leaf entries changed (IH) */
typedef struct nestor_bind_inv {
  uint32_t size;
  uint8_t caches;
  uint8_t scope;
  uint16_t source_id;
  uint32_t pasid;
  uint32_t flags;
  uint64_t addr;   /* 4K aligned, range scope */
  uint64_t npages; /* range scope */
} nestor_bind_inv;

NESTOR_API int nestor_cache_invalidate(nestor_bind *b, uint32_t owner, const nestor_bind_inv *inv);

/* Owner-direct invalidation queues (DIRECT_INVLD; docs/BIND.md). The host creates a VT-d
 * invalidation queue for an owner in the owner's memory; the owner (its emulated vIOMMU, or a
 * guest driver in an emulator) writes VT-d descriptors there and moves the tail, and the engine
 * consumes them like the host queue (nestor_qi_*): same decoder, batching, coalescing, waits
 * and IQE rules. Guest PASIDs are translated (nestor_pasid_alloc's guest map, or the guest
 * PASID of a binding), guest DIDs name nothing on the host, and every descriptor applies to the
 * owner's own bindings only: domain-selective and global mean all of them. Host-only types
 * (context cache 0x1, IOTLB 0x2, interrupt entry cache 0x4), a PASID the owner cannot name, a
 * device outside the owner's domains and a status address not writable in the queue's domain
 * raise IQE on this queue only. Without NESTOR_NESTING_FEAT_DIRECT_INVLD every call answers
 * -EOPNOTSUPP.
 * The queue lives in the owner's memory: base_gpa and every status address are guest
 * addresses translated through the second-level domain `domain_did`, which the owner owns.
 * entries * descriptor_bits / 8 must be 2^n 4K pages (n <= 7), each mapped readable now.
 * -EINVAL geometry, alignment or an unmapped queue page; -ENOENT unknown owner or domain;
 * -EPERM someone else's domain. The domain and owner cannot be destroyed while it exists. */
NESTOR_API int nestor_owner_queue_create(nestor_bind *b, uint32_t owner, uint16_t domain_did,
                                         uint64_t base_gpa, uint64_t entries,
                                         unsigned descriptor_bits, uint32_t *queue);
NESTOR_API int nestor_owner_queue_destroy(nestor_bind *b, uint32_t queue);
/* Fetches, checks and queues [head, tail); without NESTOR_CFG_BACKGROUND_INV it also applies
 * them, so status writes have landed in the owner's memory on return. 0 or -EBUSY (the queue
 * stopped on an error: head stays on the bad descriptor, those before it took effect). */
NESTOR_API int nestor_owner_queue_write_tail(nestor_bind *b, uint32_t queue, uint64_t tail_index);
/* head_index: next descriptor; error: NESTOR_QI_ERR_*. Either pointer may be NULL. */
NESTOR_API int nestor_owner_queue_state(nestor_bind *b, uint32_t queue, uint64_t *head_index,
                                        int *error);
NESTOR_API int nestor_owner_queue_clear_error(nestor_bind *b, uint32_t queue);

/* Why a direct queue stopped (its architectural error is IQE for every one). */
#define NESTOR_OWNER_QUEUE_FAULT_NONE 0u
#define NESTOR_OWNER_QUEUE_FAULT_DECODE 1u         /* the VT-d decoder refused it */
#define NESTOR_OWNER_QUEUE_FAULT_FETCH 2u          /* descriptor GPA not readable in the domain */
#define NESTOR_OWNER_QUEUE_FAULT_TAIL 3u           /* tail beyond the queue */
#define NESTOR_OWNER_QUEUE_FAULT_HOST_ONLY 4u      /* type 0x1, 0x2 or 0x4 */
#define NESTOR_OWNER_QUEUE_FAULT_NOT_OWNED 5u      /* PASID or device not the owner's */
#define NESTOR_OWNER_QUEUE_FAULT_STATUS_ADDRESS 6u /* status GPA not writable in the domain */

/* Per-queue counters; versioned: set size, the engine fills min(size, what it knows). */
typedef struct nestor_owner_queue_stats {
  uint32_t size;
  uint32_t fault; /* NESTOR_OWNER_QUEUE_FAULT_* of the current stop (NONE while running) */
  uint64_t tail_writes;
  uint64_t descriptors;   /* accepted */
  uint64_t ops_submitted; /* host operations after tag translation */
  uint64_t waits;
  uint64_t errors; /* times the queue stopped */
  uint64_t refused_host_only;
  uint64_t refused_not_owned;
  uint64_t refused_status;
  uint64_t descriptors_by_type[16]; /* accepted, by VT-d type */
} nestor_owner_queue_stats;
NESTOR_API int nestor_owner_queue_get_stats(nestor_bind *b, uint32_t queue,
                                            nestor_owner_queue_stats *out);
/* ==== end of Bind layer ==================================================================== */

/* ==== Event hooks (engine/src/c_api_events.cpp; C++: nestor/events.h) ======================
 * What the engine did, as it happens: an embedder registers a callback with a user pointer for
 * a set of event kinds, and the engine calls it for every event of those kinds -- each
 * translation (request, result or fault with reason, stage and level, and where the answer came
 * from), each entry offered to a cache, each invalidation applied (the canonical operation and
 * every entry it removed, marked when the operation did not require it), the invalidation
 * queue's descriptors, completed waits and errors, and the bind layer's changes. A kind no hook
 * asked for builds no event.
 *
 * Where callbacks run: synchronously, on the thread that caused the event. Translation, fault
 * and fill events come from translating threads -- any number at once, so a callback must be
 * thread-safe; invalidation events from the thread that applies the operation (the caller of
 * nestor_inv_wait, nestor_qi_write_tail, a bind-layer call or nestor_engine_reset, a submitting
 * call that found the queue full, or the NESTOR_CFG_BACKGROUND_INV worker); queue events from
 * the tail writer or the worker; bind events from the caller of the bind-layer function.
 *
 * What a callback may not call: any function on the engine that emitted the event or on its
 * bind layer (translate, handles, memory access, invalidation and waits, QI registers, hook
 * add/remove, reset, destroy, nestor_bind_* and the other bind-layer calls). The engine holds
 * internal locks while it calls hooks (an invalidation event is delivered while its operation
 * is being applied), so such a call can deadlock, and so can a callback that blocks waiting for
 * another thread that uses the same engine. It may read the event, copy what it needs, take its
 * own locks and call the name functions below and nestor_fault_name / nestor_strerror. The
 * event and everything it points to are valid only during the call.
 *
 * Versioning: every event struct starts with `size`, the bytes the library filled (its sizeof).
 * Fields are only ever appended; code built against a newer nestor.h than the library it runs
 * with reads a field only if it lies below `size`. */

/* Event kinds, a bit each (C++ EventKindBits). A hook names the kinds it wants; an event has
 * exactly one kind, which says which member of nestor_event is set. A hook that asks for both
 * TRANSLATE and FAULT is called twice for a translation that faults, once with each kind. */
#define NESTOR_EVENT_TRANSLATE 0x01u /* every translation (faults included) */
#define NESTOR_EVENT_FAULT 0x02u     /* translations that faulted (also NESTOR_EVENT_TRANSLATE) */
#define NESTOR_EVENT_FILL 0x04u      /* an entry offered to a cache, accepted or refused */
#define NESTOR_EVENT_INVALIDATION 0x08u /* an operation applied: every entry it removed */
#define NESTOR_EVENT_QUEUE 0x10u        /* invalidation queue: descriptor, wait completed, error */
#define NESTOR_EVENT_BIND 0x20u         /* bind layer: owners, PASIDs, domains, devices, binds */
#define NESTOR_EVENT_ALL 0x3Fu

/* The caches an event names (an index, not a bit; C++ EventCache). */
#define NESTOR_EVENT_CACHE_CONTEXT 0u
#define NESTOR_EVENT_CACHE_PASID 1u
#define NESTOR_EVENT_CACHE_IOTLB 2u
#define NESTOR_EVENT_CACHE_PSC_FIRST_LEVEL 3u  /* first-level paging-structure entries */
#define NESTOR_EVENT_CACHE_PSC_SECOND_LEVEL 4u /* second-level paging-structure entries */
#define NESTOR_EVENT_CACHE_NESTED_TABLE 5u     /* GPA -> HPA of first-level table pages */
#define NESTOR_EVENT_CACHES 6u                 /* caches named today */
#define NESTOR_EVENT_CACHE_SLOTS 8u /* per-cache arrays leave room for caches added later */

/* Where a translation's answer came from (C++ TranslateSource). */
#define NESTOR_TRANSLATE_SOURCE_STRUCTURES 0u   /* faulted resolving root/context/PASID entries */
#define NESTOR_TRANSLATE_SOURCE_PASS_THROUGH 1u /* the address space passes addresses through */
#define NESTOR_TRANSLATE_SOURCE_HANDLE_CACHE 2u /* a nestor_handle's own translation cache */
#define NESTOR_TRANSLATE_SOURCE_IOTLB 3u        /* an IOTLB hit */
#define NESTOR_TRANSLATE_SOURCE_WALK 4u         /* a page walk */

/* Which stages translate the address space (C++ StageSet). */
#define NESTOR_STAGES_PASS_THROUGH 0u
#define NESTOR_STAGES_SECOND_ONLY 1u
#define NESTOR_STAGES_FIRST_ONLY 2u
#define NESTOR_STAGES_NESTED 3u

/* nestor_event_op.pasid of an operation without PASID (legacy device-TLB invalidations). */
#define NESTOR_INV_NO_PASID 0xFFFFFFFFu

/* The canonical invalidation operation every front end decodes to (C++ invq::InvalidationOp):
 * nestor_inv_op plus what QI descriptors and the uAPI calls can say besides. */
typedef struct nestor_event_op {
  uint8_t cache; /* NESTOR_CACHE_* bits */
  uint8_t scope; /* NESTOR_SCOPE_* */
  uint16_t did;
  uint16_t source_id;
  uint8_t leaf;             /* invalidation hint (IH): paging-structure caches may be kept */
  uint8_t addr_is_gpa;      /* range: addr is a GPA in did's second level, every PASID (type 0x2) */
  uint32_t pasid;           /* NESTOR_INV_NO_PASID: none */
  uint8_t function_mask;    /* context-cache device scope: VT-d FM */
  uint8_t devtlb_global;    /* PASID-based device-TLB G bit */
  uint8_t max_invs_pending; /* device-TLB: forwarded, never changes the scope */
  uint8_t reserved0;
  uint16_t pfsid; /* device-TLB: physical function source-id */
  uint16_t reserved1;
  uint32_t reserved2;
  uint64_t addr;   /* range: first byte, 4K aligned */
  uint64_t npages; /* range: 4K pages */
} nestor_event_op;

/* NESTOR_EVENT_TRANSLATE / NESTOR_EVENT_FAULT. */
typedef struct nestor_event_translate {
  uint32_t size;
  uint8_t source; /* NESTOR_TRANSLATE_SOURCE_* */
  /* The resolved address space; unset when source is NESTOR_TRANSLATE_SOURCE_STRUCTURES. */
  uint8_t stages;  /* NESTOR_STAGES_* */
  uint16_t domain; /* DID */
  uint32_t space;  /* the PASID the first level is tagged with */
  /* The address space does not record faults (VT-d FPD): no fault-log entry was made. */
  uint8_t fault_suppressed;
  uint8_t reserved0[3];
  nestor_request request;
  nestor_result result; /* as nestor_translate returns it: result.fault is the reason (0: none),
                           result.level the level that faulted */
  int32_t fault_stage;  /* NESTOR_STAGE_* (NESTOR_STAGE_NONE when result.fault is 0) */
  uint32_t reserved1;
  uint64_t fault_address; /* the iova, or the GPA of a second-level or nested-table fault */
} nestor_event_translate;

/* NESTOR_EVENT_FILL. */
typedef struct nestor_event_fill {
  uint32_t size;
  uint8_t cache; /* NESTOR_EVENT_CACHE_* */
  /* 0: refused, because an invalidation issued after the walk began covers the entry (the
     walk's result is still returned, just not kept). */
  uint8_t accepted;
  uint8_t level;      /* paging-structure caches: level of the cached non-leaf entry */
  uint8_t page_shift; /* IOTLB: page size of the entry */
  uint8_t perms;      /* IOTLB: NESTOR_ACCESS_* the entry grants */
  uint8_t reserved0;
  uint16_t source_id; /* context and PASID caches */
  uint16_t domain;    /* DID (context cache: the entry's DID if it has one, else 0) */
  uint16_t reserved1;
  uint32_t pasid; /* PASID cache, first-level PSC, IOTLB (the space tag) */
  uint32_t reserved2;
  uint64_t address; /* input address the entry translates (iova or GPA) */
  uint64_t output;  /* IOTLB: HPA of the page; PSC: next table; nested table: HPA page */
} nestor_event_fill;

/* One entry an invalidation removed. Step through the array with nestor_event_removed_at,
 * which uses the library's entry size, so the entry can grow. */
typedef struct nestor_event_removed {
  uint8_t cache; /* NESTOR_EVENT_CACHE_* */
  uint8_t level; /* paging-structure caches: level of the cached entry */
  /* 0: over-invalidation -- removed beyond what the operation required (a widened scope). */
  uint8_t required;
  uint8_t second_level; /* page is a GPA translated by the second level only */
  uint8_t nested;       /* combined first+second-level entry; gpa_page is the GPA it used */
  uint8_t has_domain;   /* 0: a context entry without a DID (did is then 0) */
  uint16_t did;
  uint16_t source_id;
  uint16_t reserved1;
  uint32_t pasid;    /* its space tag */
  uint64_t page;     /* 4K page number of its input address (iova or GPA) */
  uint64_t pages;    /* 4K pages of input it translated (0 for structure entries) */
  uint64_t gpa_page; /* nested: 4K page number of the GPA it depends on */
} nestor_event_removed;

/* NESTOR_EVENT_INVALIDATION: one operation applied to the caches. removed[] counts exactly the
 * entries delivered in `entries` (always all of them, unless the library ran out of memory for
 * the copy: then entry_count is smaller than the sum of removed[]). The list is exact when
 * nothing else fills or invalidates meanwhile; entries a concurrent fill evicted during the
 * operation show up as removed. */
typedef struct nestor_event_invalidation {
  uint32_t size;
  uint32_t entry_size;                        /* the library's sizeof(nestor_event_removed) */
  nestor_event_op op;                         /* as applied (after coalescing) */
  uint64_t removed[NESTOR_EVENT_CACHE_SLOTS]; /* entries removed, by NESTOR_EVENT_CACHE_* */
  uint64_t over[NESTOR_EVENT_CACHE_SLOTS];    /* of those, the ones not required */
  const nestor_event_removed *entries;
  uint64_t entry_count;
} nestor_event_invalidation;

static inline const nestor_event_removed *nestor_event_removed_at(
    const nestor_event_invalidation *inv, uint64_t i) {
  return (const nestor_event_removed *)(const void *)((const unsigned char *)inv->entries +
                                                      i * inv->entry_size);
}

/* NESTOR_EVENT_QUEUE types (C++ QueueEventType). */
#define NESTOR_QUEUE_EVENT_DESCRIPTOR 0u     /* fetched and decoded (or not: an error follows) */
#define NESTOR_QUEUE_EVENT_WAIT_COMPLETED 1u /* a wait's batch is applied, status written */
#define NESTOR_QUEUE_EVENT_ERROR 2u          /* the queue stopped (IQE); head stays on the slot */

typedef struct nestor_event_queue {
  uint32_t size;
  uint8_t type;             /* NESTOR_QUEUE_EVENT_* */
  uint8_t type_code;        /* the descriptor's type field */
  uint16_t descriptor_bits; /* 128 or 256 */
  uint8_t is_wait;          /* DESCRIPTOR: a wait descriptor (status and flags below) */
  uint8_t is_op;            /* DESCRIPTOR: an invalidation (op below) */
  uint8_t status_write;     /* waits: SW, IF, FN */
  uint8_t interrupt;
  uint8_t fence;
  uint8_t reserved0[3];
  uint64_t index;  /* descriptor slot (DESCRIPTOR, ERROR) */
  uint64_t raw[4]; /* its words as read (raw[2..3] in 256-bit mode only) */
  uint64_t status_addr;
  uint32_t status_data;
  /* 0: the host's queue; else the owner-direct queue's id (nestor_owner_queue_create), whose
     status addresses and tags are the owner's (guest) ones. */
  uint32_t owner_queue;
  nestor_event_op op; /* DESCRIPTOR with is_op */
  const char *error;  /* ERROR: what stopped the queue; else NULL */
} nestor_event_queue;

/* NESTOR_EVENT_BIND types (C++ BindEventType). */
#define NESTOR_BIND_EVENT_OWNER_CREATED 0u
#define NESTOR_BIND_EVENT_OWNER_DESTROYED 1u
#define NESTOR_BIND_EVENT_PASID_ALLOCATED 2u
#define NESTOR_BIND_EVENT_PASID_FREED 3u
#define NESTOR_BIND_EVENT_DOMAIN_CREATED 4u
#define NESTOR_BIND_EVENT_DOMAIN_DESTROYED 5u
#define NESTOR_BIND_EVENT_MAPPED 6u
#define NESTOR_BIND_EVENT_UNMAPPED 7u
#define NESTOR_BIND_EVENT_DEVICE_ATTACHED 8u
#define NESTOR_BIND_EVENT_DEVICE_DETACHED 9u
#define NESTOR_BIND_EVENT_BOUND 10u /* a first-level table bound to (device, PASID): nesting on */
#define NESTOR_BIND_EVENT_UNBOUND 11u
#define NESTOR_BIND_EVENT_CACHE_INVALIDATE 12u /* an owner's invalidation (op) */
#define NESTOR_BIND_EVENT_OWNER_RELEASED 13u /* the owner's bindings and PASIDs released */

typedef struct nestor_event_bind {
  uint32_t size;
  uint8_t type; /* NESTOR_BIND_EVENT_* */
  uint8_t reserved0;
  uint16_t source_id;
  int32_t result; /* 0 or the negative errno the call returned */
  uint32_t owner;
  uint32_t pasid;
  uint16_t domain;
  uint16_t reserved1;
  uint64_t gpa; /* MAPPED/UNMAPPED; BOUND: the first-level root (GPA) */
  uint64_t hpa;
  uint64_t length; /* MAPPED/UNMAPPED: bytes */
  /* CACHE_INVALIDATE: the owner's request as made (no DID; the PASID as the owner named it).
     The host operations it became follow as NESTOR_EVENT_INVALIDATION events. */
  nestor_event_op op;
} nestor_event_bind;

/* What a callback receives: `kind` is one NESTOR_EVENT_* bit and names the member set; the
 * others are NULL. */
typedef struct nestor_event {
  uint32_t size;
  uint32_t kind;
  const nestor_event_translate *translate; /* TRANSLATE, FAULT */
  const nestor_event_fill *fill;
  const nestor_event_invalidation *invalidation;
  const nestor_event_queue *queue;
  const nestor_event_bind *bind;
} nestor_event;

typedef void (*nestor_event_fn)(void *user, const nestor_event *event);

/* Calls fn(user, event) for every event whose kind is in `kinds`. A bind layer created on the
 * engine reports through the engine's hooks. *hook_id (if non-NULL) receives the id for
 * nestor_event_hook_remove. Returns 0, -EINVAL (NULL engine or fn; kinds empty or naming a kind
 * this library does not know) or -ENOSPC (16 hooks already). May be called while other threads
 * translate; an event caused after it returns is delivered. */
NESTOR_API int nestor_event_hook_add(nestor_engine *e, uint32_t kinds, nestor_event_fn fn,
                                     void *user, int *hook_id);
/* Returns 0 or -ENOENT (-EINVAL for a NULL engine). Once it returns, fn is not running for this
 * hook and is not called again, so `user` may be freed. Not from a callback of this engine. */
NESTOR_API int nestor_event_hook_remove(nestor_engine *e, int hook_id);

/* Names for printing ("unknown" for a value the library does not know). */
NESTOR_API const char *nestor_event_kind_name(uint32_t kind); /* one NESTOR_EVENT_* bit */
NESTOR_API const char *nestor_event_cache_name(unsigned cache);
NESTOR_API const char *nestor_translate_source_name(unsigned source);
NESTOR_API const char *nestor_fault_stage_name(int stage); /* NESTOR_STAGE_* */
NESTOR_API const char *nestor_queue_event_name(unsigned type);
NESTOR_API const char *nestor_bind_event_name(unsigned type);
/* ==== end of Event hooks =================================================================== */

#ifdef __cplusplus
}
#endif
#endif /* NESTOR_H */
