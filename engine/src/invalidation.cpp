// Engine wiring of invq: processor target (caches), status writer (machine memory), the VT-d
// front end, and drain (translations announce themselves in an EpochDomain).
#include "nestor/invalidation.h"

#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "nestor/engine.h"

namespace nestor {

namespace {

// Serial numbers identify drain states in thread-local caches. Unlike addresses they are
// never reused, so a cache entry of a destroyed engine can never match a new one.
std::atomic<uint64_t> g_next_drain_serial{1};

invq::ProcessorOptions processor_options(const EngineConfig &cfg) {
  invq::ProcessorOptions options;
  options.coalesce.enabled = cfg.coalesce;
  options.coalesce.promote_threshold_pages = cfg.promote_threshold_pages;
  options.drain = cfg.drain;
  return options;
}

}  // namespace

struct EngineInvalidation::DrainState {
  const uint64_t serial = g_next_drain_serial.fetch_add(1, std::memory_order_relaxed);
  invq::EpochDomain domain;
  // Threads beyond EpochDomain::kMaxReaders count themselves here instead: correct, but a
  // drain then waits for a moment with none of them inside, which may take longer.
  std::atomic<uint64_t> overflow_inside{0};
  std::mutex mutex;
  // Readers are owned here, not by the threads, so they die with the domain (after it in
  // declaration order: destroyed first) and never outlive it. Keyed by the owning thread's
  // bookkeeping object.
  std::unordered_map<const void *, std::unique_ptr<invq::EpochDomain::Reader>> readers;

  // Null when every slot is taken (the caller falls back to overflow_inside).
  invq::EpochDomain::Reader *register_thread(const void *thread_key) {
    std::lock_guard lock(mutex);
    auto it = readers.find(thread_key);
    if (it != readers.end()) return it->second.get();
    std::optional<invq::EpochDomain::Reader> reader = domain.register_reader();
    if (!reader) return nullptr;
    auto owned = std::make_unique<invq::EpochDomain::Reader>(std::move(*reader));
    invq::EpochDomain::Reader *raw = owned.get();
    readers.emplace(thread_key, std::move(owned));
    return raw;
  }

  void release_thread(const void *thread_key) {
    std::lock_guard lock(mutex);
    readers.erase(thread_key);  // frees the slot for other threads
  }

  void synchronize() {
    domain.synchronize();
    // seq_cst pairs with the seq_cst increment in TranslationGuard: a translation this load
    // misses started after the removals and so cannot see what they removed.
    while (overflow_inside.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
  }
};

namespace {

// A thread's readers, one per engine it translated on. On thread exit the slots go back to
// engines that still exist (the weak pointer says which do).
struct ThreadReaders {
  struct Entry {
    uint64_t serial;
    std::weak_ptr<EngineInvalidation::DrainState> state;
    invq::EpochDomain::Reader *reader;
  };
  std::vector<Entry> entries;
  // One-entry cache for the common case of a thread serving a single engine.
  uint64_t last_serial = 0;
  invq::EpochDomain::Reader *last_reader = nullptr;

  ~ThreadReaders() {
    for (Entry &entry : entries)
      if (std::shared_ptr<EngineInvalidation::DrainState> state = entry.state.lock())
        state->release_thread(this);
  }
};

thread_local ThreadReaders t_readers;

}  // namespace

EngineInvalidation::TranslationGuard::TranslationGuard(EngineInvalidation &inv)
    : state_(inv.drain_state_.get()), reader_(nullptr) {
  ThreadReaders &mine = t_readers;
  if (mine.last_serial == state_->serial && mine.last_reader != nullptr) {
    reader_ = mine.last_reader;
  } else {
    for (const ThreadReaders::Entry &entry : mine.entries)
      if (entry.serial == state_->serial) reader_ = entry.reader;
    if (reader_ == nullptr) {
      // First translation of this thread on this engine: forget engines that are gone, then
      // claim a slot.
      std::erase_if(mine.entries, [](const ThreadReaders::Entry &e) { return e.state.expired(); });
      reader_ = state_->register_thread(&mine);
      if (reader_ != nullptr) mine.entries.push_back({state_->serial, inv.drain_state_, reader_});
    }
    if (reader_ != nullptr) {
      mine.last_serial = state_->serial;
      mine.last_reader = reader_;
    }
  }
  if (reader_ != nullptr) {
    reader_->enter();
  } else {
    state_->overflow_inside.fetch_add(1, std::memory_order_seq_cst);
  }
}

EngineInvalidation::TranslationGuard::~TranslationGuard() {
  if (reader_ != nullptr) {
    reader_->exit();
  } else {
    state_->overflow_inside.fetch_sub(1, std::memory_order_release);
  }
}

EngineInvalidation::EngineInvalidation(Engine &engine, const EngineConfig &cfg)
    : EngineInvalidation(engine.memory(), CacheTarget::of(engine.core_.caches()), cfg) {
  set_event_hooks(&engine.event_hooks());
}

EngineInvalidation::EngineInvalidation(MachineMemory &mem, CacheTarget caches,
                                       const EngineConfig &cfg)
    : mem_(mem),
      caches_(caches),
      drain_enabled_(cfg.drain),
      drain_state_(std::make_shared<DrainState>()),
      processor_(*this, this, processor_options(cfg)),
      front_end_(mem, processor_, cfg.host_address_width) {
  if (cfg.background_invalidation) processor_.start();
}

// The processor member's destructor stops the worker and completes what is pending while the
// engine's caches still exist (Engine destroys this object before its caches).
EngineInvalidation::~EngineInvalidation() = default;

invq::EpochDomain &EngineInvalidation::epoch() {
  return drain_state_->domain;
}

void EngineInvalidation::apply(const invq::InvalidationOp &op) {
  caches_.apply(caches_.caches, op);
}

void EngineInvalidation::apply_batch(std::span<const invq::InvalidationOp> ops) {
  caches_.apply_batch(caches_.caches, ops);
}

void EngineInvalidation::drain() {
  if (drain_enabled_) drain_state_->synchronize();
}

bool EngineInvalidation::write_status(uint64_t pa, uint32_t data) {
  // Little-endian host, like the architectural layout: the 32-bit value lands as the device
  // would write it.
  return mem_.write(pa, &data, sizeof data) == 0;
}

void EngineInvalidation::submit(const invq::InvalidationOp &op) {
  processor_.submit(op);
}

void EngineInvalidation::wait() {
  processor_.fence();
  // Engine::invalidate() applies directly, bypassing the processor, which therefore does not
  // know that a drain is owed; one extra grace period covers those ops.
  drain();
}

void EngineInvalidation::reset() {
  // A fence, not process_pending(): ops not yet followed by a wait may sit in the batch.
  processor_.fence();
  front_end_.reset();
}

invq::StatsSnapshot EngineInvalidation::stats() const {
  invq::StatsSnapshot out = processor_.stats().snapshot();
  const invq::StatsSnapshot q = front_end_.queue().stats().snapshot();
  out.descriptors_by_type = q.descriptors_by_type;
  out.errors += q.errors;
  return out;
}

// --- Engine members that belong to the invalidation wiring ---------------------------------

void Engine::invalidate(const invq::InvalidationOp &op) {
  core_.caches().apply(op);
}

void Engine::invalidate_batch(std::span<const invq::InvalidationOp> ops) {
  core_.caches().apply_batch(ops);
}

void Engine::invalidate_wait() {
  inv_->wait();
}

}  // namespace nestor
