#include "nestor/machine_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace nestor {

MachineMemory::~MachineMemory() {
  const int n = count_.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i)
    if (regions_[i].owned) munmap(regions_[i].host, regions_[i].size);
}

int MachineMemory::add_region(uint64_t base, uint64_t size, uint8_t *host, bool owned) {
  std::lock_guard lock(add_mutex_);
  const int n = count_.load(std::memory_order_relaxed);
  if (n == kMaxRegions) return -ENOSPC;
  for (int i = 0; i < n; ++i) {
    const Region &r = regions_[i];
    if (base < r.base + r.size && r.base < base + size) return -EEXIST;
  }
  if (owned) {
    // MAP_NORESERVE: pages materialise (zeroed) on first touch, so a benchmark can declare
    // far more RAM than it uses.
    void *p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -ENOMEM;
    host = static_cast<uint8_t *>(p);
  }
  regions_[n] = Region{base, size, host, owned};
  count_.store(n + 1, std::memory_order_release);
  return 0;
}

int MachineMemory::add_ram(uint64_t base, uint64_t size) {
  if (size == 0 || (base | size) & 0xFFF || base + size < base) return -EINVAL;
  return add_region(base, size, nullptr, true);
}

int MachineMemory::add_host_ram(uint64_t base, uint64_t size, void *host) {
  if (size == 0 || !host || (base | size) & 0xFFF || base + size < base ||
      reinterpret_cast<uintptr_t>(host) & 7)
    return -EINVAL;
  return add_region(base, size, static_cast<uint8_t *>(host), false);
}

int MachineMemory::remove_ram(uint64_t base, uint64_t size) {
  std::lock_guard lock(add_mutex_);
  const int n = count_.load(std::memory_order_relaxed);
  for (int i = 0; i < n; ++i) {
    const Region r = regions_[i];
    if (r.base != base || r.size != size) continue;
    // Keep the array dense: host_ptr() and copy() scan [0, count_).
    for (int j = i; j + 1 < n; ++j) regions_[j] = regions_[j + 1];
    regions_[n - 1] = Region{};
    count_.store(n - 1, std::memory_order_release);
    if (r.owned) munmap(r.host, r.size);
    return 0;
  }
  return -ENOENT;
}

void MachineMemory::set_io_callbacks(IoReadFn read, IoWriteFn write, void *ctx) {
  io_read_ = read;
  io_write_ = write;
  io_ctx_ = ctx;
}

void MachineMemory::set_fail_injector(FailFn fn, void *ctx) {
  fail_armed_.store(false, std::memory_order_release);
  fail_ = fn;
  fail_ctx_ = ctx;
  if (fn) fail_armed_.store(true, std::memory_order_release);
}

void MachineMemory::set_write_observer(WriteObserverFn fn, void *ctx) {
  observe_armed_.store(false, std::memory_order_release);
  observer_ = fn;
  observer_ctx_ = ctx;
  if (fn) observe_armed_.store(true, std::memory_order_release);
}

void MachineMemory::zero_ram() {
  const int n = count_.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    const Region &r = regions_[i];
    if (!r.owned) continue;
    // A private anonymous mapping refills with zero pages after MADV_DONTNEED; should the
    // kernel refuse, clearing by hand keeps the promise at the price of touching everything.
    if (madvise(r.host, r.size, MADV_DONTNEED) != 0) std::memset(r.host, 0, r.size);
  }
}

bool MachineMemory::is_ram(uint64_t pa, size_t len) const {
  while (len) {
    const int n = count_.load(std::memory_order_acquire);
    bool found = false;
    for (int i = 0; i < n && !found; ++i) {
      const Region &r = regions_[i];
      if (pa - r.base < r.size) {
        const uint64_t chunk = std::min<uint64_t>(len, r.size - (pa - r.base));
        pa += chunk;
        len -= chunk;
        found = true;
      }
    }
    if (!found) return false;
  }
  return true;
}

// Copies word-by-word with atomic accesses where aligned, so bulk writes by a guest never
// tear an entry a walker is reading at the same time.
static void copy_atomic(uint8_t *mem, uint8_t *buf, size_t len, bool to_memory, uint64_t pa) {
  size_t i = 0;
  while (i < len) {
    if (((pa + i) & 7) == 0 && len - i >= 8) {
      auto word = std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t *>(mem + i));
      uint64_t v;
      if (to_memory) {
        std::memcpy(&v, buf + i, 8);
        word.store(v, std::memory_order_release);
      } else {
        v = word.load(std::memory_order_acquire);
        std::memcpy(buf + i, &v, 8);
      }
      i += 8;
    } else {
      auto byte = std::atomic_ref<uint8_t>(mem[i]);
      if (to_memory)
        byte.store(buf[i], std::memory_order_relaxed);
      else
        buf[i] = byte.load(std::memory_order_relaxed);
      ++i;
    }
  }
}

int MachineMemory::copy(uint64_t pa, void *buf, size_t len, bool to_memory) {
  uint8_t *b = static_cast<uint8_t *>(buf);
  if (fail_armed_.load(std::memory_order_acquire) && fail_(fail_ctx_, pa, to_memory))
    return -EFAULT;
  while (len) {
    const int n = count_.load(std::memory_order_acquire);
    const Region *hit = nullptr;
    for (int i = 0; i < n; ++i)
      if (pa - regions_[i].base < regions_[i].size) hit = &regions_[i];
    size_t chunk;
    if (hit) {
      chunk = std::min<uint64_t>(len, hit->size - (pa - hit->base));
      copy_atomic(hit->host + (pa - hit->base), b, chunk, to_memory, pa);
    } else {
      // Up to the next region (or the end) goes to the callback, if there is one.
      uint64_t next = ~uint64_t{0};
      for (int i = 0; i < n; ++i)
        if (regions_[i].base > pa) next = std::min(next, regions_[i].base);
      chunk = std::min<uint64_t>(len, next - pa);
      int rc = -EFAULT;
      if (to_memory && io_write_)
        rc = io_write_(io_ctx_, pa, b, chunk);
      else if (!to_memory && io_read_)
        rc = io_read_(io_ctx_, pa, b, chunk);
      if (rc != 0) return rc < 0 ? rc : -EFAULT;
    }
    pa += chunk;
    b += chunk;
    len -= chunk;
  }
  return 0;
}

int MachineMemory::read(uint64_t pa, void *buf, size_t len) {
  if (pa + len < pa) return -EFAULT;
  return copy(pa, buf, len, false);
}

int MachineMemory::write(uint64_t pa, const void *buf, size_t len) {
  if (pa + len < pa) return -EFAULT;
  // Without a write callback a range that leaves RAM cannot complete: refuse it before the
  // in-RAM part is written, so a failed write changes nothing.
  if (!io_write_ && !is_ram(pa, len)) return -EFAULT;
  const int rc = copy(pa, const_cast<void *>(buf), len, true);
  if (rc == 0 && observe_armed_.load(std::memory_order_acquire))
    observer_(observer_ctx_, pa, buf, len);
  return rc;
}

std::vector<MachineMemory::RegionInfo> MachineMemory::regions() const {
  std::vector<RegionInfo> out;
  const int n = count_.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i)
    out.push_back({regions_[i].base, regions_[i].size, regions_[i].owned});
  return out;
}

uint64_t PageAllocator::alloc() {
  uint64_t pa = 0;
  {
    std::lock_guard lock(mu_);
    if (!free_.empty()) {
      pa = free_.back();
      free_.pop_back();
    } else if (next_ + 4096 <= end_) {
      pa = next_;
      next_ += 4096;
    } else {
      return 0;
    }
    ++in_use_;
  }
  static const uint8_t zero[4096] = {};
  if (mem_.write(pa, zero, sizeof zero) != 0) return 0;
  return pa;
}

uint64_t PageAllocator::alloc_contiguous(uint64_t n) {
  if (n == 0) return 0;
  if (n == 1) return alloc();
  uint64_t pa;
  {
    std::lock_guard lock(mu_);
    if (n > (end_ - next_) / 4096) return 0;
    pa = next_;
    next_ += n * 4096;
    in_use_ += n;
  }
  static const uint8_t zero[4096] = {};
  for (uint64_t i = 0; i < n; ++i)
    if (mem_.write(pa + i * 4096, zero, sizeof zero) != 0) return 0;
  return pa;
}

void PageAllocator::free(uint64_t pa) {
  std::lock_guard lock(mu_);
  free_.push_back(pa);
  --in_use_;
}

uint64_t PageAllocator::pages_in_use() const {
  std::lock_guard lock(mu_);
  return in_use_;
}

}  // namespace nestor
