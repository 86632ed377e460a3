// The C ABI of the bind layer: thin, exception-free wrappers over nestor::BindLayer.
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <memory>

#include "c_api_internal.h"
#include "nestor.h"
#include "nestor/bind.h"

struct nestor_bind {
  std::unique_ptr<nestor::BindLayer> layer;
};

namespace {

// The C and C++ nesting-info layouts are one ABI.
static_assert(sizeof(nestor_nesting_info) == sizeof(nestor::NestingInfo));
static_assert(offsetof(nestor_nesting_info, features) == offsetof(nestor::NestingInfo, features));
static_assert(offsetof(nestor_nesting_info, host_address_width) ==
              offsetof(nestor::NestingInfo, host_address_width));
static_assert(offsetof(nestor_nesting_info, sl_levels) == offsetof(nestor::NestingInfo, sl_levels));
static_assert(offsetof(nestor_nesting_info, vtd) == offsetof(nestor::NestingInfo, vtd));
static_assert(offsetof(nestor_nesting_info_vtd, ecap_reg) ==
              offsetof(nestor::NestingInfoVtd, ecap_reg));
static_assert(NESTOR_NESTING_FEAT_SYSWIDE_PASID == nestor::kNestingFeatSyswidePasid &&
              NESTOR_NESTING_FEAT_BIND_PGTBL == nestor::kNestingFeatBindPgtbl &&
              NESTOR_NESTING_FEAT_CACHE_INVLD == nestor::kNestingFeatCacheInvld &&
              NESTOR_NESTING_FEAT_DIRECT_INVLD == nestor::kNestingFeatDirectInvld &&
              NESTOR_NESTING_FEAT_ALL == nestor::kNestingFeatAll);
static_assert(NESTOR_OWNER_QUEUE_FAULT_DECODE == unsigned(nestor::OwnerQueueFault::kDecode) &&
              NESTOR_OWNER_QUEUE_FAULT_FETCH == unsigned(nestor::OwnerQueueFault::kFetch) &&
              NESTOR_OWNER_QUEUE_FAULT_TAIL == unsigned(nestor::OwnerQueueFault::kTail) &&
              NESTOR_OWNER_QUEUE_FAULT_HOST_ONLY == unsigned(nestor::OwnerQueueFault::kHostOnly) &&
              NESTOR_OWNER_QUEUE_FAULT_NOT_OWNED == unsigned(nestor::OwnerQueueFault::kNotOwned) &&
              NESTOR_OWNER_QUEUE_FAULT_STATUS_ADDRESS ==
                  unsigned(nestor::OwnerQueueFault::kStatusAddress));
static_assert(NESTOR_QI_ERR_IQE == unsigned(nestor::invq::QiError::kInvalidDescriptor));
static_assert(NESTOR_BIND_SRE == nestor::kBindSre && NESTOR_BIND_WPE == nestor::kBindWpe &&
              NESTOR_BIND_EAFE == nestor::kBindEafe && NESTOR_BIND_PCD == nestor::kBindPcd &&
              NESTOR_BIND_PWT == nestor::kBindPwt);
static_assert(NESTOR_BIND_INV_CACHE_PASID == nestor::invq::kCachePasid &&
              NESTOR_BIND_INV_CACHE_IOTLB == nestor::invq::kCacheIotlb &&
              NESTOR_BIND_INV_CACHE_PAGING == nestor::invq::kCachePaging &&
              NESTOR_BIND_INV_CACHE_DEVTLB == nestor::invq::kCacheDevTlb);
static_assert(NESTOR_BIND_INV_SCOPE_RANGE == unsigned(nestor::invq::Scope::kRange) &&
              NESTOR_BIND_INV_SCOPE_PASID == unsigned(nestor::invq::Scope::kPasid) &&
              NESTOR_BIND_INV_SCOPE_DEVICE == unsigned(nestor::invq::Scope::kDevice) &&
              NESTOR_BIND_INV_SCOPE_DOMAIN == unsigned(nestor::invq::Scope::kDomain) &&
              NESTOR_BIND_INV_SCOPE_GLOBAL == unsigned(nestor::invq::Scope::kGlobal));
static_assert(NESTOR_NO_GUEST_PASID == nestor::PasidAllocator::kNoGuestPasid);

// Versioned input: only the prefix the caller declares is read, the rest are zero/defaults.
template <class T>
bool read_versioned(const T *in, T *out) {
  *out = T{};
  if (!in || in->size < sizeof(uint32_t)) return false;
  std::memcpy(out, in, std::min<size_t>(in->size, sizeof(T)));
  return true;
}

bool to_domain_config(const nestor_domain_config *c, nestor::DomainConfig *dc) {
  nestor_domain_config in;
  if (!read_versioned(c, &in)) return false;
  if (in.flags & ~(NESTOR_DOMAIN_NESTING | NESTOR_DOMAIN_AD)) return false;
  dc->levels = in.levels;
  dc->nesting = in.flags & NESTOR_DOMAIN_NESTING;
  dc->ad = in.flags & NESTOR_DOMAIN_AD;
  dc->owner = in.owner;
  return true;
}

}  // namespace

extern "C" {

nestor_bind *nestor_bind_create(nestor_engine *e, const nestor_bind_config *cfg, int *err) {
  int dummy;
  if (!err) err = &dummy;
  nestor_bind_config in;
  if (!e || !read_versioned(cfg, &in)) {
    nestor_set_last_error("NULL engine or configuration");
    *err = -EINVAL;
    return nullptr;
  }
  nestor::BindConfig bc;
  if (in.features == NESTOR_BIND_CFG_NO_FEATURES)
    bc.features = 0;
  else if (in.features)
    bc.features = in.features;
  bc.table_base = in.table_base;
  bc.table_size = in.table_size;
  if (in.max_domain_id) bc.max_domain_id = in.max_domain_id;
  try {
    auto layer = nestor::BindLayer::create(e->engine, bc, err);
    if (!layer) {
      nestor_set_last_error(*err == -EBUSY    ? "the engine already has a bind layer"
                            : *err == -ENOMEM ? "no room for the root table in the table range"
                                              : "table range must be RAM, 4K aligned, >= 256 KiB; "
                                                "max_domain_id >= 1; known features only");
      return nullptr;
    }
    auto b = std::make_unique<nestor_bind>();
    b->layer = std::move(layer);
    return b.release();
  } catch (...) {
    *err = -ENOMEM;
    return nullptr;
  }
}

void nestor_bind_destroy(nestor_bind *b) {
  std::unique_ptr<nestor_bind> owned(b);
}

// Bookkeeping allocations can throw std::bad_alloc; the C ABI turns that into -ENOMEM.
#define NESTOR_BIND_CALL(b, expr) \
  do {                            \
    if (!(b)) return -EINVAL;     \
    try {                         \
      return (expr);              \
    } catch (...) {               \
      return -ENOMEM;             \
    }                             \
  } while (0)

int nestor_get_nesting_info(nestor_bind *b, void *info, uint32_t size) {
  NESTOR_BIND_CALL(b, b->layer->get_nesting_info(info, size));
}

int nestor_owner_create(nestor_bind *b, uint32_t quota, uint32_t *owner) {
  NESTOR_BIND_CALL(b, b->layer->create_owner(quota, owner));
}

int nestor_owner_destroy(nestor_bind *b, uint32_t owner) {
  NESTOR_BIND_CALL(b, b->layer->destroy_owner(owner));
}

int nestor_owner_release(nestor_bind *b, uint32_t owner) {
  NESTOR_BIND_CALL(b, b->layer->release_owner(owner));
}

int nestor_pasid_alloc(nestor_bind *b, uint32_t owner, uint32_t want, uint32_t guest_pasid,
                       uint32_t *pasid) {
  NESTOR_BIND_CALL(b, b->layer->alloc_pasid(owner, want, guest_pasid, pasid));
}

int nestor_pasid_free(nestor_bind *b, uint32_t owner, uint32_t pasid) {
  NESTOR_BIND_CALL(b, b->layer->free_pasid(owner, pasid));
}

int nestor_pasid_guest_to_host(nestor_bind *b, uint32_t owner, uint32_t guest_pasid,
                               uint32_t *pasid) {
  if (!pasid) return -EINVAL;
  NESTOR_BIND_CALL(b, b->layer->pasids().guest_to_host(owner, guest_pasid, pasid));
}

int nestor_domain_create(nestor_bind *b, const nestor_domain_config *cfg, uint16_t *did) {
  nestor::DomainConfig dc;
  if (!to_domain_config(cfg, &dc) || !did) return -EINVAL;
  NESTOR_BIND_CALL(b, b->layer->create_domain(dc, did));
}

int nestor_domain_adopt(nestor_bind *b, const nestor_domain_config *cfg, uint64_t sl_root,
                        uint16_t *did) {
  nestor::DomainConfig dc;
  if (!to_domain_config(cfg, &dc) || !did) return -EINVAL;
  NESTOR_BIND_CALL(b, b->layer->adopt_domain(dc, sl_root, did));
}

int nestor_domain_destroy(nestor_bind *b, uint16_t did) {
  NESTOR_BIND_CALL(b, b->layer->destroy_domain(did));
}

int nestor_domain_map(nestor_bind *b, uint16_t did, uint64_t gpa, uint64_t hpa, uint64_t size,
                      uint8_t perms) {
  NESTOR_BIND_CALL(b, b->layer->map(did, gpa, hpa, size, perms));
}

int nestor_domain_unmap(nestor_bind *b, uint16_t did, uint64_t gpa, uint64_t size) {
  NESTOR_BIND_CALL(b, b->layer->unmap(did, gpa, size));
}

int nestor_device_attach(nestor_bind *b, uint16_t source_id, uint16_t did) {
  NESTOR_BIND_CALL(b, b->layer->attach_device(source_id, did));
}

int nestor_device_detach(nestor_bind *b, uint16_t source_id) {
  NESTOR_BIND_CALL(b, b->layer->detach_device(source_id));
}

int nestor_bind_pgtbl(nestor_bind *b, uint32_t owner, uint16_t source_id, uint32_t pasid,
                      const nestor_bind_data *data) {
  nestor_bind_data in;
  if (!read_versioned(data, &in) || in.addr_width > 255) return -EINVAL;
  nestor::BindRequest req;
  req.fl_root_gpa = in.fl_root_gpa;
  req.addr_width = uint8_t(in.addr_width);
  req.flags = in.flags;
  // A caller whose struct ends before guest_pasid has none.
  req.guest_pasid = data->size >= offsetof(nestor_bind_data, guest_pasid) + sizeof(uint32_t)
                        ? in.guest_pasid
                        : NESTOR_NO_GUEST_PASID;
  NESTOR_BIND_CALL(b, b->layer->bind(owner, source_id, pasid, req));
}

int nestor_unbind_pgtbl(nestor_bind *b, uint32_t owner, uint16_t source_id, uint32_t pasid) {
  NESTOR_BIND_CALL(b, b->layer->unbind(owner, source_id, pasid));
}

int nestor_cache_invalidate(nestor_bind *b, uint32_t owner, const nestor_bind_inv *inv) {
  nestor_bind_inv in;
  if (!read_versioned(inv, &in)) return -EINVAL;
  if (in.flags & ~(NESTOR_BIND_INV_GUEST_PASID | NESTOR_BIND_INV_LEAF)) return -EINVAL;
  if (in.scope > NESTOR_BIND_INV_SCOPE_RANGE) return -EINVAL;
  nestor::invq::InvalidationOp op;
  op.caches = in.caches;
  op.scope = nestor::invq::Scope(in.scope);
  op.source_id = in.source_id;
  op.pasid = in.pasid;
  op.addr = in.addr;
  op.npages = in.npages;
  op.leaf = in.flags & NESTOR_BIND_INV_LEAF;
  const uint32_t flags =
      (in.flags & NESTOR_BIND_INV_GUEST_PASID) ? uint32_t(nestor::kInvGuestPasid) : 0u;
  NESTOR_BIND_CALL(b, b->layer->cache_invalidate(owner, op, flags));
}

int nestor_owner_queue_create(nestor_bind *b, uint32_t owner, uint16_t domain_did,
                              uint64_t base_gpa, uint64_t entries, unsigned descriptor_bits,
                              uint32_t *queue) {
  NESTOR_BIND_CALL(b, b->layer->owner_queue_create(owner, domain_did, base_gpa, entries,
                                                   descriptor_bits, queue));
}

int nestor_owner_queue_destroy(nestor_bind *b, uint32_t queue) {
  NESTOR_BIND_CALL(b, b->layer->owner_queue_destroy(queue));
}

int nestor_owner_queue_write_tail(nestor_bind *b, uint32_t queue, uint64_t tail_index) {
  NESTOR_BIND_CALL(b, b->layer->owner_queue_write_tail(queue, tail_index));
}

int nestor_owner_queue_state(nestor_bind *b, uint32_t queue, uint64_t *head_index, int *error) {
  if (!b) return -EINVAL;
  nestor::OwnerQueueState s;
  if (int r = b->layer->owner_queue_state(queue, &s); r != 0) return r;
  if (head_index) *head_index = s.head;
  if (error) *error = int(s.error);
  return 0;
}

int nestor_owner_queue_clear_error(nestor_bind *b, uint32_t queue) {
  NESTOR_BIND_CALL(b, b->layer->owner_queue_clear_error(queue));
}

int nestor_owner_queue_get_stats(nestor_bind *b, uint32_t queue, nestor_owner_queue_stats *out) {
  if (!b || !out || out->size < sizeof(uint32_t)) return -EINVAL;
  nestor::OwnerQueueStats s;
  nestor::OwnerQueueState st;
  if (int r = b->layer->owner_queue_stats(queue, &s); r != 0) return r;
  if (int r = b->layer->owner_queue_state(queue, &st); r != 0) return r;
  nestor_owner_queue_stats full{};
  full.fault = unsigned(st.fault);
  full.tail_writes = s.tail_writes;
  full.descriptors = s.descriptors;
  full.ops_submitted = s.ops_submitted;
  full.waits = s.waits;
  full.errors = s.errors;
  full.refused_host_only = s.refused_host_only;
  full.refused_not_owned = s.refused_not_owned;
  full.refused_status = s.refused_status;
  for (size_t t = 0; t < 16; ++t) full.descriptors_by_type[t] = s.descriptors_by_type[t];
  const size_t n = std::min<size_t>(out->size, sizeof full);
  full.size = uint32_t(n);
  std::memcpy(out, &full, n);
  return 0;
}

}  // extern "C"
