// VT-d's invalidation front ends over the architecture-neutral processor (invq/): the queued
// invalidation interface (IQA/IQH/IQT registers, descriptors fetched from machine memory) and
// Linux's iommufd cache-invalidation uAPI. Each turns what software wrote into
// invq::InvalidationOps and WaitOps and hands them to the processor; batching, coalescing,
// drain and wait completion are the processor's, the same for every front end.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>

#include "nestor/invq/processor.h"
#include "nestor/invq/stats.h"
#include "nestor/machine_memory.h"
#include "nestor/vtd/queue.h"
#include "nestor/vtd/uapi.h"

namespace nestor::vtd {

class InvalidationFrontEnd {
 public:
  // `host_width`: the host address width IQA's base must fit in.
  InvalidationFrontEnd(MachineMemory &mem, invq::InvalidationProcessor &processor,
                       unsigned host_width)
      : mem_(mem), processor_(processor), host_width_(host_width) {}
  InvalidationFrontEnd(const InvalidationFrontEnd &) = delete;
  InvalidationFrontEnd &operator=(const InvalidationFrontEnd &) = delete;

  // Programs IQA: base 4K aligned within the host width, entries * width a power-of-two
  // number of 4K pages, at most 128. 0 or -EINVAL.
  int qi_configure(uint64_t base_pa, uint64_t entries, unsigned descriptor_bits);
  // IQT write: fetches and decodes [head, tail), queues the ops and waits, and (without a
  // worker) processes them before returning, so status writes have landed. 0, -EINVAL (not
  // configured) or -EBUSY (the queue stopped on an error; see queue()).
  int qi_write_tail(uint64_t tail_index);
  // Back to power-on: unconfigured, IQA 0, head = tail = 0, no error. The caller has already
  // completed what was queued.
  void reset();

  // uAPI: converted ops are queued; nothing is for an invalid request, and for the array only
  // the entries before the first invalid one.
  invq::UapiError submit_user(const invq::UserCacheInvalidate &request,
                              const invq::UserTarget &target);
  invq::UapiArrayResult submit_iotlb_array(std::span<const invq::IotlbInvalidateEntry> entries,
                                           uint16_t did, uint32_t pasid);

  // Queue events (kEventQueue): the queue's descriptors and errors, and waits' completions.
  void set_event_hooks(const EventHooks *hooks) {
    hooks_ = hooks;
    queue_.set_event_hooks(hooks);
  }

  invq::InvalidationQueue &queue() { return queue_; }
  const invq::InvalidationQueue &queue() const { return queue_; }

 private:
  invq::WaitOp reporting_completion(const invq::WaitOp &wait, size_t index);

  MachineMemory &mem_;
  invq::InvalidationProcessor &processor_;
  const unsigned host_width_;
  invq::InvalidationQueue queue_;
  const EventHooks *hooks_ = nullptr;
  std::atomic<bool> qi_configured_{false};
  std::atomic<unsigned> descriptor_bits_{128};  // as configured; for wait-completion events
  // A tail write decodes into staged_ and hands it to the processor in one piece. The mutex
  // keeps concurrent tail writes from sharing staged_, and keeps their hand-overs in the order
  // the queue decoded them.
  std::mutex staging_mutex_;
  invq::Submission staged_;
};

}  // namespace nestor::vtd
