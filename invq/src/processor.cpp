#include "nestor/invq/processor.h"

#include <algorithm>

namespace nestor::invq {

bool WaitTicket::done() const {
  if (!state_) return false;
  std::lock_guard lock(state_->mutex);
  return state_->done;
}

void WaitTicket::wait() const {
  if (!state_) return;
  std::unique_lock lock(state_->mutex);
  state_->completed.wait(lock, [&] { return state_->done; });
}

bool WaitTicket::status_ok() const {
  if (!state_) return false;
  std::lock_guard lock(state_->mutex);
  return state_->status_ok;
}

InvalidationProcessor::InvalidationProcessor(InvalidationTarget &target,
                                             StatusWriter *status_writer, ProcessorOptions options)
    : target_(target), status_writer_(status_writer), options_(options) {
  pending_.reserve(kKeptEntries);
  taken_.reserve(kKeptEntries);
  coalesced_.reserve(kKeptEntries);
}

InvalidationProcessor::~InvalidationProcessor() {
  stop();
  // Nobody may be left blocked on a wait that was submitted but never processed.
  process_pending();
}

void InvalidationProcessor::submit(const InvalidationOp &op) {
  Entry entry{op, nullptr};
  enqueue(std::span<Entry>(&entry, 1), 1, 0);
}

void InvalidationProcessor::enqueue(std::span<Entry> entries, uint64_t ops, uint64_t waits,
                                    std::vector<Entry> *whole) {
  const size_t limit = options_.max_pending ? options_.max_pending : 1;
  while (!entries.empty()) {
    bool process_here;
    bool worker;
    {
      std::unique_lock lock(submit_mutex_);
      // With a worker, push back on the producer (as a full hardware queue does) rather than
      // buffer without limit.
      space_available_.wait(
          lock, [&] { return pending_.size() < limit || !worker_running_ || stopping_; });
      const size_t room = pending_.size() < limit ? limit - pending_.size() : 1;
      const size_t n = std::min(room, entries.size());
      if (whole && pending_.empty() && n == whole->size()) {
        // A tail write's whole staging vector, into an empty queue: its storage becomes the
        // queue (and the queue's, empty, the stager's), instead of 511 entries moved one by one.
        pending_.swap(*whole);
      } else {
        for (size_t i = 0; i < n; ++i) pending_.push_back(std::move(entries[i]));
      }
      entries = entries.subspan(n);
      stats_.count_ops_submitted(ops);
      stats_.count_waits_submitted(waits);
      ops = waits = 0;
      stats_.count_pending(pending_.size());
      process_here = (!worker_running_ || stopping_) && pending_.size() >= limit;
      worker = worker_running_;
    }
    // Only a worker sleeps on work_available_, and it checks pending_ before it sleeps.
    if (worker) work_available_.notify_one();
    if (process_here) process_pending();
  }
}

namespace {
std::shared_ptr<detail::WaitState> new_wait_state(WaitOp wait) {
  auto state = std::make_shared<detail::WaitState>();
  state->op = std::move(wait);
  state->submitted = std::chrono::steady_clock::now();
  return state;
}
}  // namespace

WaitTicket Submission::add_wait(WaitOp wait) {
  std::shared_ptr<detail::WaitState> state = new_wait_state(std::move(wait));
  entries_.push_back(detail::Entry{InvalidationOp{}, state});
  return WaitTicket(std::move(state));
}

WaitTicket InvalidationProcessor::submit_wait(WaitOp wait) {
  std::shared_ptr<detail::WaitState> state = new_wait_state(std::move(wait));
  Entry entry{InvalidationOp{}, state};
  enqueue(std::span<Entry>(&entry, 1), 0, 1);
  return WaitTicket(std::move(state));
}

void InvalidationProcessor::submit(Submission &staged) {
  size_t waits = 0;
  for (const Entry &e : staged.entries_) waits += e.wait != nullptr;
  enqueue(std::span<Entry>(staged.entries_), staged.entries_.size() - waits, waits,
          &staged.entries_);
  staged.entries_.clear();
}

size_t InvalidationProcessor::process_pending() {
  std::lock_guard processing(process_mutex_);
  return process_taken(0);
}

size_t InvalidationProcessor::process_taken(uint64_t fence_waits) {
  bool worker;
  {
    std::lock_guard lock(submit_mutex_);
    taken_.swap(pending_);
    stats_.count_waits_submitted(fence_waits);
    worker = worker_running_;
  }
  // Submitters wait for space only while a worker runs, and stop() wakes them when it stops.
  if (worker) space_available_.notify_all();
  for (Entry &entry : taken_) {
    if (!entry.wait) {
      batch_.add(entry.op);
      continue;
    }
    run_batch();
    complete_wait(*entry.wait);
  }
  // Ops not yet followed by a wait are applied now rather than held back: applying early is
  // always allowed, and it keeps the caches from serving them any longer than necessary.
  run_batch();
  const size_t handled = taken_.size();
  // Storage is kept for the next call: every wait comes through here, and a fresh queue per
  // call was most of a wait's cost. What a burst grew goes back to the reserved size, so the
  // two vectors never hold more than that between bursts and every allocation made here is
  // paired with a free (the fuzzers' leak heuristic counts them).
  taken_.clear();
  if (taken_.capacity() > kKeptEntries) {
    std::vector<Entry> small;
    small.reserve(kKeptEntries);
    taken_.swap(small);
  }
  return handled;
}

void InvalidationProcessor::run_batch() {
  if (batch_.empty()) return;
  CoalesceCounters counters;
  batch_.coalesce_into(options_.coalesce, &counters, coalesced_);
  target_.apply_batch(coalesced_);
  stats_.count_batch(counters.input_ops, counters.output_ops, counters.promotions);
  undrained_ops_ = true;
  batch_.clear();
}

bool InvalidationProcessor::finish_wait(const WaitOp &wait,
                                        std::chrono::steady_clock::time_point submitted) {
  if (options_.drain && undrained_ops_) {
    target_.drain();
    stats_.count_drain();
  }
  undrained_ops_ = false;
  bool status_ok = true;
  if (wait.status_write) {
    status_ok = status_writer_ != nullptr &&
                status_writer_->write_status(wait.status_addr, wait.status_data);
    if (!status_ok) stats_.count_error();
  }
  if (wait.callback) wait.callback();
  const auto latency = std::chrono::steady_clock::now() - submitted;
  stats_.count_wait_completed(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(latency).count()),
      wait.interrupt, wait.fence);
  return status_ok;
}

void InvalidationProcessor::complete_wait(detail::WaitState &wait) {
  const bool status_ok = finish_wait(wait.op, wait.submitted);
  {
    std::lock_guard lock(wait.mutex);
    wait.done = true;
    wait.status_ok = status_ok;
  }
  wait.completed.notify_all();
}

void InvalidationProcessor::fence() {
  WaitOp wait;
  wait.fence = true;
  if (running()) {
    submit_wait(std::move(wait)).wait();
    return;
  }
  // Without a worker this thread would queue the wait and then process it itself, so it
  // completes it in place: nothing to allocate, lock or signal for it. Its queue position is
  // where process_taken() takes pending_: every entry queued before that is processed first
  // (an earlier taker finished under process_mutex_ before we got it), and every later one
  // after, by whoever holds process_mutex_ next. If a worker starts meanwhile it waits for
  // process_mutex_ like any other processor.
  const auto submitted = std::chrono::steady_clock::now();
  std::lock_guard processing(process_mutex_);
  process_taken(1);
  finish_wait(wait, submitted);
}

void InvalidationProcessor::start() {
  std::lock_guard lock(submit_mutex_);
  if (worker_running_) return;
  stopping_ = false;
  worker_running_ = true;
  worker_active_.store(true, std::memory_order_release);
  worker_ = std::thread([this] { worker_loop(); });
}

void InvalidationProcessor::stop() {
  std::thread worker;
  {
    std::lock_guard lock(submit_mutex_);
    if (!worker_running_ || stopping_) return;  // not running, or another stop() joins it
    stopping_ = true;
    worker_active_.store(false, std::memory_order_release);
    worker = std::move(worker_);
  }
  work_available_.notify_all();
  space_available_.notify_all();  // blocked submitters process the queue themselves now
  worker.join();
  std::lock_guard lock(submit_mutex_);
  worker_running_ = false;
}

void InvalidationProcessor::worker_loop() {
  for (;;) {
    {
      std::unique_lock lock(submit_mutex_);
      work_available_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (stopping_ && pending_.empty()) return;
    }
    process_pending();
  }
}

}  // namespace nestor::invq
