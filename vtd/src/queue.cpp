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
}

}  // namespace nestor::invq
