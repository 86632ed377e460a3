// Multi-producer submission with a worker, and epoch grace periods. Bounded, no sleeps.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "nestor/invq/epoch.h"
#include "nestor/invq/processor.h"

namespace nestor::invq {
namespace {

constexpr int kProducers = 4;
constexpr int kOpsPerProducer = 600;
constexpr int kOpsPerWait = 7;

// Every op is unique (did = producer, pasid = sequence), so coalescing can drop none of them.
InvalidationOp unique_op(int producer, int sequence) {
  InvalidationOp op;
  op.caches = kCacheIotlb;
  op.scope = Scope::kRange;
  op.did = static_cast<uint16_t>(producer);
  op.pasid = static_cast<uint32_t>(sequence);
  op.addr = 0;
  op.npages = 1;
  return op;
}

template <int kOps>
class FlagTargetOf : public InvalidationTarget {
 public:
  FlagTargetOf() {
    for (auto &row : applied) {
      for (auto &flag : row) flag.store(false, std::memory_order_relaxed);
    }
  }
  void apply(const InvalidationOp &op) override {
    applied[op.did][op.pasid].store(true, std::memory_order_release);
  }
  bool all_applied_before(int producer, int sequence) const {
    for (int i = 0; i < sequence; ++i) {
      if (!applied[producer][i].load(std::memory_order_acquire)) return false;
    }
    return true;
  }
  std::array<std::array<std::atomic<bool>, kOps>, kProducers> applied;
};
using FlagTarget = FlagTargetOf<kOpsPerProducer>;

// Runs body(p) for p in [0, kProducers) on threads that are held until all of them have
// started, so they overlap instead of running one after the other as they are created.
template <class Body>
void run_producers_together(Body body) {
  std::atomic<int> started{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      started.fetch_add(1);
      while (started.load() < kProducers) std::this_thread::yield();
      body(p);
    });
  }
  for (auto &t : producers) t.join();
}

// The fence tests run longer, for more overlap between fences and other threads' processing.
constexpr int kFenceOps = 3000;

TEST(ProcessorConcurrency, WaitCompletesAfterEveryEarlierOpOfItsProducer) {
  FlagTarget target;
  InvalidationProcessor processor(target);
  processor.start();
  std::atomic<int> violations{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kOpsPerProducer; ++i) {
        processor.submit(unique_op(p, i));
        if (i % kOpsPerWait != kOpsPerWait - 1) continue;
        const int submitted = i + 1;
        WaitOp wait;
        // Checked twice: at completion (processing thread) and after wait() returns.
        wait.callback = [&target, &violations, p, submitted] {
          if (!target.all_applied_before(p, submitted)) violations.fetch_add(1);
        };
        const WaitTicket ticket = processor.submit_wait(std::move(wait));
        ticket.wait();
        if (!target.all_applied_before(p, submitted)) violations.fetch_add(1);
      }
    });
  }
  for (auto &t : producers) t.join();
  processor.stop();
  EXPECT_EQ(violations.load(), 0);
  for (int p = 0; p < kProducers; ++p) EXPECT_TRUE(target.all_applied_before(p, kOpsPerProducer));
  const StatsSnapshot stats = processor.stats().snapshot();
  EXPECT_EQ(stats.ops_applied, uint64_t{kProducers} * kOpsPerProducer);
  EXPECT_EQ(stats.waits_completed, stats.waits_submitted);
}

// Queue order is made observable by recording it under a test lock around submission; the
// worker runs concurrently. Every op queued before a wait must be applied before it completes.
class LogTarget : public InvalidationTarget {
 public:
  void apply(const InvalidationOp &op) override {
    std::lock_guard lock(mutex);
    log.push_back(Event{false, op.did, op.pasid});
  }
  void wait_done(int wait_id) {
    std::lock_guard lock(mutex);
    log.push_back(Event{true, 0, static_cast<uint32_t>(wait_id)});
  }
  struct Event {
    bool is_wait;
    uint16_t did;
    uint32_t id;
  };
  std::mutex mutex;
  std::vector<Event> log;
};

TEST(ProcessorConcurrency, WaitCompletesAfterEveryOpBeforeItInQueueOrder) {
  LogTarget target;
  InvalidationProcessor processor(target);
  processor.start();
  std::mutex order_mutex;
  struct Queued {
    bool is_wait;
    uint16_t did;
    uint32_t id;
  };
  std::vector<Queued> order;
  std::atomic<int> next_wait_id{0};
  std::vector<WaitTicket> tickets;
  std::mutex tickets_mutex;
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kOpsPerProducer / 2; ++i) {
        {
          std::lock_guard lock(order_mutex);
          processor.submit(unique_op(p, i));
          order.push_back({false, static_cast<uint16_t>(p), static_cast<uint32_t>(i)});
        }
        if (i % 5 != 4) continue;
        const int id = next_wait_id.fetch_add(1);
        WaitOp wait;
        wait.callback = [&target, id] { target.wait_done(id); };
        std::lock_guard lock(order_mutex);
        WaitTicket ticket = processor.submit_wait(std::move(wait));
        order.push_back({true, 0, static_cast<uint32_t>(id)});
        std::lock_guard tickets_lock(tickets_mutex);
        tickets.push_back(ticket);
      }
    });
  }
  for (auto &t : producers) t.join();
  for (const WaitTicket &ticket : tickets) ticket.wait();
  processor.stop();

  // Position of each event in the processing log.
  std::vector<std::vector<size_t>> applied_at(kProducers,
                                              std::vector<size_t>(kOpsPerProducer, SIZE_MAX));
  std::vector<size_t> completed_at(static_cast<size_t>(next_wait_id.load()), SIZE_MAX);
  for (size_t pos = 0; pos < target.log.size(); ++pos) {
    const auto &e = target.log[pos];
    (e.is_wait ? completed_at[e.id] : applied_at[e.did][e.id]) = pos;
  }
  size_t latest_op_position = 0;
  bool any_op = false;
  int checked_waits = 0;
  for (const Queued &q : order) {
    if (!q.is_wait) {
      ASSERT_NE(applied_at[q.did][q.id], SIZE_MAX);
      latest_op_position =
          any_op ? std::max(latest_op_position, applied_at[q.did][q.id]) : applied_at[q.did][q.id];
      any_op = true;
      continue;
    }
    ASSERT_NE(completed_at[q.id], SIZE_MAX);
    EXPECT_GT(completed_at[q.id], latest_op_position) << "wait " << q.id;
    ++checked_waits;
  }
  EXPECT_GT(checked_waits, 100);
}

TEST(ProcessorConcurrency, ProducersProcessingThemselvesAlongsideWorker) {
  FlagTarget target;
  InvalidationProcessor processor(target);
  processor.start();
  std::atomic<int> violations{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kOpsPerProducer; ++i) {
        processor.submit(unique_op(p, i));
        if (i % 50 == 49) {
          processor.fence();
          if (!target.all_applied_before(p, i + 1)) violations.fetch_add(1);
        } else if (i % 13 == 0) {
          processor.process_pending();
        }
      }
    });
  }
  for (auto &t : producers) t.join();
  processor.stop();
  EXPECT_EQ(violations.load(), 0);
}

// fence() without a worker completes its wait on the calling thread, without queueing it. It
// must still order after everything queued before the call, by any producer: every op is
// applied and every queued wait (ticket) has completed when it returns. A controller starts and
// stops the worker meanwhile, so fences take both paths and race with the worker's start.
TEST(ProcessorConcurrency, FenceWithoutWorkerOrdersAfterEveryEarlierEntry) {
  struct SlowFlagTarget : FlagTargetOf<kFenceOps> {
    // Widens the window in which another thread's batch is half applied. Atomic so the
    // compiler keeps the loop; only the applying thread touches it (under the processor).
    void apply(const InvalidationOp &op) override {
      for (int i = 0; i < 200; ++i)
        busy.store(busy.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      FlagTargetOf<kFenceOps>::apply(op);
    }
    std::atomic<uint64_t> busy{0};
  } target;
  InvalidationProcessor processor(target);
  // submitted[p]: ops of producer p whose submit() has returned.
  std::array<std::atomic<int>, kProducers> submitted{};
  std::mutex tickets_mutex;
  std::vector<WaitTicket> tickets;  // in submission order
  std::atomic<int> stale_ops{0}, early_fences{0};
  std::atomic<bool> producing{true};
  std::thread controller([&] {
    for (int round = 0; producing.load(); ++round) {
      if (round % 2 == 0) {
        processor.start();
      } else {
        processor.stop();
      }
    }
  });
  run_producers_together([&](int p) {
    for (int i = 0; i < kFenceOps; ++i) {
      processor.submit(unique_op(p, i));
      submitted[p].store(i + 1, std::memory_order_release);
      if (i % 3 == 1) {
        WaitTicket ticket = processor.submit_wait(WaitOp{});
        std::lock_guard lock(tickets_mutex);
        tickets.push_back(std::move(ticket));
      }
      if (i % kOpsPerWait != kOpsPerWait - 1) continue;
      std::array<int, kProducers> before{};
      for (int q = 0; q < kProducers; ++q) before[q] = submitted[q].load(std::memory_order_acquire);
      size_t waits_before;
      {
        std::lock_guard lock(tickets_mutex);
        waits_before = tickets.size();
      }
      processor.fence();
      for (int q = 0; q < kProducers; ++q)
        if (!target.all_applied_before(q, before[q])) stale_ops.fetch_add(1);
      std::lock_guard lock(tickets_mutex);
      for (size_t w = 0; w < waits_before; ++w)
        if (!tickets[w].done()) early_fences.fetch_add(1);
    }
  });
  producing.store(false);
  controller.join();
  processor.stop();
  processor.process_pending();  // tickets queued after the last fence, with no worker
  EXPECT_EQ(stale_ops.load(), 0);
  EXPECT_EQ(early_fences.load(), 0);
  for (const WaitTicket &ticket : tickets) EXPECT_TRUE(ticket.done());
  const StatsSnapshot stats = processor.stats().snapshot();
  EXPECT_EQ(stats.ops_applied, uint64_t{kProducers} * kFenceOps);
  EXPECT_EQ(stats.waits_completed, stats.waits_submitted);
  EXPECT_EQ(stats.fences, uint64_t{kProducers} * (kFenceOps / kOpsPerWait));
}

// The same without a worker at all: every fence takes the in-place path.
TEST(ProcessorConcurrency, FenceInPlaceCompletesQueuedWaitsFirst) {
  FlagTargetOf<kFenceOps> target;
  InvalidationProcessor processor(target);
  std::atomic<int> out_of_order{0};
  run_producers_together([&](int p) {
    for (int i = 0; i < kFenceOps; ++i) {
      processor.submit(unique_op(p, i));
      const WaitTicket ticket = processor.submit_wait(WaitOp{});
      processor.fence();
      // This thread's wait was queued before its fence: the fence cannot have passed it.
      if (!ticket.done() || !target.all_applied_before(p, i + 1)) out_of_order.fetch_add(1);
    }
  });
  EXPECT_EQ(out_of_order.load(), 0);
  const StatsSnapshot stats = processor.stats().snapshot();
  EXPECT_EQ(stats.waits_completed, stats.waits_submitted);
  EXPECT_EQ(stats.waits_completed, 2 * uint64_t{kProducers} * kFenceOps);
}

// --- epochs -----------------------------------------------------------------------------

TEST(EpochDomain, SynchronizeWaitsForReaderThatEnteredBefore) {
  EpochDomain domain;
  std::atomic<bool> reader_inside{false};
  std::atomic<bool> sync_returned{false};
  std::atomic<bool> returned_while_inside{false};
  const uint64_t start_epoch = domain.current_epoch();

  std::thread reader([&] {
    auto handle = domain.register_reader();
    ASSERT_TRUE(handle.has_value());
    handle->enter();
    reader_inside.store(true);
    // Wait until the synchronizer has started its grace period, then stay inside a while.
    while (domain.current_epoch() == start_epoch) std::this_thread::yield();
    for (int i = 0; i < 2000; ++i) {
      if (sync_returned.load()) returned_while_inside.store(true);
      std::this_thread::yield();
    }
    if (sync_returned.load()) returned_while_inside.store(true);
    handle->exit();
  });
  while (!reader_inside.load()) std::this_thread::yield();
  std::thread synchronizer([&] {
    domain.synchronize();
    sync_returned.store(true);
  });
  synchronizer.join();
  reader.join();
  EXPECT_TRUE(sync_returned.load());
  EXPECT_FALSE(returned_while_inside.load());
}

TEST(EpochDomain, LaterReadersDoNotHoldUpAGracePeriod) {
  EpochDomain domain;
  auto old_reader = domain.register_reader();
  auto new_reader = domain.register_reader();
  ASSERT_TRUE(old_reader && new_reader);
  old_reader->enter();
  const uint64_t start_epoch = domain.current_epoch();
  std::atomic<bool> done{false};
  std::thread synchronizer([&] {
    domain.synchronize();
    done.store(true);
  });
  while (domain.current_epoch() == start_epoch) std::this_thread::yield();
  new_reader->enter();  // entered after the bump: must not be waited for
  EXPECT_FALSE(done.load());
  old_reader->exit();
  synchronizer.join();
  EXPECT_TRUE(done.load());
  new_reader->exit();
}

TEST(EpochDomain, RetiredDataIsNeverSeenByAReader) {
  // Classic grace-period check: a writer publishes a new slot, waits a grace period, then
  // retires the old one. A reader inside must never find its slot retired.
  constexpr int kSlots = 64;
  constexpr int kPublications = 1500;
  EpochDomain domain;
  std::array<std::atomic<bool>, kSlots> alive;
  for (auto &a : alive) a.store(false);
  alive[0].store(true);
  std::atomic<int> current{0};
  std::atomic<bool> stop{false};
  std::atomic<int> stale_reads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      auto handle = domain.register_reader();
      ASSERT_TRUE(handle.has_value());
      while (!stop.load(std::memory_order_relaxed)) {
        EpochDomain::Guard guard(*handle);
        const int slot = current.load(std::memory_order_acquire);
        for (int i = 0; i < 8; ++i) {
          if (!alive[slot].load(std::memory_order_acquire)) stale_reads.fetch_add(1);
        }
      }
    });
  }
  for (int n = 1; n <= kPublications; ++n) {
    const int old_slot = current.load();
    const int new_slot = n % kSlots;
    alive[new_slot].store(true, std::memory_order_release);
    current.store(new_slot, std::memory_order_release);
    domain.synchronize();
    alive[old_slot].store(false, std::memory_order_release);
  }
  stop.store(true);
  for (auto &t : readers) t.join();
  EXPECT_EQ(stale_reads.load(), 0);
}

TEST(EpochDomain, SlotsAreBoundedAndReusable) {
  EpochDomain domain;
  std::vector<EpochDomain::Reader> readers;
  for (size_t i = 0; i < EpochDomain::kMaxReaders; ++i) {
    auto reader = domain.register_reader();
    ASSERT_TRUE(reader.has_value());
    readers.push_back(std::move(*reader));
  }
  EXPECT_EQ(domain.registered_readers(), EpochDomain::kMaxReaders);
  EXPECT_FALSE(domain.register_reader().has_value());
  readers.pop_back();
  EXPECT_TRUE(domain.register_reader().has_value());
}

TEST(EpochDomain, DrainThroughProcessorWaitsForReaders) {
  EpochDomain domain;
  struct DrainTarget : InvalidationTarget {
    explicit DrainTarget(EpochDomain &d) : epochs(d) {}
    void apply(const InvalidationOp &) override {}
    void drain() override { epochs.synchronize(); }
    EpochDomain &epochs;
  } target(domain);
  ProcessorOptions options;
  options.drain = true;
  InvalidationProcessor processor(target, nullptr, options);
  processor.start();
  auto reader = domain.register_reader();
  ASSERT_TRUE(reader.has_value());
  reader->enter();
  const uint64_t start_epoch = domain.current_epoch();
  processor.submit(unique_op(0, 0));
  const WaitTicket ticket = processor.submit_wait(WaitOp{});
  while (domain.current_epoch() == start_epoch) std::this_thread::yield();  // drain started
  for (int i = 0; i < 500; ++i) {
    EXPECT_FALSE(ticket.done());
    std::this_thread::yield();
  }
  reader->exit();
  ticket.wait();
  processor.stop();
  EXPECT_EQ(processor.stats().snapshot().drains, 1u);
}

}  // namespace
}  // namespace nestor::invq
