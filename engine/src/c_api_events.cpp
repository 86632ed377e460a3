// C ABI of the event hooks (nestor/events.h): each C hook is a C++ hook whose callback is a
// trampoline that converts the C++ event into the C structs on its stack and calls the C
// function. Nothing is allocated per event, except the removed-entries array of an
// invalidation that removed more entries than the stack buffer holds.
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <mutex>
#include <new>
#include <span>
#include <vector>

#include "c_api_internal.h"
#include "nestor.h"
#include "nestor/events.h"

namespace {

using nestor::capi::EventHookSlot;
namespace invq = nestor::invq;

// The C constants are the C++ enumerators; a change on either side must fail the build.
static_assert(NESTOR_EVENT_TRANSLATE == nestor::kEventTranslate &&
              NESTOR_EVENT_FAULT == nestor::kEventFault &&
              NESTOR_EVENT_FILL == nestor::kEventCacheFill &&
              NESTOR_EVENT_INVALIDATION == nestor::kEventInvalidation &&
              NESTOR_EVENT_QUEUE == nestor::kEventQueue &&
              NESTOR_EVENT_BIND == nestor::kEventBind && NESTOR_EVENT_ALL == nestor::kEventAll);
static_assert(NESTOR_EVENT_CACHE_CONTEXT == unsigned(nestor::EventCache::kContext) &&
              NESTOR_EVENT_CACHE_PASID == unsigned(nestor::EventCache::kPasid) &&
              NESTOR_EVENT_CACHE_IOTLB == unsigned(nestor::EventCache::kIotlb) &&
              NESTOR_EVENT_CACHE_PSC_FIRST_LEVEL == unsigned(nestor::EventCache::kPscFirstLevel) &&
              NESTOR_EVENT_CACHE_PSC_SECOND_LEVEL ==
                  unsigned(nestor::EventCache::kPscSecondLevel) &&
              NESTOR_EVENT_CACHE_NESTED_TABLE == unsigned(nestor::EventCache::kNestedTable) &&
              NESTOR_EVENT_CACHES == nestor::kEventCaches &&
              NESTOR_EVENT_CACHES <= NESTOR_EVENT_CACHE_SLOTS);
static_assert(
    NESTOR_TRANSLATE_SOURCE_STRUCTURES == unsigned(nestor::TranslateSource::kStructures) &&
    NESTOR_TRANSLATE_SOURCE_PASS_THROUGH == unsigned(nestor::TranslateSource::kPassThrough) &&
    NESTOR_TRANSLATE_SOURCE_HANDLE_CACHE == unsigned(nestor::TranslateSource::kHandleCache) &&
    NESTOR_TRANSLATE_SOURCE_IOTLB == unsigned(nestor::TranslateSource::kIotlb) &&
    NESTOR_TRANSLATE_SOURCE_WALK == unsigned(nestor::TranslateSource::kWalk));
static_assert(NESTOR_STAGES_PASS_THROUGH == unsigned(nestor::StageSet::kPassThrough) &&
              NESTOR_STAGES_SECOND_ONLY == unsigned(nestor::StageSet::kSecondOnly) &&
              NESTOR_STAGES_FIRST_ONLY == unsigned(nestor::StageSet::kFirstOnly) &&
              NESTOR_STAGES_NESTED == unsigned(nestor::StageSet::kNested));
static_assert(NESTOR_STAGE_NONE == int(nestor::FaultStage::kNone) &&
              NESTOR_STAGE_STRUCTURES == int(nestor::FaultStage::kStructures) &&
              NESTOR_STAGE_FIRST_LEVEL == int(nestor::FaultStage::kFirstLevel) &&
              NESTOR_STAGE_SECOND_LEVEL == int(nestor::FaultStage::kSecondLevel) &&
              NESTOR_STAGE_NESTED_TABLE == int(nestor::FaultStage::kNestedTable));
static_assert(NESTOR_QUEUE_EVENT_DESCRIPTOR == unsigned(nestor::QueueEventType::kDescriptor) &&
              NESTOR_QUEUE_EVENT_WAIT_COMPLETED ==
                  unsigned(nestor::QueueEventType::kWaitCompleted) &&
              NESTOR_QUEUE_EVENT_ERROR == unsigned(nestor::QueueEventType::kError));
static_assert(
    NESTOR_BIND_EVENT_OWNER_CREATED == unsigned(nestor::BindEventType::kOwnerCreated) &&
    NESTOR_BIND_EVENT_PASID_ALLOCATED == unsigned(nestor::BindEventType::kPasidAllocated) &&
    NESTOR_BIND_EVENT_DOMAIN_CREATED == unsigned(nestor::BindEventType::kDomainCreated) &&
    NESTOR_BIND_EVENT_MAPPED == unsigned(nestor::BindEventType::kMapped) &&
    NESTOR_BIND_EVENT_DEVICE_ATTACHED == unsigned(nestor::BindEventType::kDeviceAttached) &&
    NESTOR_BIND_EVENT_BOUND == unsigned(nestor::BindEventType::kBound) &&
    NESTOR_BIND_EVENT_CACHE_INVALIDATE == unsigned(nestor::BindEventType::kCacheInvalidate) &&
    NESTOR_BIND_EVENT_OWNER_RELEASED == unsigned(nestor::BindEventType::kOwnerReleased));
static_assert(NESTOR_CACHE_CONTEXT == invq::kCacheContext &&
              NESTOR_CACHE_PASID == invq::kCachePasid && NESTOR_CACHE_IOTLB == invq::kCacheIotlb &&
              NESTOR_CACHE_PAGING == invq::kCachePaging &&
              NESTOR_CACHE_DEVTLB == invq::kCacheDevTlb);
static_assert(NESTOR_SCOPE_GLOBAL == unsigned(invq::Scope::kGlobal) &&
              NESTOR_SCOPE_DOMAIN == unsigned(invq::Scope::kDomain) &&
              NESTOR_SCOPE_DEVICE == unsigned(invq::Scope::kDevice) &&
              NESTOR_SCOPE_PASID == unsigned(invq::Scope::kPasid) &&
              NESTOR_SCOPE_RANGE == unsigned(invq::Scope::kRange));
static_assert(NESTOR_INV_NO_PASID == invq::kNoPasid);
static_assert(nestor::EventHooks::kMaxHooks == 16, "nestor.h promises 16 hooks");

// The layouts are the ABI: the explicit reserved fields leave no implicit padding, and these
// pin the sizes an older caller was built with (growth only appends).
static_assert(sizeof(nestor_event_op) == 40 && offsetof(nestor_event_op, addr) == 24);
static_assert(sizeof(nestor_event_translate) == 88 &&
              offsetof(nestor_event_translate, request) == 16 &&
              offsetof(nestor_event_translate, fault_address) == 80);
static_assert(sizeof(nestor_event_fill) == 40 && offsetof(nestor_event_fill, address) == 24);
static_assert(sizeof(nestor_event_removed) == 40 && offsetof(nestor_event_removed, page) == 16);
static_assert(sizeof(nestor_event_invalidation) == 192 &&
              offsetof(nestor_event_invalidation, entries) == 176);
static_assert(sizeof(nestor_event_queue) == 120 && offsetof(nestor_event_queue, op) == 72);
static_assert(sizeof(nestor_event_bind) == 88 && offsetof(nestor_event_bind, op) == 48);
static_assert(sizeof(nestor_event) == 48);

nestor_event_op to_c_op(const invq::InvalidationOp &o) {
  nestor_event_op c{};
  c.cache = o.caches;
  c.scope = uint8_t(o.scope);
  c.did = o.did;
  c.source_id = o.source_id;
  c.leaf = o.leaf;
  c.addr_is_gpa = o.addr_is_gpa;
  c.pasid = o.pasid;
  c.function_mask = o.function_mask;
  c.devtlb_global = o.devtlb_global;
  c.max_invs_pending = o.max_invs_pending;
  c.pfsid = o.pfsid;
  c.addr = o.addr;
  c.npages = o.npages;
  return c;
}

nestor_request to_c_request(const nestor::Request &r) {
  nestor_request c{};
  c.source_id = r.source_id;
  c.has_pasid = r.has_pasid;
  c.pasid = r.pasid;
  c.iova = r.iova;
  c.access = r.access;
  c.privileged = r.privileged;
  return c;
}

// Calls the hook with `c` as the envelope's `member`: the one place an envelope is built.
template <class C>
void deliver(const EventHookSlot &hook, uint32_t kind, const C &c, const C *nestor_event::*member) {
  nestor_event ev{};
  ev.size = sizeof ev;
  ev.kind = kind;
  ev.*member = &c;
  hook.fn(hook.user, &ev);
}

nestor_event_translate to_c(const nestor::TranslateEvent &t) {
  nestor_event_translate c{};
  c.size = sizeof c;
  c.source = uint8_t(t.source);
  c.stages = uint8_t(t.stages);
  c.domain = t.domain;
  c.space = t.space;
  c.fault_suppressed = t.fault_suppressed;
  c.request = to_c_request(t.request);
  nestor::capi::to_c_result(t.result, &c.result);
  if (!t.result.ok) {
    c.fault_stage = int32_t(t.result.fault.stage);
    c.fault_address = t.result.fault.address;
  }
  return c;
}

nestor_event_fill to_c(const nestor::FillEvent &f) {
  nestor_event_fill c{};
  c.size = sizeof c;
  c.cache = uint8_t(f.cache);
  c.accepted = f.accepted;
  c.level = f.level;
  c.page_shift = f.page_shift;
  c.perms = f.perms;
  c.source_id = f.source_id;
  c.domain = f.domain;
  c.pasid = f.pasid;
  c.address = f.address;
  c.output = f.output;
  return c;
}

nestor_event_removed to_c(const nestor::RemovedEntry &r) {
  nestor_event_removed c{};
  c.cache = uint8_t(r.cache);
  c.level = r.level;
  c.required = r.required;
  c.second_level = r.key.second_level;
  c.nested = r.key.nested;
  c.has_domain = r.has_domain;
  c.did = r.key.did;
  c.source_id = r.key.source_id;
  c.pasid = r.key.pasid;
  c.page = r.key.page;
  c.pages = r.pages;
  c.gpa_page = r.key.gpa_page;
  return c;
}

nestor_event_queue to_c(const nestor::QueueEvent &q) {
  nestor_event_queue c{};
  c.size = sizeof c;
  c.type = uint8_t(q.type);
  c.type_code = q.type_code;
  c.descriptor_bits = uint16_t(q.descriptor_bits);
  c.is_wait = q.is_wait;
  c.is_op = q.is_op;
  c.status_write = q.status_write;
  c.interrupt = q.interrupt;
  c.fence = q.fence;
  c.index = q.index;
  for (size_t i = 0; i < q.raw.size(); ++i) c.raw[i] = q.raw[i];
  c.status_addr = q.status_addr;
  c.status_data = q.status_data;
  c.owner_queue = q.owner_queue;
  if (q.is_op) c.op = to_c_op(q.op);
  c.error = q.error;
  return c;
}

nestor_event_bind to_c(const nestor::BindEvent &b) {
  nestor_event_bind c{};
  c.size = sizeof c;
  c.type = uint8_t(b.type);
  c.source_id = b.source_id;
  c.result = b.result;
  c.owner = b.owner;
  c.pasid = b.pasid;
  c.domain = b.domain;
  c.gpa = b.gpa;
  c.hpa = b.hpa;
  c.length = b.size;
  if (b.type == nestor::BindEventType::kCacheInvalidate) c.op = to_c_op(b.op);
  return c;
}

// Invalidations that remove up to this many entries (the common page and range cases) convert
// them on the stack; larger ones take one heap array for the call.
constexpr size_t kStackRemoved = 32;

void deliver_invalidation(const EventHookSlot &hook, uint32_t kind,
                          const nestor::InvalidationEvent &inv) {
  nestor_event_invalidation c{};
  c.size = sizeof c;
  c.entry_size = sizeof(nestor_event_removed);
  c.op = to_c_op(inv.op);
  for (size_t i = 0; i < nestor::kEventCaches; ++i) {
    c.removed[i] = inv.removed[i];
    c.over[i] = inv.over[i];
  }
  nestor_event_removed stack[kStackRemoved];
  std::vector<nestor_event_removed> heap;
  std::span<nestor_event_removed> out(stack, std::min(kStackRemoved, inv.entries.size()));
  if (inv.entries.size() > kStackRemoved) {
    try {
      heap.resize(inv.entries.size());
      out = heap;
    } catch (const std::bad_alloc &) {
      // Deliver what fits: the counts stay exact, and the header documents that a short
      // entry_count means exactly this.
    }
  }
  for (size_t i = 0; i < out.size(); ++i) out[i] = to_c(inv.entries[i]);
  c.entries = out.data();
  c.entry_count = out.size();
  deliver(hook, kind, c, &nestor_event::invalidation);
}

// The C++ callback of every C hook. `user` is the hook's slot in the engine handle. Each
// converted struct is a temporary on this frame, alive until the C callback returns.
void trampoline(void *user, const nestor::Event &e) {
  const EventHookSlot &hook = *static_cast<const EventHookSlot *>(user);
  if (e.translate)
    deliver(hook, e.kind, to_c(*e.translate), &nestor_event::translate);
  else if (e.fill)
    deliver(hook, e.kind, to_c(*e.fill), &nestor_event::fill);
  else if (e.invalidation)
    deliver_invalidation(hook, e.kind, *e.invalidation);
  else if (e.queue)
    deliver(hook, e.kind, to_c(*e.queue), &nestor_event::queue);
  else if (e.bind)
    deliver(hook, e.kind, to_c(*e.bind), &nestor_event::bind);
}

}  // namespace

extern "C" {

int nestor_event_hook_add(nestor_engine *e, uint32_t kinds, nestor_event_fn fn, void *user,
                          int *hook_id) {
  if (!e || !fn) return -EINVAL;
  std::lock_guard lock(e->hook_mu);
  auto slot = std::find_if(e->hooks.begin(), e->hooks.end(),
                           [](const EventHookSlot &s) { return s.fn == nullptr; });
  if (slot == e->hooks.end()) return -ENOSPC;
  // Filled before the engine can call the trampoline with it.
  slot->fn = fn;
  slot->user = user;
  const int id = e->engine.add_event_hook(kinds, trampoline, &*slot);
  if (id < 0) {
    *slot = {};
    return id;
  }
  slot->id = id;
  if (hook_id) *hook_id = int(slot - e->hooks.begin());
  return 0;
}

int nestor_event_hook_remove(nestor_engine *e, int hook_id) {
  if (!e) return -EINVAL;
  std::lock_guard lock(e->hook_mu);
  if (hook_id < 0 || size_t(hook_id) >= e->hooks.size() || !e->hooks[size_t(hook_id)].fn)
    return -ENOENT;
  EventHookSlot &slot = e->hooks[size_t(hook_id)];
  const int rc = e->engine.remove_event_hook(slot.id);
  // The engine no longer runs the trampoline with this slot: it can be reused.
  slot = {};
  return rc;
}

const char *nestor_event_kind_name(uint32_t kind) {
  switch (kind) {
    case NESTOR_EVENT_TRANSLATE:
      return "translate";
    case NESTOR_EVENT_FAULT:
      return "fault";
    case NESTOR_EVENT_FILL:
      return "fill";
    case NESTOR_EVENT_INVALIDATION:
      return "invalidation";
    case NESTOR_EVENT_QUEUE:
      return "queue";
    case NESTOR_EVENT_BIND:
      return "bind";
    default:
      return "unknown";
  }
}

const char *nestor_event_cache_name(unsigned cache) {
  return cache < nestor::kEventCaches ? nestor::event_cache_name(nestor::EventCache(cache))
                                      : "unknown";
}

const char *nestor_translate_source_name(unsigned source) {
  return source <= 0xFF ? nestor::translate_source_name(nestor::TranslateSource(source))
                        : "unknown";
}

const char *nestor_fault_stage_name(int stage) {
  switch (stage) {
    case NESTOR_STAGE_NONE:
      return "none";
    case NESTOR_STAGE_STRUCTURES:
      return "structures";
    case NESTOR_STAGE_FIRST_LEVEL:
      return "first-level";
    case NESTOR_STAGE_SECOND_LEVEL:
      return "second-level";
    case NESTOR_STAGE_NESTED_TABLE:
      return "nested-table";
    default:
      return "unknown";
  }
}

const char *nestor_queue_event_name(unsigned type) {
  switch (type) {
    case NESTOR_QUEUE_EVENT_DESCRIPTOR:
      return "descriptor";
    case NESTOR_QUEUE_EVENT_WAIT_COMPLETED:
      return "wait-completed";
    case NESTOR_QUEUE_EVENT_ERROR:
      return "error";
    default:
      return "unknown";
  }
}

const char *nestor_bind_event_name(unsigned type) {
  return type <= 0xFF ? nestor::bind_event_name(nestor::BindEventType(type)) : "unknown";
}

}  // extern "C"
