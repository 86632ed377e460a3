// C ABI of the invalidation queue: typed ops, VT-d queued invalidation, uAPI-style calls and
// statistics. Thin, exception-free wrappers over nestor::EngineInvalidation.
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <exception>
#include <vector>

#include "c_api_internal.h"
#include "nestor.h"
#include "nestor/invalidation.h"

namespace {

namespace invq = nestor::invq;

// The C constants are the C++ enumerators; a change on either side must fail the build.
static_assert(NESTOR_QI_ERR_NONE == int(invq::QiError::kNone) &&
              NESTOR_QI_ERR_IQE == int(invq::QiError::kInvalidDescriptor) &&
              NESTOR_QI_ERR_ITE == int(invq::QiError::kTimeout) &&
              NESTOR_QI_ERR_ICE == int(invq::QiError::kCompletion));
static_assert(NESTOR_UAPI_CACHE_IOTLB == invq::kUserCacheIotlb &&
              NESTOR_UAPI_CACHE_DEV_IOTLB == invq::kUserCacheDevIotlb &&
              NESTOR_UAPI_CACHE_PASID == invq::kUserCachePasid);
static_assert(NESTOR_UAPI_GRAN_DOMAIN == unsigned(invq::UserGranularity::kDomain) &&
              NESTOR_UAPI_GRAN_PASID == unsigned(invq::UserGranularity::kPasid) &&
              NESTOR_UAPI_GRAN_ADDR == unsigned(invq::UserGranularity::kAddr));
static_assert(NESTOR_UAPI_IOTLB_LEAF == invq::kIotlbInvalidateFlagLeaf &&
              NESTOR_UAPI_ALL_PAGES == invq::kIotlbInvalidateAllPages);
static_assert(sizeof(nestor_uapi_iotlb_entry) == sizeof(invq::IotlbInvalidateEntry) &&
              offsetof(nestor_uapi_iotlb_entry, npages) ==
                  offsetof(invq::IotlbInvalidateEntry, npages) &&
              offsetof(nestor_uapi_iotlb_entry, flags) ==
                  offsetof(invq::IotlbInvalidateEntry, flags) &&
              offsetof(nestor_uapi_iotlb_entry, reserved) ==
                  offsetof(invq::IotlbInvalidateEntry, reserved));
static_assert(NESTOR_INV_STATS_TYPES <= invq::kDescriptorTypeCount);

nestor::EngineInvalidation &inv(nestor_engine *e) { return e->engine.invalidation(); }

}  // namespace

extern "C" {

int nestor_inv_submit(nestor_engine *e, const nestor_inv_op *op) {
  if (!e || !op) return -EINVAL;
  if (!op->cache || (op->cache & ~0x1Fu) || op->scope > NESTOR_SCOPE_RANGE) return -EINVAL;
  invq::InvalidationOp o;
  o.caches = op->cache;
  o.scope = invq::Scope(op->scope);
  o.did = op->did;
  o.source_id = op->source_id;
  o.pasid = op->pasid;
  o.leaf = op->leaf;
  if (o.scope == invq::Scope::kRange) {
    // Unaligned used to be aligned down silently while the uAPI calls refused it: one rule.
    if (op->npages == 0 || op->npages > (~uint64_t{0} >> 12) ||
        (op->addr >> 12) + op->npages < (op->addr >> 12) || (op->addr & 0xFFF))
      return -EINVAL;
    o.addr = op->addr;
    o.npages = op->npages;
  }
  try {
    inv(e).submit(o);
  } catch (const std::exception &) {
    return -ENOMEM;  // the queue could not grow
  }
  return 0;
}

int nestor_inv_wait(nestor_engine *e) {
  if (!e) return -EINVAL;
  try {
    e->engine.invalidate_wait();
  } catch (const std::exception &) {
    return -ENOMEM;
  }
  return 0;
}

int nestor_qi_configure(nestor_engine *e, uint64_t base_pa, uint64_t entries,
                        unsigned descriptor_bits) {
  if (!e) return -EINVAL;
  return inv(e).qi_configure(base_pa, entries, descriptor_bits);
}

int nestor_qi_write_tail(nestor_engine *e, uint64_t tail_index) {
  if (!e) return -EINVAL;
  try {
    return inv(e).qi_write_tail(tail_index);
  } catch (const std::exception &) {
    return -ENOMEM;
  }
}

int nestor_qi_state(nestor_engine *e, uint64_t *head_index, int *error) {
  if (!e) return -EINVAL;
  const invq::InvalidationQueue &q = inv(e).queue();
  if (head_index) *head_index = q.head();
  if (error) *error = int(q.error());
  return 0;
}

int nestor_qi_clear_error(nestor_engine *e) {
  if (!e) return -EINVAL;
  inv(e).queue().clear_error();
  return 0;
}

int nestor_uapi_cache_invalidate(nestor_engine *e, const nestor_uapi_cache_inv *in) {
  if (!e || !in || in->size < sizeof(uint32_t)) return -EINVAL;
  // Versioned: fields past the caller's size read as zero (and are then rejected if needed).
  nestor_uapi_cache_inv c{};
  std::memcpy(&c, in, std::min<size_t>(in->size, sizeof c));
  if (c.granularity > NESTOR_UAPI_GRAN_ADDR ||
      (c.flags & ~(NESTOR_UAPI_FLAG_LEAF | NESTOR_UAPI_FLAG_ADDR_NO_PASID))) {
    return -EINVAL;
  }
  invq::UserCacheInvalidate request;
  request.cache = c.cache;
  request.granularity = invq::UserGranularity(c.granularity);
  request.pasid = c.pasid;
  request.addr = c.addr;
  request.granule_size = c.granule_size;
  request.nb_granules = c.nb_granules;
  request.leaf = (c.flags & NESTOR_UAPI_FLAG_LEAF) != 0;
  request.has_pasid = (c.flags & NESTOR_UAPI_FLAG_ADDR_NO_PASID) == 0;
  invq::UserTarget target;
  target.did = c.did;
  target.source_id = c.source_id;
  try {
    return inv(e).submit_user(request, target) == invq::UapiError::kNone ? 0 : -EINVAL;
  } catch (const std::exception &) {
    return -ENOMEM;
  }
}

int nestor_uapi_iotlb_invalidate_array(nestor_engine *e, uint16_t did, uint32_t pasid,
                                       const nestor_uapi_iotlb_entry *entries, uint32_t count,
                                       int *error) {
  if (error) *error = 0;
  if (!e || (!entries && count)) return -EINVAL;
  try {
    std::vector<invq::IotlbInvalidateEntry> in(count);
    for (uint32_t i = 0; i < count; ++i)
      in[i] = {entries[i].addr, entries[i].npages, entries[i].flags, entries[i].reserved};
    const invq::UapiArrayResult r = inv(e).submit_iotlb_array(in, did, pasid);
    if (error && !r.ok()) *error = invq::to_errno(r.error);
    return int(std::min<size_t>(r.handled, INT32_MAX));
  } catch (const std::exception &) {
    return -ENOMEM;
  }
}

int nestor_inv_get_stats(nestor_engine *e, nestor_inv_stats *out) {
  if (!e || !out || out->size < 8) return -EINVAL;
  const invq::StatsSnapshot s = inv(e).stats();
  nestor_inv_stats full{};
  full.size = sizeof full;
  full.version = NESTOR_INV_STATS_VERSION;
  for (size_t t = 0; t < NESTOR_INV_STATS_TYPES; ++t)
    full.descriptors_by_type[t] = s.descriptors_by_type[t];
  full.ops_submitted = s.ops_submitted;
  full.waits_submitted = s.waits_submitted;
  full.batches = s.batches;
  full.batch_ops_sum = s.batch_ops_sum;
  full.batch_ops_max = s.batch_ops_max;
  full.ops_applied = s.ops_applied;
  full.coalesced_away = s.coalesced_away;
  full.promotions = s.promotions;
  full.waits_completed = s.waits_completed;
  full.wait_latency_sum_ns = s.wait_latency_sum_ns;
  full.wait_latency_max_ns = s.wait_latency_max_ns;
  full.interrupts = s.interrupts;
  full.drains = s.drains;
  full.errors = s.errors;
  full.pending_max = s.pending_max;
  const size_t n = std::min<size_t>(out->size, sizeof full);
  full.size = uint32_t(n);
  std::memcpy(out, &full, n);
  return 0;
}

}  // extern "C"
