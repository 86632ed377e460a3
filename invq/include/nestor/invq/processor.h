// Multi-producer submission of ops and waits; batches run from one wait to the next on the
// caller of process_pending() (the emulator's tail-write path) or on a background worker.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "nestor/invq/batch.h"
#include "nestor/invq/op.h"
#include "nestor/invq/stats.h"
#include "nestor/invq/target.h"

namespace nestor::invq {

// Entries (ops + waits) the processor holds before a submitter must wait or help.
inline constexpr size_t kDefaultMaxPending = 65536;

struct ProcessorOptions {
  CoalesceOptions coalesce;
  // Call target.drain() before completing a wait that follows applied ops.
  bool drain = false;
  // Most entries queued and not yet taken for processing. At the limit a submitter processes
  // the queue itself (no worker: applying early is always allowed) or waits until the worker
  // has taken it: a producer faster than the caches can never grow the queue without bound.
  size_t max_pending = kDefaultMaxPending;
};

namespace detail {
struct WaitState {
  WaitOp op;
  std::chrono::steady_clock::time_point submitted;
  mutable std::mutex mutex;
  mutable std::condition_variable completed;
  bool done = false;
  bool status_ok = true;
};
struct Entry {
  InvalidationOp op;
  std::shared_ptr<WaitState> wait;  // non-null: this entry is a wait
};
}  // namespace detail

// Handle on a submitted wait; copyable, outlives the processor's interest in it.
class WaitTicket {
 public:
  WaitTicket() = default;
  bool valid() const { return state_ != nullptr; }
  bool done() const;
  // Blocks until the wait completed, i.e. every op submitted before it was applied.
  void wait() const;
  // False if a requested status write failed (unbacked address or no writer).
  bool status_ok() const;

 private:
  friend class InvalidationProcessor;
  friend class Submission;
  explicit WaitTicket(std::shared_ptr<detail::WaitState> state) : state_(std::move(state)) {}
  std::shared_ptr<detail::WaitState> state_;
};

// Ops and waits staged by one producer, without locks, and handed to the processor in one
// piece: a tail write that brings 511 descriptors takes the submission lock once, not 511
// times. Reusable: InvalidationProcessor::submit(Submission &) empties it and keeps its storage.
class Submission {
 public:
  void add(const InvalidationOp &op) { entries_.push_back(detail::Entry{op, nullptr}); }
  WaitTicket add_wait(WaitOp wait);
  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }

 private:
  friend class InvalidationProcessor;
  std::vector<detail::Entry> entries_;
};

class InvalidationProcessor {
 public:
  InvalidationProcessor(InvalidationTarget &target, StatusWriter *status_writer = nullptr,
                        ProcessorOptions options = {});
  ~InvalidationProcessor();
  InvalidationProcessor(const InvalidationProcessor &) = delete;
  InvalidationProcessor &operator=(const InvalidationProcessor &) = delete;

  // Thread-safe. Queue order is the order in which these calls take the submission lock.
  // Either may block (worker running) or process the queue (no worker) once
  // options.max_pending entries are pending.
  void submit(const InvalidationOp &op);
  WaitTicket submit_wait(WaitOp wait);
  // Queues the staged entries in their order, as one sequence no other submitter's entries
  // interleave with unless back-pressure splits it (then in order, in pieces of at most
  // options.max_pending), and empties `staged`.
  void submit(Submission &staged);

  // Processes everything submitted so far on the calling thread and returns the number of
  // entries (ops + waits) handled. Serialised with the worker. Must not be called from a
  // wait callback or from the target.
  size_t process_pending();

  // Returns once every entry submitted before the call was processed and a wait after them
  // completed (counted as a submitted and completed fence). With a worker running that wait is
  // queued for the worker; without one the calling thread processes the queue and completes
  // the wait itself, in its place after what it took.
  void fence();

  void start();  // background worker; idempotent
  void stop();   // processes what is pending, then joins; idempotent
  // True from start() until stop() begins. A lock-free read: every wait without a worker
  // asks it.
  bool running() const { return worker_active_.load(std::memory_order_acquire); }

  const Stats &stats() const { return stats_; }

 private:
  using Entry = detail::Entry;

  // `ops` and `waits` are what `entries` hold, counted under the submission lock.
  // `whole`: the vector `entries` spans, which may be swapped in whole when the queue is empty.
  void enqueue(std::span<Entry> entries, uint64_t ops, uint64_t waits,
               std::vector<Entry> *whole = nullptr);
  void worker_loop();
  // Takes everything pending and processes it; the caller holds process_mutex_.
  // `fence_waits` (0 or 1) is a wait the caller completes itself right after.
  size_t process_taken(uint64_t fence_waits);
  void run_batch();
  void complete_wait(detail::WaitState &wait);
  // Drain, status write, callback and counters of a wait whose ops were applied; false if its
  // status write failed.
  bool finish_wait(const WaitOp &wait, std::chrono::steady_clock::time_point submitted);

  InvalidationTarget &target_;
  StatusWriter *status_writer_;
  ProcessorOptions options_;
  Stats stats_;

  mutable std::mutex submit_mutex_;
  std::condition_variable work_available_;
  std::condition_variable space_available_;  // pending_ was emptied, or the worker stops
  std::vector<Entry> pending_;
  bool stopping_ = false;
  bool worker_running_ = false;
  // worker_running_ && !stopping_, written under submit_mutex_, read without it.
  std::atomic<bool> worker_active_{false};
  std::thread worker_;

  // Held while processing; owns everything below.
  std::mutex process_mutex_;
  static constexpr size_t kKeptEntries = 64;  // reserved in pending_ and taken_
  std::vector<Entry> taken_;  // what process_pending() took from pending_; empty between calls
  Batch batch_;
  // run_batch's output. Like batch_'s, its storage stays at the largest batch so far (at most
  // about max_pending ops), so a batch allocates only when it is the largest yet.
  std::vector<InvalidationOp> coalesced_;
  bool undrained_ops_ = false;
};

}  // namespace nestor::invq
