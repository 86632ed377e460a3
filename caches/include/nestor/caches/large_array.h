// Fixed-size array of trivially destructible objects for the big cache tables, backed by
// transparent huge pages when it is large enough to span one.
//
// A set-associative cache of a million entries is a hundred megabytes; every set an
// invalidation or a miss touches then sits on its own 4K page, so on top of the memory miss
// each access takes a TLB miss, and under virtualisation a two-dimensional page walk. Range
// invalidation measured this: prefetches of 64 sets stalled on their page walks. Backing the
// table with 2M pages lets one TLB entry cover thousands of sets.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace nestor::caches {

template <class T>
class LargeArray {
  static_assert(std::is_trivially_destructible_v<T>,
                "the storage is released without running destructors");

 public:
  static constexpr size_t kHugePage = size_t{2} << 20;

  LargeArray() = default;
  explicit LargeArray(size_t n) : size_(n) {
    const size_t bytes = n * sizeof(T);
    const bool huge = bytes >= kHugePage;
    const size_t align = huge ? kHugePage : std::max<size_t>(alignof(T), 64);
    const size_t rounded = (bytes + align - 1) / align * align;
    void *p = std::aligned_alloc(align, rounded == 0 ? align : rounded);
    if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Advice only: without THP (or with it disabled) the table works on 4K pages.
    if (huge) (void)madvise(p, rounded, MADV_HUGEPAGE);
#endif
    storage_.reset(static_cast<T *>(p));
    std::uninitialized_value_construct_n(storage_.get(), n);
  }

  T &operator[](size_t i) {
    return storage_.get()[i];
  }
  const T &operator[](size_t i) const {
    return storage_.get()[i];
  }
  T *data() {
    return storage_.get();
  }
  const T *data() const {
    return storage_.get();
  }
  size_t size() const {
    return size_;
  }

 private:
  struct Free {
    void operator()(T *p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> storage_;
  size_t size_ = 0;
};

}  // namespace nestor::caches
