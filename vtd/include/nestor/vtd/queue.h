// VT-d queued-invalidation register emulation: IQA, IQH, IQT and the invalidation-queue error.
// The queue only fetches, decodes and forwards in order; applying is the sink's business.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <type_traits>
#include <utility>

#include "nestor/events.h"
#include "nestor/invq/stats.h"
#include "nestor/vtd/descriptor.h"

namespace nestor::invq {

// Values are part of the C ABI (NESTOR_QI_ERR_*).
enum class QiError : uint8_t {
  kNone = 0,
  kInvalidDescriptor = 1,  // IQE
  kTimeout = 2,            // ITE (device-TLB completion time-out; never raised here)
  kCompletion = 3,         // ICE (never raised here)
};

// Why the queue stopped; finer than the architectural error code.
enum class QueueFault : uint8_t {
  kNone = 0,
  kDecode,          // see decode_error()
  kFetchFailed,     // descriptor address not backed by machine memory
  kTailOutOfRange,  // tail index beyond the queue size
  kTailMisaligned,  // IQT bit 4 set with 256-bit descriptors
  kStatusWrite,     // the sink refused a wait whose status write cannot be done
};

// What stopped a queue, in words (QueueFault::kDecode: see to_string(DecodeError)).
const char *to_string(QueueFault fault);

// A wait's completion callback that reports it as a kWaitCompleted queue event through
// `hooks` (descriptor `index` of a queue of `bits`-bit descriptors; `owner_queue` as in
// QueueEvent). It runs where the processor completes the wait, after the status write. The
// host queue's front end and the owners' direct queues both report this way.
std::function<void()> wait_completion_reporter(const EventHooks &hooks, const WaitOp &wait,
                                               size_t index, unsigned bits,
                                               uint32_t owner_queue = 0);

class InvalidationQueue {
 public:
  // IQA_REG fields.
  static constexpr uint64_t kIqaBaseMask = ~uint64_t{0xFFF};
  static constexpr uint64_t kIqaDw256 = uint64_t{1} << 11;
  static constexpr uint64_t kIqaQsMask = 0x7;
  // IQH_REG / IQT_REG hold a byte offset in bits 18:4.
  static constexpr uint64_t kQueueOffsetMask = 0x7FFF0;

  explicit InvalidationQueue(DecodeOptions options = {}) : options_(options) {}

  // Programs base, width and size; head and tail restart at 0 and any error is cleared, as the
  // queue is being (re)enabled.
  void write_iqa(uint64_t value);
  uint64_t read_iqa() const;
  uint64_t read_iqh() const;  // head byte offset
  uint64_t read_iqt() const;  // tail byte offset

  uint64_t base() const;
  DescriptorWidth width() const;
  size_t entries() const;  // 2^QS 4K pages of descriptors
  size_t head() const;
  size_t tail() const;
  QiError error() const;
  QueueFault fault() const;
  DecodeError decode_error() const;

  // Clears the error; processing restarts at head on the next tail write.
  void clear_error();

  const Stats &stats() const { return stats_; }

  // Where queue events go (kEventQueue: each descriptor decoded, and the error that stops the
  // queue); null: nowhere. `owner_queue` names the queue in them (QueueEvent::owner_queue; 0
  // for the host's). Set before the queue is used.
  void set_event_hooks(const EventHooks *hooks, uint32_t owner_queue = 0) {
    hooks_ = hooks;
    owner_queue_ = owner_queue;
  }

  // Moves the tail to `tail_index` and processes [head, tail): each descriptor is read with
  // `fetch(pa, buf, len) -> bool`, decoded, and handed to `sink(const DecodedDescriptor&)` in
  // queue order. On an error, head stays on the offending descriptor, nothing after it reaches
  // the sink, and the queue stays stopped until clear_error(). Returns false on error.
  // `sink` may return bool: false refuses the descriptor (a wait whose status address is not
  // writable memory), which stops the queue with IQE like a decode error, as QEMU's
  // vtd_process_wait_desc does when its status write fails.
  // `sink` may also take the descriptor's index as a second argument (then it returns bool).
  // `sink` must not call back into this queue.
  template <typename Fetch, typename Sink>
  bool write_tail(size_t tail_index, Fetch &&fetch, Sink &&sink);

  // IQT_REG write (byte offset), as an MMIO handler would forward it.
  template <typename Fetch, typename Sink>
  bool write_iqt(uint64_t value, Fetch &&fetch, Sink &&sink);

 private:
  void stop(QueueFault fault, DecodeError decode_error);
  size_t width_bytes() const { return dw256_ ? 32 : 16; }
  bool observed() const { return hooks_ && hooks_->wants(kEventQueue); }
  // `decoded` null: the descriptor failed to decode (the error event follows).
  void emit_descriptor(const RawDescriptor &raw, const DecodedDescriptor *decoded) const;
  void emit_stop() const;

  const EventHooks *hooks_ = nullptr;
  uint32_t owner_queue_ = 0;

  mutable std::mutex mutex_;
  DecodeOptions options_;
  uint64_t base_ = 0;
  bool dw256_ = false;
  unsigned queue_size_log2_ = 0;
  size_t head_ = 0;
  size_t tail_ = 0;
  QiError error_ = QiError::kNone;
  QueueFault fault_ = QueueFault::kNone;
  DecodeError decode_error_ = DecodeError::kNone;
  Stats stats_;
};

template <typename Fetch, typename Sink>
bool InvalidationQueue::write_tail(size_t tail_index, Fetch &&fetch, Sink &&sink) {
  std::lock_guard lock(mutex_);
  const size_t count = (size_t{4096} << queue_size_log2_) / width_bytes();
  if (tail_index >= count) {
    stop(QueueFault::kTailOutOfRange, DecodeError::kNone);
    return false;
  }
  tail_ = tail_index;
  if (error_ != QiError::kNone) return false;
  const bool observed = this->observed();
  const DescriptorWidth width = dw256_ ? DescriptorWidth::k256 : DescriptorWidth::k128;
  // Counted here and added once per tail write: one atomic add per type, not per descriptor.
  std::array<uint64_t, kDescriptorTypeCount> by_type{};
  struct AddCounts {
    Stats &stats;
    const std::array<uint64_t, kDescriptorTypeCount> &by_type;
    ~AddCounts() { stats.count_descriptors(by_type); }
  } add_counts{stats_, by_type};
  DecodedDescriptor decoded;
  while (head_ != tail_) {
    RawDescriptor raw;
    const uint64_t pa = base_ + head_ * width_bytes();
    if (!fetch(pa, static_cast<void *>(raw.qw.data()), width_bytes())) {
      stop(QueueFault::kFetchFailed, DecodeError::kNone);
      return false;
    }
    const DecodeError error = decode_descriptor(raw, width, options_, decoded);
    if (observed) [[unlikely]]
      emit_descriptor(raw, error == DecodeError::kNone ? &decoded : nullptr);
    if (error != DecodeError::kNone) {
      stop(QueueFault::kDecode, error);
      return false;
    }
    if constexpr (std::is_invocable_v<Sink &, const DecodedDescriptor &, size_t>) {
      if (!sink(std::as_const(decoded), head_)) {
        stop(QueueFault::kStatusWrite, DecodeError::kNone);
        return false;
      }
    } else if constexpr (std::is_same_v<std::invoke_result_t<Sink &, const DecodedDescriptor &>,
                                        bool>) {
      if (!sink(std::as_const(decoded))) {
        stop(QueueFault::kStatusWrite, DecodeError::kNone);
        return false;
      }
    } else {
      sink(std::as_const(decoded));
    }
    ++by_type[decoded.type % kDescriptorTypeCount];
    head_ = (head_ + 1) % count;
  }
  return true;
}

template <typename Fetch, typename Sink>
bool InvalidationQueue::write_iqt(uint64_t value, Fetch &&fetch, Sink &&sink) {
  const uint64_t offset = value & kQueueOffsetMask;
  size_t index = 0;
  {
    std::lock_guard lock(mutex_);
    if (dw256_ && (offset & 0x10) != 0) {
      stop(QueueFault::kTailMisaligned, DecodeError::kNone);
      return false;
    }
    index = static_cast<size_t>(offset >> (dw256_ ? 5 : 4));
  }
  return write_tail(index, std::forward<Fetch>(fetch), std::forward<Sink>(sink));
}

}  // namespace nestor::invq
