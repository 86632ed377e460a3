// The bind layer: the host side that feeds the engine (DESIGN.md, "Bind"). It owns the root
// table, the context entries and the PASID directories/tables in machine memory, builds the
// host's second-level domains, allocates system-wide PASIDs, binds guest first-level tables to
// PASIDs as nested PASID entries, and forwards first-level owners' cache invalidations or,
// with DIRECT_INVLD, consumes the owners' own invalidation queues.
//
// Every operation validates everything before it writes anything: a refusal (negative errno)
// leaves memory, caches and bookkeeping exactly as they were. Every structure change is
// followed by the invalidations VT-d requires, queued on the engine's invalidation processor like
// any other front end's, and a wait, so when a call returns no translation that starts
// afterwards sees the old state.
//
// Thread safety: every member may be called from any thread at once. Configuration calls are
// serialised by one mutex (a cold path); alloc_pasid only takes the allocator's own lock, so
// owners allocate PASIDs in parallel. Lock order: the layer's mutex, then the allocator's.
// Engine::translate may run concurrently with all of them.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>
#include <vector>

#include "nestor/engine.h"
#include "nestor/invq/op.h"
#include "nestor/machine_memory.h"
#include "nestor/nesting_info.h"
#include "nestor/pasid_allocator.h"
#include "nestor/vtd/descriptor.h"
#include "nestor/vtd/queue.h"
#include "nestor/vtd/structures_writer.h"

namespace nestor {

struct BindConfig {
  uint32_t features = kNestingFeatAll;  // NestingFeature bits this configuration offers
  // RAM (already declared in the engine's memory) the layer takes its tables from: the first
  // quarter for root/context/PASID structures, the rest for second-level page tables.
  uint64_t table_base = 0;
  uint64_t table_size = 0;
  uint16_t max_domain_id = 0xFFFF;  // DIDs are allocated from [1, max_domain_id]
};

struct DomainConfig {
  uint8_t levels = 4;    // second-level levels: 3, 4 or 5 (39/48/57-bit GPA space)
  bool nesting = false;  // first-level tables may be bound on top of it
  bool ad = false;       // second-level A/D tracking (PASID entry SLADE)
  uint32_t owner = 0;    // owner (VM) whose devices use it; 0 = host only, never bindable
};

// bind() flags, copied into the nested PASID entry.
enum BindFlags : uint32_t {
  kBindSre = 1u << 0,   // supervisor requests enabled
  kBindWpe = 1u << 1,   // write protect enable for supervisor requests
  kBindEafe = 1u << 2,  // extended accessed flag enable
  kBindPcd = 1u << 3,   // page-level cache disable for first-level table accesses (bit 95)
  kBindPwt = 1u << 4,   // page-level write-through for first-level table accesses (bit 94)
};
inline constexpr uint32_t kBindAllFlags = kBindSre | kBindWpe | kBindEafe | kBindPcd | kBindPwt;

// PASID 0 is every attached device's RID_PASID: bind() on PASID 0 binds the device's default
// address space (requests without PASID).
inline constexpr uint32_t kDefaultPasid = 0;

struct BindRequest {
  uint64_t fl_root_gpa = 0;  // guest-physical, 4K aligned, mapped readable in the domain
  uint8_t addr_width = 48;   // first-level input width: 48 (4-level) or 57 (5-level)
  uint32_t flags = 0;        // BindFlags
  uint32_t guest_pasid = PasidAllocator::kNoGuestPasid;  // the guest's name for the PASID
};

// cache_invalidate() flags.
enum CacheInvalidateFlags : uint32_t {
  kInvGuestPasid = 1u << 0,  // op.pasid is the owner's guest PASID, translated here
};

// Why an owner's direct invalidation queue stopped (its architectural error is IQE for all of
// them). Values are part of the C ABI (NESTOR_OWNER_QUEUE_FAULT_*).
enum class OwnerQueueFault : uint8_t {
  kNone = 0,
  kDecode = 1,         // the VT-d decoder refused the descriptor (see decode_error)
  kFetch = 2,          // the descriptor's GPA is not mapped readable in the queue's domain
  kTail = 3,           // tail index beyond the queue
  kHostOnly = 4,       // context cache (0x1), IOTLB (0x2) or interrupt entry cache (0x4)
  kNotOwned = 5,       // a PASID the owner cannot name, or a device outside its domains
  kStatusAddress = 6,  // a wait's status address is not mapped writable in the queue's domain
};

struct OwnerQueueState {
  uint64_t head = 0, tail = 0;  // descriptor indexes
  invq::QiError error = invq::QiError::kNone;
  OwnerQueueFault fault = OwnerQueueFault::kNone;
  invq::DecodeError decode_error = invq::DecodeError::kNone;
};

struct OwnerQueueStats {
  uint64_t tail_writes = 0;
  uint64_t descriptors = 0;    // accepted: decoded, checked and handed on
  uint64_t ops_submitted = 0;  // host operations after tag translation (one descriptor: 0..n)
  uint64_t waits = 0;
  uint64_t errors = 0;  // times the queue stopped
  uint64_t refused_host_only = 0, refused_not_owned = 0, refused_status = 0;
  std::array<uint64_t, 16> descriptors_by_type{};  // accepted, by VT-d type 0x0..0xF
};

struct DomainInfo {
  uint64_t sl_root = 0;
  uint8_t levels = 0;
  bool nesting = false, ad = false, adopted = false;
  uint32_t owner = 0;
  uint32_t devices = 0;  // attached
};

struct BindingInfo {
  uint32_t owner = 0;
  uint16_t did = 0;
  BindRequest request;
};

class NESTOR_CXX_API BindLayer {
  struct Key {
    explicit Key() = default;
  };

 public:
  // Checks the configuration (table range 4K aligned, RAM, at least 64 pages; DIDs >= 1),
  // points the engine's root-table register at the layer's root table. One layer per engine:
  // -EBUSY while another layer of `engine` exists (a second one would overwrite the first
  // one's tables). Returns nullptr and sets *err (-EINVAL, -EBUSY, -ENOMEM) on failure.
  static std::unique_ptr<BindLayer> create(Engine &engine, const BindConfig &cfg, int *err);
  BindLayer(Key, Engine &engine, const BindConfig &cfg);  // use create()
  ~BindLayer();
  BindLayer(const BindLayer &) = delete;
  BindLayer &operator=(const BindLayer &) = delete;

  const BindConfig &config() const { return cfg_; }
  uint32_t features() const { return cfg_.features; }
  NestingInfo nesting_info() const;
  // Versioned copy for callers built against another version of NestingInfo (see
  // copy_nesting_info). 0 or -EINVAL.
  int get_nesting_info(void *out, uint32_t size) const;

  // --- Owners and PASIDs (SYSWIDE_PASID) ---
  // Owners exist whatever the features: they own domains and bindings too.
  int create_owner(uint32_t pasid_quota, uint32_t *owner);
  // -ENOENT, -EBUSY while the owner holds PASIDs, bindings or domains.
  int destroy_owner(uint32_t owner);
  // Unbinds everything the owner bound (one invalidation batch and wait), then frees every
  // PASID it holds. Returns the number of PASIDs freed or -ENOENT.
  int release_owner(uint32_t owner);
  // -EOPNOTSUPP without SYSWIDE_PASID; else as PasidAllocator::alloc.
  int alloc_pasid(uint32_t owner, uint32_t want, uint32_t guest_pasid, uint32_t *pasid);
  // -EOPNOTSUPP without SYSWIDE_PASID; -EBUSY while bound; else as PasidAllocator::free.
  int free_pasid(uint32_t owner, uint32_t pasid);
  const PasidAllocator &pasids() const { return pasids_; }

  // --- Host second-level domains ---
  // Allocates a DID (next-fit over [1, max_domain_id]) and an empty second level.
  // -EINVAL levels not 3/4/5, -EOPNOTSUPP width not in SAGAW, -ENOENT unknown owner,
  // -ENOSPC no DID left, -ENOMEM no table page.
  int create_domain(const DomainConfig &dc, uint16_t *did);
  // Same, around an existing second-level root the caller built and keeps owning: the layer
  // never maps, unmaps or frees its tables (map/unmap answer -EPERM).
  int adopt_domain(const DomainConfig &dc, uint64_t sl_root, uint16_t *did);
  // -ENOENT, -EBUSY while devices are attached. Invalidates the domain, frees its tables.
  int destroy_domain(uint16_t did);
  // Maps [gpa, gpa+size) -> [hpa, hpa+size) with AccessBits `perms`, choosing the largest page
  // (1G/2M/4K, as the engine config allows) that fits alignment and length at each step.
  // -EINVAL unaligned/empty/beyond width/bad perms, -EEXIST overlaps a mapping, -EPERM adopted
  // or the HPA range overlaps the layer's table range (tables must never be DMA targets),
  // -ENOENT unknown domain, -ENOMEM out of table pages (nothing left mapped).
  int map(uint16_t did, uint64_t gpa, uint64_t hpa, uint64_t size, uint8_t perms);
  // Unmaps every page in [gpa, gpa+size), then invalidates IOTLB and paging-structure caches
  // for that GPA range of the domain (and attached devices' TLBs) and waits. -ENOENT nothing
  // mapped there, -EINVAL the range would split a page or is unaligned, -EPERM adopted.
  int unmap(uint16_t did, uint64_t gpa, uint64_t size);
  bool domain_info(uint16_t did, DomainInfo *out);
  // Second-level table pages in use (all domains), for leak checks.
  uint64_t table_pages_in_use() const { return table_pages_.pages_in_use(); }
  // GPA -> HPA through the domain's second level (read access), for checks and tests.
  bool domain_resolve(uint16_t did, uint64_t gpa, uint64_t *hpa);
  // Every HPA range mapped in the domain (owned domains only), as (hpa, size) pairs.
  std::vector<std::pair<uint64_t, uint64_t>> domain_hpa_ranges(uint16_t did);

  // --- Devices ---
  // Makes the context entry present (PASIDs enabled, RID_PASID 0, directory for the whole
  // PASID space) with a second-level-only RID_PASID entry for the domain. -ENOENT unknown
  // domain, -EBUSY already attached, -EINVAL domain width the engine cannot walk, -ENOMEM.
  int attach_device(uint16_t source_id, uint16_t did);
  // Clears the context entry and RID_PASID entry, invalidates context cache (device), PASID
  // cache, IOTLB/paging caches of the DID and the device TLB, waits. -ENOENT not attached,
  // -EBUSY while first-level tables are bound on it.
  int detach_device(uint16_t source_id);

  // --- First-level tables (BIND_PGTBL) ---
  // Writes a nested PASID entry (FL root = guest GPA, SL = the device's domain) for
  // (source_id, pasid), replacing an earlier binding of the same owner, then invalidates the
  // PASID cache and the IOTLB/paging caches of (DID, PASID) and the device TLB, and waits.
  // Refusals: -EOPNOTSUPP feature off or 5-level not supported; -EINVAL bad flags/width/
  // alignment, PASID beyond the space, root not mapped readable in the domain, domain not
  // nesting, guest PASID not the owner's name for it; -ENOENT unknown owner or device not
  // attached; -EPERM the PASID (SYSWIDE) or the device's domain belongs to someone else.
  int bind(uint32_t owner, uint16_t source_id, uint32_t pasid, const BindRequest &req);
  // Clears the entry (PASID 0: restores the second-level-only entry), invalidates as bind,
  // waits. -EOPNOTSUPP, -ENOENT not bound, -EPERM bound by another owner.
  int unbind(uint32_t owner, uint16_t source_id, uint32_t pasid);
  bool binding(uint16_t source_id, uint32_t pasid, BindingInfo *out);

  // --- First-level owner's invalidations (CACHE_INVLD) ---
  // Forwards `op` (caches among PASID/IOTLB/paging/device-TLB; scope kPasid or kRange on the
  // first level, or kDomain/kGlobal meaning "all my bindings") for the owner's binding
  // (op.source_id, op.pasid) to Engine::invalidate with the host DID filled in, then waits.
  // -EOPNOTSUPP feature off; -EINVAL malformed range/scope/flags; -EPERM context cache, GPA
  // ops, or a PASID the owner does not hold; -ENOENT unknown owner or (device, PASID) not bound.
  int cache_invalidate(uint32_t owner, const invq::InvalidationOp &op, uint32_t flags = 0);

  // --- Owner-direct invalidation queues (DIRECT_INVLD; docs/BIND.md) ---
  // The host gives `owner` a VT-d invalidation queue (IQA semantics: `entries` descriptors of
  // `descriptor_bits` 128 or 256, entries * size a power-of-two number of 4K pages, at most
  // 128) at `base_gpa` in the second-level domain `domain_did`, which the owner owns. Every
  // queue page must be mapped readable there now. -EOPNOTSUPP feature off; -EINVAL bad
  // geometry or alignment, or a queue page not mapped; -ENOENT unknown owner or domain;
  // -EPERM the domain belongs to someone else; -ENOMEM.
  int owner_queue_create(uint32_t owner, uint16_t domain_did, uint64_t base_gpa, uint64_t entries,
                         unsigned descriptor_bits, uint32_t *queue);
  // -EOPNOTSUPP, -ENOENT. Descriptors already handed on still take effect.
  int owner_queue_destroy(uint32_t queue);
  // The owner moved the tail: [head, tail) are fetched through the domain, decoded by the host
  // queue's decoder, checked, their tags translated, and queued on the engine's invalidation
  // processor like the host queue's; without a background worker they are applied (and wait
  // status written into the owner's memory) before the call returns. Descriptors before a bad
  // one take effect; the queue stops on the bad one (IQE, head on it) until
  // owner_queue_clear_error and the next tail write. 0, -EBUSY (stopped), -EOPNOTSUPP, -ENOENT.
  int owner_queue_write_tail(uint32_t queue, uint64_t tail_index);
  int owner_queue_state(uint32_t queue, OwnerQueueState *out);
  int owner_queue_clear_error(uint32_t queue);
  int owner_queue_stats(uint32_t queue, OwnerQueueStats *out);

 private:
  struct OwnerQueue;  // engine/src/owner_queue.cpp
  // `count` leaves of 2^shift bytes, consecutive in GPA and HPA, mapped by one map() call.
  // A 2M map split into 4K leaves is one run, not 512 tree nodes.
  struct Run {
    uint64_t hpa;
    uint64_t count;
    uint8_t shift;
    uint8_t perms;
    uint64_t bytes() const { return count << shift; }
  };
  using Runs = std::vector<std::pair<uint64_t, Run>>;  // (first GPA, run)
  struct Domain {
    uint8_t levels = 4;
    bool nesting = false, ad = false, adopted = false;
    uint32_t owner = 0;
    uint64_t root = 0;
    uint32_t devices = 0;
    std::map<uint64_t, Run> runs;  // by first GPA: every leaf this layer mapped
  };
  struct Binding {
    uint32_t owner;
    uint16_t did;
    BindRequest req;
  };

  // The public calls' bodies; each public call is its body plus a bind event (kEventBind) with
  // its result when a hook asks for them (bind_events.cpp).
  int create_owner_unreported(uint32_t pasid_quota, uint32_t *owner);
  int destroy_owner_unreported(uint32_t owner);
  int release_owner_unreported(uint32_t owner);
  int alloc_pasid_unreported(uint32_t owner, uint32_t want, uint32_t guest_pasid, uint32_t *pasid);
  int free_pasid_unreported(uint32_t owner, uint32_t pasid);
  int create_domain_unreported(const DomainConfig &dc, uint16_t *did);
  int adopt_domain_unreported(const DomainConfig &dc, uint64_t sl_root, uint16_t *did);
  int destroy_domain_unreported(uint16_t did);
  int map_unreported(uint16_t did, uint64_t gpa, uint64_t hpa, uint64_t size, uint8_t perms);
  int unmap_unreported(uint16_t did, uint64_t gpa, uint64_t size);
  int attach_device_unreported(uint16_t source_id, uint16_t did);
  int detach_device_unreported(uint16_t source_id);
  int bind_unreported(uint32_t owner, uint16_t source_id, uint32_t pasid, const BindRequest &req);
  int unbind_unreported(uint32_t owner, uint16_t source_id, uint32_t pasid);
  int cache_invalidate_unreported(uint32_t owner, const invq::InvalidationOp &op, uint32_t flags);

  bool feature(uint32_t f) const { return (cfg_.features & f) != 0; }
  sl::Config sl_config(const Domain &d) const;
  int new_domain(const DomainConfig &dc, uint64_t root, bool adopted, uint16_t *did);
  int map_chunk(Domain &d, uint64_t gpa, uint64_t hpa, unsigned shift, uint8_t perms, Runs *done);
  void free_tables(uint64_t table, int level);
  void rid_pasid_words(const Domain &d, uint16_t did, uint64_t w[8]) const;
  uint64_t pasid_entry_address(uint16_t source_id, uint32_t pasid, bool create, int *err);
  // Named flushes: what VT-d asks software to invalidate after each kind of change this layer
  // makes (VT-d 6.5.3.3; Linux's intel/pasid.c and intel/cache.c flush the same way). Each one
  // queues its ops on the engine's invalidation processor, the path every other front end
  // takes; sync() waits for everything queued (and, with drain on, translations in flight).
  // A context entry of `source_id` became present, changed or went away. Its PASID entries
  // are flushed by the caller with flush_pasid_entry (this layer changes a context entry only
  // while RID_PASID is its one present PASID entry).
  void flush_context_entry(uint16_t source_id);
  // The PASID entry (source_id, pasid) of domain `did` changed or went away.
  void flush_pasid_entry(uint16_t did, uint16_t source_id, uint32_t pasid);
  // The host changed second-level mappings of [gpa, gpa + npages * 4K) in domain `did`.
  void flush_second_level(uint16_t did, uint64_t gpa, uint64_t npages);
  // A first-level owner changed its tables and says which caches and range (host DID filled in).
  void flush_first_level(const invq::InvalidationOp &owner_op);
  // The domain is retired: nothing tagged with its DID may survive its tables being recycled.
  void flush_domain(uint16_t did);
  void sync();
  int unbind_begin(uint16_t source_id, uint32_t pasid);
  void unbind_finish(uint16_t source_id, uint32_t pasid, std::vector<uint64_t> *unlinked);
  void free_structure_pages(const std::vector<uint64_t> &pages, bool wait);
  int resolve_pasid(uint32_t owner, uint16_t source_id, uint32_t pasid, uint32_t flags,
                    uint32_t *host_pasid) const;
  // cache_invalidate's mapping of an owner's op onto host tags, confined to the owner's
  // bindings, without flushing or waiting; the caller holds mu_ (shared is enough) and has
  // validated the op's shape. Appends to *out. 0, -ENOENT, -EPERM, -EINVAL.
  int owner_ops(uint32_t owner, const invq::InvalidationOp &op, uint32_t flags,
                std::vector<invq::InvalidationOp> *out) const;
  // A direct queue's descriptor op (guest DID and PASID, no device for PASID-tagged caches)
  // as host ops; same contract as owner_ops.
  int queue_ops(uint32_t owner, const invq::InvalidationOp &op,
                std::vector<invq::InvalidationOp> *out) const;
  // Host PASIDs the owner's guest PASID names (see queue_ops); empty: none.
  void guest_pasid_hosts(uint32_t owner, uint32_t guest_pasid, std::vector<uint32_t> *out) const;
  std::shared_ptr<OwnerQueue> find_queue(uint32_t queue);
  // Whether a direct queue belongs to `owner` or lives in domain `did`; the caller holds mu_.
  bool queue_in_use(uint32_t owner, uint16_t did) const;

  Engine &engine_;
  MachineMemory &mem_;
  BindConfig cfg_;
  PageAllocator structure_pages_;
  PageAllocator table_pages_;
  HostTableSpace tables_;
  StructuresWriter structures_;
  PasidAllocator pasids_;

  // Shared by direct-queue tail writes (they only read the bindings and domains, so owners'
  // queues are processed in parallel); exclusive for everything that changes them.
  std::shared_mutex mu_;
  HierarchicalBitmap free_dids_;  // 1 = free
  uint32_t did_cursor_ = 1;
  std::map<uint16_t, Domain> domains_;
  std::map<uint16_t, uint16_t> devices_;                       // source-id -> DID
  std::map<std::pair<uint16_t, uint32_t>, Binding> bindings_;  // (source-id, PASID)
  std::map<uint32_t, std::shared_ptr<OwnerQueue>> queues_;
  uint32_t next_queue_ = 1;
};

}  // namespace nestor
