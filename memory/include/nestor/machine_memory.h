// The IOMMU's view of host physical memory: RAM regions with direct host pointers (the fast
// path), lazily backed so tens of GiB can be declared without touching them, plus an optional
// callback for everything outside RAM. Every entry access is an atomic 64-bit operation so
// concurrent table writers and walkers stay well defined (and ThreadSanitizer-clean).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "nestor/export.h"
#include "nestor/walkers/memory.h"

namespace nestor {

// Callbacks for addresses outside RAM. Return 0 or a negative errno value.
using IoReadFn = int (*)(void *ctx, uint64_t pa, void *buf, size_t len);
using IoWriteFn = int (*)(void *ctx, uint64_t pa, const void *buf, size_t len);
// Fault injection: return true to make the access at `pa` fail.
using FailFn = bool (*)(void *ctx, uint64_t pa, bool is_write);
// Write observer: sees every successful write()/write64() (table and structure edits, wait
// status writes), after it took effect. cas64 (the walkers' A/D updates) is not reported.
using WriteObserverFn = void (*)(void *ctx, uint64_t pa, const void *data, size_t len);

class NESTOR_CXX_API MachineMemory {
 public:
  static constexpr int kMaxRegions = 64;

  MachineMemory() = default;
  ~MachineMemory();
  MachineMemory(const MachineMemory &) = delete;
  MachineMemory &operator=(const MachineMemory &) = delete;

  // Engine-owned, zeroed, lazily backed RAM. Base and size must be 4K aligned and must not
  // overlap another region. Returns 0 or -EINVAL / -EEXIST / -ENOMEM / -ENOSPC.
  int add_ram(uint64_t base, uint64_t size);
  // Caller-owned RAM at `host` (must stay valid and 8-byte aligned for the engine's life).
  int add_host_ram(uint64_t base, uint64_t size, void *host);
  // Removes the region added (add_ram or add_host_ram) with exactly this base and size:
  // engine-owned RAM is unmapped, caller-owned RAM is the caller's again. Returns 0 or
  // -ENOENT. Not safe while another thread accesses memory; nothing outside MachineMemory
  // keeps host pointers, but caches keep translations (invalidate or Engine::reset()).
  int remove_ram(uint64_t base, uint64_t size);
  void set_io_callbacks(IoReadFn read, IoWriteFn write, void *ctx);
  void set_fail_injector(FailFn fn, void *ctx);
  // Install (or, with nullptr, remove) the write observer. Like the fail injector, set it
  // while no other thread writes: trace recording uses it to capture table edits.
  void set_write_observer(WriteObserverFn fn, void *ctx);

  // Host pointer for [pa, pa+len) if it lies inside one RAM region, else nullptr.
  uint8_t *host_ptr(uint64_t pa, size_t len) const {
    const int n = count_.load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i) {
      const Region &r = regions_[i];
      if (pa - r.base < r.size && len <= r.size - (pa - r.base)) return r.host + (pa - r.base);
    }
    return nullptr;
  }

  bool read64(uint64_t pa, uint64_t *out) {
    if (fail_armed_.load(std::memory_order_acquire) && fail_(fail_ctx_, pa, false)) return false;
    if (!(pa & 7))
      if (uint8_t *p = host_ptr(pa, 8)) {
        *out = std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t *>(p))
                   .load(std::memory_order_acquire);
        return true;
      }
    return read(pa, out, 8) == 0;
  }

  bool write64(uint64_t pa, uint64_t v) {
    if (fail_armed_.load(std::memory_order_acquire) && fail_(fail_ctx_, pa, true)) return false;
    if (!(pa & 7))
      if (uint8_t *p = host_ptr(pa, 8)) {
        std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t *>(p))
            .store(v, std::memory_order_release);
        if (observe_armed_.load(std::memory_order_acquire)) observer_(observer_ctx_, pa, &v, 8);
        return true;
      }
    return write(pa, &v, 8) == 0;
  }

  CasStatus cas64(uint64_t pa, uint64_t &expected, uint64_t desired) {
    if (fail_armed_.load(std::memory_order_acquire) && fail_(fail_ctx_, pa, true))
      return CasStatus::kError;
    if (pa & 7) return CasStatus::kError;
    if (uint8_t *p = host_ptr(pa, 8)) {
      return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t *>(p))
                     .compare_exchange_strong(expected, desired, std::memory_order_acq_rel)
                 ? CasStatus::kOk
                 : CasStatus::kChanged;
    }
    // Outside RAM the callback device decides; compare-exchange is emulated (not atomic).
    uint64_t cur;
    if (read(pa, &cur, 8) != 0) return CasStatus::kError;
    if (cur != expected) {
      expected = cur;
      return CasStatus::kChanged;
    }
    return write(pa, &desired, 8) == 0 ? CasStatus::kOk : CasStatus::kError;
  }

  // Bulk access that may span regions and the callback. 0 or -EFAULT (nothing partial is
  // reported as success). Aligned words are copied atomically. A write that would reach
  // memory neither RAM nor a write callback covers writes nothing; with a callback, a
  // callback error stops the copy there (the callback's device decides what it accepted).
  int read(uint64_t pa, void *buf, size_t len);
  int write(uint64_t pa, const void *buf, size_t len);

  // Zeroes every engine-owned RAM region (add_ram) without unmapping it: the pages are handed
  // back to the kernel and read as zero on next touch, so the cost follows what was touched,
  // not what was declared. Caller-owned RAM (add_host_ram) is the caller's to clear. Regions,
  // callbacks and the fail injector stay. Not safe while another thread accesses memory.
  void zero_ram();

  // True if every byte of [pa, pa+len) is RAM.
  bool is_ram(uint64_t pa, size_t len) const;
  // True if a write of [pa, pa+len) can be attempted: RAM, or an I/O write callback that the
  // parts outside RAM go to (which may still fail them).
  bool writable(uint64_t pa, size_t len) const { return io_write_ || is_ram(pa, len); }

  struct RegionInfo {
    uint64_t base, size;
    bool owned;
  };
  std::vector<RegionInfo> regions() const;

 private:
  struct Region {
    uint64_t base = 0;
    uint64_t size = 0;
    uint8_t *host = nullptr;
    bool owned = false;
  };
  int add_region(uint64_t base, uint64_t size, uint8_t *host, bool owned);
  int copy(uint64_t pa, void *buf, size_t len, bool to_memory);

  Region regions_[kMaxRegions];
  std::atomic<int> count_{0};
  std::mutex add_mutex_;
  IoReadFn io_read_ = nullptr;
  IoWriteFn io_write_ = nullptr;
  void *io_ctx_ = nullptr;
  std::atomic<bool> fail_armed_{false};
  FailFn fail_ = nullptr;
  void *fail_ctx_ = nullptr;
  std::atomic<bool> observe_armed_{false};
  WriteObserverFn observer_ = nullptr;
  void *observer_ctx_ = nullptr;
};

static_assert(PhysicalMemory<MachineMemory>);

// Hands out zeroed 4K pages for tables from a RAM range, thread-safe (not a hot path).
class NESTOR_CXX_API PageAllocator {
 public:
  PageAllocator(MachineMemory &mem, uint64_t base, uint64_t size)
      : mem_(mem), next_(base), end_(base + size) {}
  // 0 when exhausted.
  uint64_t alloc();
  // n physically contiguous zeroed pages, or 0. Taken from the never-used part of the range
  // only (freed pages are single pages scattered anywhere), so freeing single pages never
  // makes a later contiguous request fail while fresh room remains.
  uint64_t alloc_contiguous(uint64_t n);
  void free(uint64_t pa);
  uint64_t pages_in_use() const;

 private:
  MachineMemory &mem_;
  mutable std::mutex mu_;
  uint64_t next_, end_;
  std::vector<uint64_t> free_;
  uint64_t in_use_ = 0;
};

}  // namespace nestor
