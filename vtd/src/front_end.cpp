#include "nestor/vtd/front_end.h"

#include <cerrno>

namespace nestor::vtd {

int InvalidationFrontEnd::qi_configure(uint64_t base_pa, uint64_t entries,
                                       unsigned descriptor_bits) {
  if (descriptor_bits != 128 && descriptor_bits != 256) return -EINVAL;
  if ((base_pa & 0xFFF) != 0 || (base_pa >> host_width_) != 0) return -EINVAL;
  const uint64_t width_bytes = descriptor_bits / 8;
  if (entries == 0 || entries > (uint64_t{4096} << 7) / width_bytes) return -EINVAL;
  const uint64_t bytes = entries * width_bytes;
  unsigned qs = 0;
  while ((uint64_t{4096} << qs) < bytes) ++qs;
  if ((uint64_t{4096} << qs) != bytes) return -EINVAL;  // IQA can only express 2^QS pages
  queue_.write_iqa(base_pa | (descriptor_bits == 256 ? invq::InvalidationQueue::kIqaDw256 : 0) |
                   qs);
  descriptor_bits_.store(descriptor_bits, std::memory_order_relaxed);
  qi_configured_.store(true, std::memory_order_release);
  return 0;
}

// The wait with a completion callback that reports it (run where the processor completes it).
invq::WaitOp InvalidationFrontEnd::reporting_completion(const invq::WaitOp &wait, size_t index) {
  invq::WaitOp w = wait;
  w.callback = invq::wait_completion_reporter(*hooks_, wait, index,
                                              descriptor_bits_.load(std::memory_order_relaxed));
  return w;
}

int InvalidationFrontEnd::qi_write_tail(uint64_t tail_index) {
  if (!qi_configured_.load(std::memory_order_acquire)) return -EINVAL;
  bool ok;
  {
    std::lock_guard staging(staging_mutex_);
    ok = queue_.write_tail(
        static_cast<size_t>(tail_index),
        [this](uint64_t pa, void *buf, size_t len) { return mem_.read(pa, buf, len) == 0; },
        [this](const invq::DecodedDescriptor &d, size_t index) {
          switch (d.kind) {
            case invq::DecodedKind::kOp:
              staged_.add(d.op);
              break;
            case invq::DecodedKind::kWait:
              // The status write happens after the batch completes; a write that could never
              // land (neither RAM nor an embedder's I/O handler there) is refused now so the
              // queue stops on this descriptor, as QEMU's vtd_process_wait_desc fails the
              // descriptor when its write fails.
              if (d.wait.status_write && !mem_.writable(d.wait.status_addr, sizeof(uint32_t))) {
                return false;
              }
              if (hooks_ && hooks_->wants(kEventQueue)) [[unlikely]] {
                staged_.add_wait(reporting_completion(d.wait, index));
                break;
              }
              staged_.add_wait(d.wait);
              break;
            case invq::DecodedKind::kNoOp:
              break;  // interrupt-entry cache: nothing cached here
          }
          return true;
        });
    // Descriptors before an error were accepted and must take effect, as on hardware.
    processor_.submit(staged_);
  }
  if (!processor_.running()) processor_.process_pending();
  return ok ? 0 : -EBUSY;
}

void InvalidationFrontEnd::reset() {
  qi_configured_.store(false, std::memory_order_release);
  queue_.write_iqa(0);  // IQA 0: base 0, 128-bit, one page; head, tail and error cleared
}

invq::UapiError InvalidationFrontEnd::submit_user(const invq::UserCacheInvalidate &request,
                                                  const invq::UserTarget &target) {
  const invq::UapiOps converted = invq::cache_invalidate_user(request, target);
  if (!converted.ok()) return converted.error;
  for (const invq::InvalidationOp &op : converted.ops) processor_.submit(op);
  return invq::UapiError::kNone;
}

invq::UapiArrayResult InvalidationFrontEnd::submit_iotlb_array(
    std::span<const invq::IotlbInvalidateEntry> entries, uint16_t did, uint32_t pasid) {
  invq::UapiArrayResult result = invq::invalidate_iotlb_array(entries, did, pasid);
  for (const invq::InvalidationOp &op : result.ops) processor_.submit(op);
  return result;
}

}  // namespace nestor::vtd
