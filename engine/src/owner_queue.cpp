// Owner-direct invalidation queues (DIRECT_INVLD): a VT-d invalidation queue in an owner's
// memory that the engine consumes with the host queue's decoder and processor, translating
// the guest's DIDs and PASIDs and confining every descriptor to the owner's own bindings.
// docs/BIND.md, "Owner-direct invalidation queues", states the rules and why.
#include <algorithm>
#include <atomic>
#include <cerrno>

#include "nestor/bind.h"
#include "nestor/invalidation.h"
#include "nestor/walkers/second_level.h"

namespace nestor {

struct BindLayer::OwnerQueue {
  uint32_t owner = 0, id = 0;
  uint16_t did = 0;
  unsigned bits = 256;  // descriptor width
  invq::InvalidationQueue queue;
  // One tail write at a time per queue: they share `staged` and `scratch`, and their ops must
  // reach the processor in the order the queue decoded them.
  std::mutex tail_mu;
  invq::Submission staged;
  std::vector<invq::InvalidationOp> scratch;
  bool destroyed = false;  // written with the layer's mutex held exclusively
  // Why the sink refused the descriptor the queue stopped on (QueueFault::kStatusWrite).
  std::atomic<OwnerQueueFault> refusal{OwnerQueueFault::kNone};
  // Written under tail_mu, read by owner_queue_stats at any time.
  std::atomic<uint64_t> tail_writes{0}, ops_submitted{0}, waits{0};
  std::atomic<uint64_t> refused_host_only{0}, refused_not_owned{0}, refused_status{0};
};

namespace {
constexpr uint64_t kPage = 4096;

void bump(std::atomic<uint64_t> &c, uint64_t n = 1) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// The queue's GPA -> HPA for one access kind, remembering the last page: a tail write's
// descriptors sit in a few consecutive pages, and the mapping cannot change during the pass
// (map/unmap need the layer's mutex exclusively).
class PageTranslator {
 public:
  PageTranslator(MachineMemory &mem, const sl::Config &slc, uint8_t access)
      : mem_(mem), slc_(slc), access_(access) {}
  bool translate(uint64_t gpa, uint64_t *hpa) {
    const uint64_t page = gpa & ~(kPage - 1);
    if (page != page_) {
      const sl::Result r = sl::walk(mem_, slc_, page, access_);
      if (!r.ok) return false;
      page_ = page;
      hpa_page_ = r.t.out & ~(kPage - 1);
    }
    *hpa = hpa_page_ | (gpa & (kPage - 1));
    return true;
  }

 private:
  MachineMemory &mem_;
  const sl::Config &slc_;
  uint8_t access_;
  uint64_t page_ = ~uint64_t{0};
  uint64_t hpa_page_ = 0;
};
}  // namespace

std::shared_ptr<BindLayer::OwnerQueue> BindLayer::find_queue(uint32_t queue) {
  std::shared_lock lock(mu_);
  auto it = queues_.find(queue);
  return it == queues_.end() ? nullptr : it->second;
}

bool BindLayer::queue_in_use(uint32_t owner, uint16_t did) const {
  for (const auto &[id, q] : queues_)
    if ((owner && q->owner == owner) || (did && q->did == did)) return true;
  return false;
}

void BindLayer::guest_pasid_hosts(uint32_t owner, uint32_t guest,
                                  std::vector<uint32_t> *out) const {
  out->clear();
  uint32_t host;
  if (feature(kNestingFeatSyswidePasid) && pasids_.guest_to_host(owner, guest, &host) == 0)
    out->push_back(host);
  // Without SYSWIDE_PASID (or for PASID 0) the bindings carry the guest's names; a binding
  // made without one is named by its host PASID, as the guest uses host PASIDs then.
  for (const auto &[key, b] : bindings_) {
    if (b.owner != owner) continue;
    const uint32_t named =
        b.req.guest_pasid == PasidAllocator::kNoGuestPasid ? key.second : b.req.guest_pasid;
    if (named == guest && std::find(out->begin(), out->end(), key.second) == out->end())
      out->push_back(key.second);
  }
}

int BindLayer::queue_ops(uint32_t owner, const invq::InvalidationOp &op,
                         std::vector<invq::InvalidationOp> *out) const {
  if (op.caches & invq::kCacheDevTlb) {
    // Device-TLB descriptors (0x3, 0x8) name a device: it must be attached to one of the
    // owner's domains, so every entry its TLB holds was translated for this owner.
    auto dev = devices_.find(op.source_id);
    if (dev == devices_.end()) return -ENOENT;
    auto d = domains_.find(dev->second);
    if (d == domains_.end() || d->second.owner != owner) return -EPERM;
    invq::InvalidationOp fwd = op;
    if (op.pasid == invq::kNoPasid) {  // 0x3: requests without PASID
      out->push_back(fwd);
      return 0;
    }
    std::vector<uint32_t> hosts;
    guest_pasid_hosts(owner, op.pasid, &hosts);
    if (hosts.empty()) return -ENOENT;
    for (uint32_t h : hosts) {
      fwd.pasid = h;
      out->push_back(fwd);
    }
    return 0;
  }
  // Domain-selective and global (0x7 G=00b/11b): the guest's DID names nothing on the host;
  // "everything" from an owner means every one of its bindings, as for cache_invalidate.
  if (op.scope == invq::Scope::kDomain || op.scope == invq::Scope::kGlobal)
    return owner_ops(owner, op, 0, out);
  // PASID-tagged (0x6, 0x7 G=01b): the owner's bindings of that PASID supply the host DIDs.
  std::vector<uint32_t> hosts;
  guest_pasid_hosts(owner, op.pasid, &hosts);
  if (hosts.empty()) return -ENOENT;
  const size_t first = out->size();
  // Named variables, not structured bindings: clang 14 (the fuzz build) cannot capture those.
  for (const auto &entry : bindings_) {
    const Binding &b = entry.second;
    const uint16_t did = b.did;
    const uint32_t host = entry.first.second;
    if (b.owner != owner || std::find(hosts.begin(), hosts.end(), host) == hosts.end()) continue;
    // The IOTLB and PASID cache are tagged (DID, PASID), not by device: one op per pair.
    const bool dup = std::any_of(out->begin() + ptrdiff_t(first), out->end(),
                                 [&](const auto &o) { return o.did == did && o.pasid == host; });
    if (dup) continue;
    invq::InvalidationOp fwd = op;
    fwd.did = did;
    fwd.pasid = host;
    fwd.source_id = entry.first.first;
    out->push_back(fwd);
  }
  return 0;
}

int BindLayer::owner_queue_create(uint32_t owner, uint16_t did, uint64_t base_gpa, uint64_t entries,
                                  unsigned bits, uint32_t *queue) {
  if (!feature(kNestingFeatDirectInvld)) return -EOPNOTSUPP;
  if (!queue || (bits != 128 && bits != 256) || (base_gpa & (kPage - 1))) return -EINVAL;
  // IQA's geometry (VT-d 10.4.23): 2^QS 4K pages, QS <= 7.
  const uint64_t width = bits / 8;
  if (entries == 0 || entries > (kPage << 7) / width) return -EINVAL;
  const uint64_t bytes = entries * width;
  unsigned qs = 0;
  while ((kPage << qs) < bytes) ++qs;
  if ((kPage << qs) != bytes || base_gpa + bytes < base_gpa) return -EINVAL;
  std::lock_guard lock(mu_);
  if (!pasids_.has_owner(owner)) return -ENOENT;
  auto it = domains_.find(did);
  if (it == domains_.end()) return -ENOENT;
  if (it->second.owner != owner) return -EPERM;
  const sl::Config slc = sl_config(it->second);
  for (uint64_t off = 0; off < bytes; off += kPage)
    if (!sl::walk(mem_, slc, base_gpa + off, kAccessRead).ok) return -EINVAL;
  auto q = std::make_shared<OwnerQueue>();
  q->owner = owner;
  q->did = did;
  q->bits = bits;
  q->queue.write_iqa(base_gpa | (bits == 256 ? invq::InvalidationQueue::kIqaDw256 : 0) | qs);
  uint32_t id = next_queue_;
  while (id == 0 || queues_.count(id)) ++id;
  next_queue_ = id + 1;
  q->id = id;
  // Its descriptors, completed waits and the error that stops it are queue events, as the
  // host queue's are, named by its id.
  q->queue.set_event_hooks(&engine_.event_hooks(), id);
  queues_[id] = std::move(q);
  *queue = id;
  return 0;
}

int BindLayer::owner_queue_destroy(uint32_t queue) {
  if (!feature(kNestingFeatDirectInvld)) return -EOPNOTSUPP;
  std::lock_guard lock(mu_);
  auto it = queues_.find(queue);
  if (it == queues_.end()) return -ENOENT;
  it->second->destroyed = true;  // a tail write that found it before now sees this and stops
  queues_.erase(it);
  return 0;
}

int BindLayer::owner_queue_write_tail(uint32_t queue, uint64_t tail_index) {
  if (!feature(kNestingFeatDirectInvld)) return -EOPNOTSUPP;
  const std::shared_ptr<OwnerQueue> q = find_queue(queue);
  if (!q) return -ENOENT;
  invq::InvalidationProcessor &processor = engine_.invalidation().processor();
  bool ok;
  {
    std::lock_guard tail_lock(q->tail_mu);
    // Shared for the whole pass and the hand-over: tags are translated against bindings that
    // cannot change until the ops are queued, and an unbind, unmap or detach that follows
    // waits for them (its sync() fences the processor), status writes included.
    std::shared_lock lock(mu_);
    if (q->destroyed) return -ENOENT;
    bump(q->tail_writes);
    const sl::Config slc = sl_config(domains_.at(q->did));
    const EventHooks &hooks = engine_.event_hooks();
    PageTranslator fetch_tr(mem_, slc, kAccessRead), status_tr(mem_, slc, kAccessWrite);
    auto refuse = [&](OwnerQueueFault why, std::atomic<uint64_t> &counter) {
      q->refusal.store(why, std::memory_order_relaxed);
      bump(counter);
      return false;
    };
    ok = q->queue.write_tail(
        size_t(std::min<uint64_t>(tail_index, SIZE_MAX)),
        [&](uint64_t gpa, void *buf, size_t len) {
          uint64_t hpa;
          return fetch_tr.translate(gpa, &hpa) && mem_.read(hpa, buf, len) == 0;
        },
        [&](const invq::DecodedDescriptor &d, size_t index) -> bool {
          switch (d.kind) {
            case invq::DecodedKind::kWait: {
              invq::WaitOp w = d.wait;
              if (hooks.wants(kEventQueue)) [[unlikely]]
                // Reported in the owner's terms: the status GPA it wrote, and its queue.
                w.callback = invq::wait_completion_reporter(hooks, d.wait, index, q->bits, q->id);
              if (w.status_write) {
                // The status address is the owner's GPA: it lands in the owner's memory or
                // nowhere (VT-d 6.5.2.8's status write is a DMA write by the queue's owner).
                uint64_t hpa;
                if (!status_tr.translate(w.status_addr, &hpa) ||
                    !mem_.writable(hpa, sizeof(uint32_t)))
                  return refuse(OwnerQueueFault::kStatusAddress, q->refused_status);
                w.status_addr = hpa;
              }
              q->staged.add_wait(std::move(w));
              bump(q->waits);
              return true;
            }
            case invq::DecodedKind::kNoOp:  // 0x4, interrupt entry cache: the host's
              return refuse(OwnerQueueFault::kHostOnly, q->refused_host_only);
            case invq::DecodedKind::kOp:
              break;
          }
          // Context cache (0x1) and IOTLB (0x2, DID-tagged second-level and GPA-addressed)
          // invalidations concern structures and mappings the host owns.
          if (d.type == uint8_t(invq::DescriptorType::kContextCache) ||
              d.type == uint8_t(invq::DescriptorType::kIotlb))
            return refuse(OwnerQueueFault::kHostOnly, q->refused_host_only);
          q->scratch.clear();
          if (queue_ops(q->owner, d.op, &q->scratch) != 0)
            return refuse(OwnerQueueFault::kNotOwned, q->refused_not_owned);
          for (const auto &op : q->scratch) q->staged.add(op);
          bump(q->ops_submitted, q->scratch.size());
          return true;
        });
    // Descriptors before a bad one were accepted and take effect, as on the host queue.
    processor.submit(q->staged);
  }
  if (!processor.running()) processor.process_pending();
  return ok ? 0 : -EBUSY;
}

int BindLayer::owner_queue_state(uint32_t queue, OwnerQueueState *out) {
  if (!feature(kNestingFeatDirectInvld)) return -EOPNOTSUPP;
  const std::shared_ptr<OwnerQueue> q = find_queue(queue);
  if (!q) return -ENOENT;
  if (!out) return -EINVAL;
  OwnerQueueState s;
  s.head = q->queue.head();
  s.tail = q->queue.tail();
  s.error = q->queue.error();
  s.decode_error = q->queue.decode_error();
  switch (q->queue.fault()) {
    case invq::QueueFault::kNone:
      s.fault = OwnerQueueFault::kNone;
      break;
    case invq::QueueFault::kDecode:
      s.fault = OwnerQueueFault::kDecode;
      break;
    case invq::QueueFault::kFetchFailed:
      s.fault = OwnerQueueFault::kFetch;
      break;
    case invq::QueueFault::kTailOutOfRange:
    case invq::QueueFault::kTailMisaligned:
      s.fault = OwnerQueueFault::kTail;
      break;
    case invq::QueueFault::kStatusWrite:
      s.fault = q->refusal.load(std::memory_order_relaxed);
      break;
  }
  *out = s;
  return 0;
}

int BindLayer::owner_queue_clear_error(uint32_t queue) {
  if (!feature(kNestingFeatDirectInvld)) return -EOPNOTSUPP;
  const std::shared_ptr<OwnerQueue> q = find_queue(queue);
  if (!q) return -ENOENT;
  q->queue.clear_error();
  return 0;
}

int BindLayer::owner_queue_stats(uint32_t queue, OwnerQueueStats *out) {
  if (!feature(kNestingFeatDirectInvld)) return -EOPNOTSUPP;
  const std::shared_ptr<OwnerQueue> q = find_queue(queue);
  if (!q) return -ENOENT;
  if (!out) return -EINVAL;
  const invq::StatsSnapshot qs = q->queue.stats().snapshot();
  OwnerQueueStats s;
  s.tail_writes = q->tail_writes.load(std::memory_order_relaxed);
  s.ops_submitted = q->ops_submitted.load(std::memory_order_relaxed);
  s.waits = q->waits.load(std::memory_order_relaxed);
  s.refused_host_only = q->refused_host_only.load(std::memory_order_relaxed);
  s.refused_not_owned = q->refused_not_owned.load(std::memory_order_relaxed);
  s.refused_status = q->refused_status.load(std::memory_order_relaxed);
  s.errors = qs.errors;
  for (size_t t = 0; t < s.descriptors_by_type.size(); ++t) {
    s.descriptors_by_type[t] = qs.descriptors_by_type[t];
    s.descriptors += qs.descriptors_by_type[t];
  }
  *out = s;
  return 0;
}

}  // namespace nestor
