// RCU-style grace periods for the drain step: translating threads announce that they are
// inside a translation, and synchronize() waits for every translation that began before it.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <utility>

// GCC refuses std::atomic_thread_fence under ThreadSanitizer (it cannot model fences).
#if defined(__SANITIZE_THREAD__)
#define NESTOR_INVQ_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NESTOR_INVQ_TSAN 1
#endif
#endif

namespace nestor::invq {

class EpochDomain {
 public:
  static constexpr size_t kMaxReaders = 256;

  // One registered reader slot. A thread keeps it (e.g. in its thread-local state) and
  // brackets every translation with enter()/exit(). Nesting is allowed; only the outermost
  // pair publishes. Not shareable between threads that are inside at the same time.
  class Reader {
   public:
    Reader() = default;
    Reader(Reader &&other) noexcept { swap(other); }
    Reader &operator=(Reader &&other) noexcept {
      Reader moved(std::move(other));
      swap(moved);
      return *this;
    }
    Reader(const Reader &) = delete;
    Reader &operator=(const Reader &) = delete;
    ~Reader() { release(); }

    bool valid() const { return domain_ != nullptr; }

    void enter() {
      if (depth_++ != 0) return;
      std::atomic<uint64_t> &slot = domain_->slots_[index_].epoch;
      // Acquire pairs with the release in synchronize()'s epoch bump: a reader that sees the
      // new epoch also sees every removal the synchronizer made before bumping it.
      slot.store(domain_->global_epoch_.load(std::memory_order_acquire), std::memory_order_relaxed);
      // Store-load barrier: either synchronize() sees this announcement, or this thread's
      // following cache reads see the removals made before synchronize() (its barrier pairs
      // with this one). A plain release store would allow both to miss each other.
      domain_->store_load_barrier();
    }

    void exit() {
      if (--depth_ != 0) return;
      // Release: the translation's reads happen before the synchronizer sees it left.
      domain_->slots_[index_].epoch.store(kIdle, std::memory_order_release);
    }

   private:
    friend class EpochDomain;
    Reader(EpochDomain *domain, size_t index) : domain_(domain), index_(index) {}
    void swap(Reader &other) noexcept {
      std::swap(domain_, other.domain_);
      std::swap(index_, other.index_);
      std::swap(depth_, other.depth_);
    }
    void release();

    EpochDomain *domain_ = nullptr;
    size_t index_ = 0;
    unsigned depth_ = 0;
  };

  // RAII bracket for one translation.
  class Guard {
   public:
    explicit Guard(Reader &reader) : reader_(reader) { reader_.enter(); }
    ~Guard() { reader_.exit(); }
    Guard(const Guard &) = delete;
    Guard &operator=(const Guard &) = delete;

   private:
    Reader &reader_;
  };

  EpochDomain() = default;
  EpochDomain(const EpochDomain &) = delete;
  EpochDomain &operator=(const EpochDomain &) = delete;

  // Claims a slot; nullopt when all kMaxReaders slots are taken. The domain must outlive it.
  std::optional<Reader> register_reader();

  // Starts a new epoch and returns once no reader is still inside an earlier one. Readers
  // that enter afterwards are not waited for. Safe to call from several threads.
  uint64_t synchronize();

  uint64_t current_epoch() const { return global_epoch_.load(std::memory_order_acquire); }
  size_t registered_readers() const;

 private:
  static constexpr uint64_t kIdle = 0;

  void store_load_barrier() {
#if defined(NESTOR_INVQ_TSAN)
    // Same guarantee through acq_rel RMWs on one shared location, which TSan understands:
    // whichever side's RMW comes second in its modification order sees the other's stores.
    // Contended, so only for sanitizer builds.
    tsan_barrier_.fetch_add(0, std::memory_order_acq_rel);
#else
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
  }

  struct alignas(64) Slot {
    std::atomic<uint64_t> epoch{kIdle};
    std::atomic<bool> claimed{false};
  };

  std::atomic<uint64_t> global_epoch_{1};
#if defined(NESTOR_INVQ_TSAN)
  std::atomic<uint64_t> tsan_barrier_{0};
#endif
  std::array<Slot, kMaxReaders> slots_{};
};

}  // namespace nestor::invq
