// The bind layer's public calls: each runs its body and, when a hook asks for bind events,
// reports what it did and what it returned. Separate from the bodies so that no path out of a
// call can skip its event.
#include "nestor/bind.h"

namespace nestor {

namespace {

// Builds the event only when it will be delivered.
template <class Body, class Describe>
int reported(EventHooks &hooks, BindEventType type, Body &&body, Describe &&describe) {
  const int result = body();
  if (!hooks.wants(kEventBind)) return result;
  BindEvent ev;
  ev.type = type;
  ev.result = result;
  describe(ev);
  Event e;
  e.kind = kEventBind;
  e.bind = &ev;
  hooks.emit(e);
  return result;
}

}  // namespace

int BindLayer::create_owner(uint32_t quota, uint32_t *owner) {
  return reported(
      engine_.event_hooks(), BindEventType::kOwnerCreated,
      [&] { return create_owner_unreported(quota, owner); },
      [&](BindEvent &ev) { ev.owner = owner ? *owner : 0; });
}

int BindLayer::destroy_owner(uint32_t owner) {
  return reported(
      engine_.event_hooks(), BindEventType::kOwnerDestroyed,
      [&] { return destroy_owner_unreported(owner); }, [&](BindEvent &ev) { ev.owner = owner; });
}

int BindLayer::release_owner(uint32_t owner) {
  return reported(
      engine_.event_hooks(), BindEventType::kOwnerDestroyed,
      [&] { return release_owner_unreported(owner); }, [&](BindEvent &ev) { ev.owner = owner; });
}

int BindLayer::alloc_pasid(uint32_t owner, uint32_t want, uint32_t guest_pasid, uint32_t *pasid) {
  return reported(
      engine_.event_hooks(), BindEventType::kPasidAllocated,
      [&] { return alloc_pasid_unreported(owner, want, guest_pasid, pasid); },
      [&](BindEvent &ev) {
        ev.owner = owner;
        ev.pasid = pasid ? *pasid : want;
      });
}

int BindLayer::free_pasid(uint32_t owner, uint32_t pasid) {
  return reported(
      engine_.event_hooks(), BindEventType::kPasidFreed,
      [&] { return free_pasid_unreported(owner, pasid); },
      [&](BindEvent &ev) {
        ev.owner = owner;
        ev.pasid = pasid;
      });
}

int BindLayer::create_domain(const DomainConfig &dc, uint16_t *did) {
  return reported(
      engine_.event_hooks(), BindEventType::kDomainCreated,
      [&] { return create_domain_unreported(dc, did); },
      [&](BindEvent &ev) {
        ev.owner = dc.owner;
        ev.domain = did ? *did : 0;
      });
}

int BindLayer::adopt_domain(const DomainConfig &dc, uint64_t sl_root, uint16_t *did) {
  return reported(
      engine_.event_hooks(), BindEventType::kDomainCreated,
      [&] { return adopt_domain_unreported(dc, sl_root, did); },
      [&](BindEvent &ev) {
        ev.owner = dc.owner;
        ev.domain = did ? *did : 0;
        ev.hpa = sl_root;
      });
}

int BindLayer::destroy_domain(uint16_t did) {
  return reported(
      engine_.event_hooks(), BindEventType::kDomainDestroyed,
      [&] { return destroy_domain_unreported(did); }, [&](BindEvent &ev) { ev.domain = did; });
}

int BindLayer::map(uint16_t did, uint64_t gpa, uint64_t hpa, uint64_t size, uint8_t perms) {
  return reported(
      engine_.event_hooks(), BindEventType::kMapped,
      [&] { return map_unreported(did, gpa, hpa, size, perms); },
      [&](BindEvent &ev) {
        ev.domain = did;
        ev.gpa = gpa;
        ev.hpa = hpa;
        ev.size = size;
      });
}

int BindLayer::unmap(uint16_t did, uint64_t gpa, uint64_t size) {
  return reported(
      engine_.event_hooks(), BindEventType::kUnmapped,
      [&] { return unmap_unreported(did, gpa, size); },
      [&](BindEvent &ev) {
        ev.domain = did;
        ev.gpa = gpa;
        ev.size = size;
      });
}

int BindLayer::attach_device(uint16_t sid, uint16_t did) {
  return reported(
      engine_.event_hooks(), BindEventType::kDeviceAttached,
      [&] { return attach_device_unreported(sid, did); },
      [&](BindEvent &ev) {
        ev.source_id = sid;
        ev.domain = did;
      });
}

int BindLayer::detach_device(uint16_t sid) {
  return reported(
      engine_.event_hooks(), BindEventType::kDeviceDetached,
      [&] { return detach_device_unreported(sid); }, [&](BindEvent &ev) { ev.source_id = sid; });
}

int BindLayer::bind(uint32_t owner, uint16_t sid, uint32_t pasid, const BindRequest &req) {
  return reported(
      engine_.event_hooks(), BindEventType::kBound,
      [&] { return bind_unreported(owner, sid, pasid, req); },
      [&](BindEvent &ev) {
        ev.owner = owner;
        ev.source_id = sid;
        ev.pasid = pasid;
        ev.gpa = req.fl_root_gpa;
      });
}

int BindLayer::unbind(uint32_t owner, uint16_t sid, uint32_t pasid) {
  return reported(
      engine_.event_hooks(), BindEventType::kUnbound,
      [&] { return unbind_unreported(owner, sid, pasid); },
      [&](BindEvent &ev) {
        ev.owner = owner;
        ev.source_id = sid;
        ev.pasid = pasid;
      });
}

int BindLayer::cache_invalidate(uint32_t owner, const invq::InvalidationOp &op, uint32_t flags) {
  return reported(
      engine_.event_hooks(), BindEventType::kCacheInvalidate,
      [&] { return cache_invalidate_unreported(owner, op, flags); },
      [&](BindEvent &ev) {
        ev.owner = owner;
        ev.source_id = op.source_id;
        ev.pasid = op.pasid;
        ev.domain = op.did;
        ev.op = op;
      });
}

}  // namespace nestor
