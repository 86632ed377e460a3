#include "nestor/vtd/queue.h"

namespace nestor::invq {

void InvalidationQueue::write_iqa(uint64_t value) {
  std::lock_guard lock(mutex_);
  base_ = value & kIqaBaseMask;
  dw256_ = (value & kIqaDw256) != 0;
  queue_size_log2_ = static_cast<unsigned>(value & kIqaQsMask);
  head_ = 0;
  tail_ = 0;
  error_ = QiError::kNone;
  fault_ = QueueFault::kNone;
  decode_error_ = DecodeError::kNone;
}

uint64_t InvalidationQueue::read_iqa() const {
  std::lock_guard lock(mutex_);
  return base_ | (dw256_ ? kIqaDw256 : 0) | queue_size_log2_;
}

uint64_t InvalidationQueue::read_iqh() const {
  std::lock_guard lock(mutex_);
  return head_ * width_bytes();
}

uint64_t InvalidationQueue::read_iqt() const {
  std::lock_guard lock(mutex_);
  return tail_ * width_bytes();
}

uint64_t InvalidationQueue::base() const {
  std::lock_guard lock(mutex_);
  return base_;
}

DescriptorWidth InvalidationQueue::width() const {
  std::lock_guard lock(mutex_);
  return dw256_ ? DescriptorWidth::k256 : DescriptorWidth::k128;
}

size_t InvalidationQueue::entries() const {
  std::lock_guard lock(mutex_);
  return (size_t{4096} << queue_size_log2_) / width_bytes();
}

size_t InvalidationQueue::head() const {
  std::lock_guard lock(mutex_);
  return head_;
}

size_t InvalidationQueue::tail() const {
  std::lock_guard lock(mutex_);
  return tail_;
}

QiError InvalidationQueue::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

QueueFault InvalidationQueue::fault() const {
  std::lock_guard lock(mutex_);
  return fault_;
}

DecodeError InvalidationQueue::decode_error() const {
  std::lock_guard lock(mutex_);
  return decode_error_;
}

void InvalidationQueue::clear_error() {
  std::lock_guard lock(mutex_);
  error_ = QiError::kNone;
  fault_ = QueueFault::kNone;
  decode_error_ = DecodeError::kNone;
}

void InvalidationQueue::stop(QueueFault fault, DecodeError decode_error) {
  error_ = QiError::kInvalidDescriptor;
  fault_ = fault;
  decode_error_ = decode_error;
  stats_.count_error();
  if (observed()) [[unlikely]]
    emit_stop();
}

const char *to_string(QueueFault fault) {
  switch (fault) {
    case QueueFault::kNone:
      return "no error";
    case QueueFault::kDecode:
      return "invalid descriptor";
    case QueueFault::kFetchFailed:
      return "descriptor fetch failed (queue address not backed by memory)";
    case QueueFault::kTailOutOfRange:
      return "tail beyond the queue size";
    case QueueFault::kTailMisaligned:
      return "tail not 256-bit aligned with 256-bit descriptors";
    case QueueFault::kStatusWrite:
      return "wait descriptor's status address is not writable";
  }
  return "unknown queue error";
}

void InvalidationQueue::emit_descriptor(const RawDescriptor &raw,
                                        const DecodedDescriptor *decoded) const {
  QueueEvent ev;
  ev.type = QueueEventType::kDescriptor;
  ev.owner_queue = owner_queue_;
  ev.index = head_;
  ev.raw = raw.qw;
  ev.descriptor_bits = dw256_ ? 256 : 128;
  if (!dw256_) ev.raw[2] = ev.raw[3] = 0;
  ev.type_code = descriptor_type(raw.qw[0]);
  if (decoded) {
    ev.is_op = decoded->kind == DecodedKind::kOp;
    ev.is_wait = decoded->kind == DecodedKind::kWait;
    if (ev.is_op) ev.op = decoded->op;
    if (ev.is_wait) {
      ev.status_write = decoded->wait.status_write;
      ev.status_addr = decoded->wait.status_addr;
      ev.status_data = decoded->wait.status_data;
      ev.interrupt = decoded->wait.interrupt;
      ev.fence = decoded->wait.fence;
    }
  }
  Event e;
  e.kind = kEventQueue;
  e.queue = &ev;
  hooks_->emit(e);
}

std::function<void()> wait_completion_reporter(const EventHooks &hooks, const WaitOp &wait,
                                               size_t index, unsigned bits, uint32_t owner_queue) {
  QueueEvent ev;
  ev.type = QueueEventType::kWaitCompleted;
  ev.owner_queue = owner_queue;
  ev.index = index;
  ev.descriptor_bits = bits;
  ev.type_code = 0x5;  // VT-d Invalidation Wait Descriptor
  ev.is_wait = true;
  ev.status_write = wait.status_write;
  ev.status_addr = wait.status_addr;
  ev.status_data = wait.status_data;
  ev.interrupt = wait.interrupt;
  ev.fence = wait.fence;
  return [&hooks, ev] {
    Event e;
    e.kind = kEventQueue;
    e.queue = &ev;
    hooks.emit(e);
  };
}

// Called with the queue's lock held, from stop(): head_ is the descriptor that stopped it.
void InvalidationQueue::emit_stop() const {
  QueueEvent ev;
  ev.type = QueueEventType::kError;
  ev.owner_queue = owner_queue_;
  ev.index = head_;
  ev.descriptor_bits = dw256_ ? 256 : 128;
  ev.error = fault_ == QueueFault::kDecode ? to_string(decode_error_) : to_string(fault_);
  Event e;
  e.kind = kEventQueue;
  e.queue = &ev;
  hooks_->emit(e);
}

}  // namespace nestor::invq
