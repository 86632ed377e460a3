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
} nestor_config;

#define NESTOR_CFG_NO_FL5 0x01      /* no 5-level first-level tables */
#define NESTOR_CFG_NO_FL1G 0x02     /* no 1G first-level pages */
#define NESTOR_CFG_NO_SL_LARGE 0x04 /* no 2M/1G second-level pages */
#define NESTOR_CFG_NO_FL_AD 0x08    /* do not update first-level A/D bits */

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
  NESTOR_FAULT_CONTEXT_ENTRY_INVALID = 0x43,
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
  NESTOR_FAULT_SL_ADDRESS_BEYOND_MAX = 0x84,
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

NESTOR_API nestor_engine *nestor_engine_create(const nestor_config *cfg); /* NULL: defaults */
NESTOR_API void nestor_engine_destroy(nestor_engine *e);

NESTOR_API int nestor_mem_add_ram(nestor_engine *e, uint64_t base, uint64_t size); /* zeroed, engine-owned */
/* Caller-owned RAM: `host` must stay valid (and 8-byte aligned) while the engine lives. */
NESTOR_API int nestor_mem_add_host_ram(nestor_engine *e, uint64_t base, uint64_t size, void *host);
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

NESTOR_API const char *nestor_fault_name(int reason);
NESTOR_API const char *nestor_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif /* NESTOR_H */
