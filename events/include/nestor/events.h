// Event hooks: what the engine did, as it happens, for the embedder that asks. An embedder
// registers a callback with a user pointer for a set of event kinds; the engine calls it for
// every event of those kinds. Nothing is built or called for a kind no hook asked for: each
// emission site costs one relaxed load and a branch, and the translation hit paths not even that
// (they test one gate word they test anyway; EngineCore::translate).
//
// Where callbacks run: on the thread that caused the event. Translation, fault and fill events
// come from translating threads (any number at once: the callback must be thread-safe);
// invalidation events from the thread that applies the operation (the caller of
// Engine::invalidate*, a tail write, or the background worker); queue events from the tail
// writer or the worker; bind events from the bind-layer caller.
//
// What a callback may not do: call back into the engine that emitted the event (translate,
// invalidate, wait, add or remove a hook, reset) or into its bind layer. It may read the event
// (valid only during the call), copy what it needs, and take its own locks. An engine's hooks
// are called while it holds internal locks (an invalidation event is emitted inside the
// operation's interval), so a callback that blocks on another thread translating through the
// same engine can deadlock.
//
// Generic vocabulary: nothing here is VT-d's. Fault codes are the personality's FaultReason;
// queue events carry raw descriptor words and the canonical operation they decoded to.
#pragma once

#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <span>

#include "nestor/invq/op.h"
#include "nestor/personality.h"

namespace nestor {

// Event kinds, a bit each; values are part of the C ABI (NESTOR_EVENT_*).
enum EventKindBits : uint32_t {
  kEventTranslate = 1u << 0,     // every translation: request and result, where it came from
  kEventFault = 1u << 1,         // translations that faulted (also delivered as kEventTranslate)
  kEventCacheFill = 1u << 2,     // an entry offered to a cache, accepted or refused
  kEventInvalidation = 1u << 3,  // an operation applied: entry by entry, what it removed
  kEventQueue = 1u << 4,         // invalidation queue: descriptor decoded, wait done, error
  kEventBind = 1u << 5,          // bind layer: owners, PASIDs, domains, devices, bindings
};
inline constexpr uint32_t kEventAll = (1u << 6) - 1;

// The caches an event names. Values are part of the C ABI (NESTOR_EVENT_CACHE_*).
enum class EventCache : uint8_t {
  kContext = 0,
  kPasid = 1,
  kIotlb = 2,
  kPscFirstLevel = 3,   // first-level paging-structure entries (DID, PASID, level, iova)
  kPscSecondLevel = 4,  // second-level paging-structure entries (DID, level, GPA)
  kNestedTable = 5,     // GPA -> HPA of first-level table pages (nested walks)
};
inline constexpr size_t kEventCaches = 6;
constexpr const char *event_cache_name(EventCache c) {
  constexpr const char *kNames[] = {"context",          "pasid",       "iotlb", "psc-first-level",
                                    "psc-second-level", "nested-table"};
  return size_t(c) < kEventCaches ? kNames[size_t(c)] : "unknown";
}

// Where a translation's answer came from.
enum class TranslateSource : uint8_t {
  kStructures = 0,   // faulted resolving the device (root/context/PASID), before any walk
  kPassThrough = 1,  // the address space passes addresses through
  kHandleCache = 2,  // an address-space handle's own translation cache
  kIotlb = 3,        // an IOTLB hit
  kWalk = 4,         // a page walk (IOTLB miss, or a hit that had to walk: denied, first write)
};
constexpr const char *translate_source_name(TranslateSource s) {
  constexpr const char *kNames[] = {"structures", "pass-through", "handle-cache", "iotlb", "walk"};
  return size_t(s) < 5 ? kNames[size_t(s)] : "unknown";
}

struct TranslateEvent {
  Request request;
  Result result;  // ok with the translation, or the fault (reason, stage, level, address)
  TranslateSource source = TranslateSource::kWalk;
  // The resolved address space (valid unless source is kStructures).
  StageSet stages = StageSet::kSecondOnly;
  uint16_t domain = 0;  // VT-d: DID
  uint32_t space = 0;   // VT-d: PASID the first level is tagged with
  // A fault the address space does not record (VT-d FPD): no fault-log entry was made.
  bool fault_suppressed = false;
};

struct FillEvent {
  EventCache cache = EventCache::kIotlb;
  // False: refused, because an invalidation issued after the walk began covers the entry (the
  // walk's result is still returned; it is just not kept).
  bool accepted = false;
  uint16_t source_id = 0;  // context, PASID cache
  uint32_t pasid = 0;      // PASID cache, first-level PSC, IOTLB (the space tag)
  uint16_t domain = 0;     // DID (context cache: the entry's DID if it has one, else 0)
  uint8_t level = 0;       // paging-structure caches: the level of the cached non-leaf entry
  uint8_t page_shift = 0;  // IOTLB: page size of the entry
  uint8_t perms = 0;       // IOTLB: AccessBits the entry grants (before per-request checks)
  uint64_t address = 0;    // input address the entry translates (iova or GPA)
  uint64_t output = 0;     // IOTLB: HPA of the page; PSC: next table; nested table: HPA page
};

// One entry an invalidation removed.
struct RemovedEntry {
  EventCache cache = EventCache::kIotlb;
  // The entry as invq::covers judges it (page: its first 4K page; pasid: its space tag).
  invq::CacheEntryKey key;
  uint64_t pages = 1;  // 4K pages of input address it translated (0 for structure entries)
  uint8_t level = 0;   // paging-structure caches: level of the cached entry
  // False for a context entry without a DID (VT-d scalable mode: key.did is then 0).
  bool has_domain = true;
  // Whether the operation required its removal (invq::covers). False: over-invalidation, an
  // entry the engine removed beyond what the operation named (a widened scope).
  bool required = true;
};

struct InvalidationEvent {
  invq::InvalidationOp op;  // the canonical operation, as applied
  // Entries it removed, per cache (EventCache order), and of those the ones it did not require.
  std::array<uint64_t, kEventCaches> removed{};
  std::array<uint64_t, kEventCaches> over{};
  // Every removed entry. Exact when nothing else fills or invalidates meanwhile; entries
  // evicted by a concurrent fill during the operation show up as removed.
  std::span<const RemovedEntry> entries;
};

enum class QueueEventType : uint8_t {
  kDescriptor = 0,     // fetched and decoded (or failed to decode: then kError follows)
  kWaitCompleted = 1,  // a wait's batch is applied: its status write (if any) has landed
  kError = 2,          // the queue stopped (VT-d IQE); head stays at the descriptor
};

struct QueueEvent {
  QueueEventType type = QueueEventType::kDescriptor;
  // Which queue: 0 the host's (the engine's QI registers), else an owner-direct queue's id
  // (BindLayer::owner_queue_create). An owner queue's addresses and tags are the guest's.
  uint32_t owner_queue = 0;
  uint64_t index = 0;              // descriptor slot in the queue (kDescriptor, kError)
  std::array<uint64_t, 4> raw{};   // its words as read (qw[2..3] only in 256-bit mode)
  unsigned descriptor_bits = 128;  // 128 or 256
  uint8_t type_code = 0;           // the descriptor's type field
  bool is_wait = false;            // kDescriptor: a wait descriptor (fields below)
  bool is_op = false;              // kDescriptor: an invalidation (op below)
  invq::InvalidationOp op;         // kDescriptor with is_op
  bool status_write = false;       // waits: SW, its address and data; IF; FN
  uint64_t status_addr = 0;
  uint32_t status_data = 0;
  bool interrupt = false, fence = false;
  const char *error = nullptr;  // kError: what stopped the queue
};

enum class BindEventType : uint8_t {
  kOwnerCreated = 0,
  kOwnerDestroyed = 1,
  kPasidAllocated = 2,
  kPasidFreed = 3,
  kDomainCreated = 4,
  kDomainDestroyed = 5,
  kMapped = 6,
  kUnmapped = 7,
  kDeviceAttached = 8,
  kDeviceDetached = 9,
  kBound = 10,  // a first-level table bound to (device, PASID): nested translation on
  kUnbound = 11,
  kCacheInvalidate = 12,  // an owner's invalidation (op: as the owner gave it)
  kOwnerReleased = 13,    // everything the owner bound unbound, its PASIDs freed (result: count)
};
constexpr const char *bind_event_name(BindEventType t) {
  constexpr const char *kNames[] = {"owner-created",    "owner-destroyed", "pasid-allocated",
                                    "pasid-freed",      "domain-created",  "domain-destroyed",
                                    "mapped",           "unmapped",        "device-attached",
                                    "device-detached",  "bound",           "unbound",
                                    "cache-invalidate", "owner-released"};
  return size_t(t) < 14 ? kNames[size_t(t)] : "unknown";
}

struct BindEvent {
  BindEventType type = BindEventType::kBound;
  int result = 0;      // 0 or the negative errno the call returned
  uint32_t owner = 0;  // the call's owner (0 for calls that name none: maps, devices)
  uint16_t source_id = 0;
  uint32_t pasid = 0;
  uint16_t domain = 0;
  uint64_t gpa = 0, hpa = 0, size = 0;  // map/unmap; kBound: gpa = first-level root (GPA)
  invq::InvalidationOp op;              // kCacheInvalidate: the owner's op
};

// What a callback receives: `kind` is one EventKindBits value and names the member that is set.
struct Event {
  uint32_t kind = 0;
  const TranslateEvent *translate = nullptr;  // kEventTranslate, kEventFault
  const FillEvent *fill = nullptr;
  const InvalidationEvent *invalidation = nullptr;
  const QueueEvent *queue = nullptr;
  const BindEvent *bind = nullptr;
};

using EventCallback = void (*)(void *user, const Event &event);

// An engine's registered hooks. Emitting reads a slot table under a shared lock, so hooks can
// be added and removed while other threads emit, and remove() returns only once no call of the
// removed hook is still running.
class EventHooks {
 public:
  static constexpr size_t kMaxHooks = 16;

  // A hook id (>= 0), or -EINVAL (no callback, or kinds empty or unknown) / -ENOSPC.
  int add(uint32_t kinds, EventCallback callback, void *user) {
    if (!callback || kinds == 0 || (kinds & ~kEventAll) != 0) return -EINVAL;
    std::unique_lock lock(mu_);
    for (size_t i = 0; i < kMaxHooks; ++i) {
      if (slots_[i].kinds != 0) continue;
      slots_[i] = {kinds, callback, user};
      publish();
      return int(i);
    }
    return -ENOSPC;
  }

  // 0 or -ENOENT. After it returns the callback is not running and will not be called again.
  int remove(int id) {
    std::unique_lock lock(mu_);
    if (id < 0 || size_t(id) >= kMaxHooks || slots_[size_t(id)].kinds == 0) return -ENOENT;
    slots_[size_t(id)] = {};
    publish();
    return 0;
  }

  // Kinds some hook wants (a relaxed read: a hook added on another thread is seen soon, and
  // surely by events caused after add() returned there).
  uint32_t enabled() const { return enabled_.load(std::memory_order_relaxed); }
  bool wants(uint32_t kind) const { return (enabled() & kind) != 0; }

  void emit(const Event &e) const {
    std::shared_lock lock(mu_);
    for (const Slot &s : slots_)
      if (s.kinds & e.kind) s.callback(s.user, e);
  }

 private:
  struct Slot {
    uint32_t kinds = 0;
    EventCallback callback = nullptr;
    void *user = nullptr;
  };
  void publish() {
    uint32_t all = 0;
    for (const Slot &s : slots_) all |= s.kinds;
    enabled_.store(all, std::memory_order_relaxed);
  }
  mutable std::shared_mutex mu_;
  std::array<Slot, kMaxHooks> slots_{};
  std::atomic<uint32_t> enabled_{0};
};

}  // namespace nestor
