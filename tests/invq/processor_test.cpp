// Processor: batching between waits, ordering, drain, status writes, callbacks, stats.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "nestor/invq/processor.h"
#include "nestor/vtd/queue.h"

namespace nestor::invq {
namespace {

// Records every apply/drain/status event in one timeline so ordering can be checked.
class Timeline : public InvalidationTarget, public StatusWriter {
 public:
  void apply(const InvalidationOp &op) override {
    events.push_back("apply:" + std::to_string(op.did));
  }
  void drain() override { events.push_back("drain"); }
  bool write_status(uint64_t pa, uint32_t data) override {
    if (pa == kUnbacked) return false;
    events.push_back("status:" + std::to_string(data));
    return true;
  }
  static constexpr uint64_t kUnbacked = 0xBAD0;
  std::vector<std::string> events;
};

InvalidationOp domain(uint16_t did) {
  InvalidationOp op;
  op.caches = kCacheIotlb;
  op.scope = Scope::kDomain;
  op.did = did;
  return op;
}

WaitOp status_wait(uint32_t data, uint64_t pa = 0x1000) {
  WaitOp wait;
  wait.status_write = true;
  wait.status_addr = pa;
  wait.status_data = data;
  return wait;
}

TEST(Processor, NothingHappensBeforeProcessing) {
  Timeline timeline;
  InvalidationProcessor processor(timeline, &timeline);
  processor.submit(domain(1));
  const WaitTicket ticket = processor.submit_wait(status_wait(7));
  EXPECT_TRUE(timeline.events.empty());
  EXPECT_FALSE(ticket.done());
  EXPECT_EQ(processor.process_pending(), 2u);
  EXPECT_TRUE(ticket.done());
  EXPECT_TRUE(ticket.status_ok());
  EXPECT_EQ(timeline.events, (std::vector<std::string>{"apply:1", "status:7"}));
}

TEST(Processor, BatchesRunFromWaitToWaitWithDrain) {
  Timeline timeline;
  ProcessorOptions options;
  options.drain = true;
  InvalidationProcessor processor(timeline, &timeline, options);
  processor.submit(domain(1));
  processor.submit(domain(1));  // coalesced away
  processor.submit(domain(2));
  processor.submit_wait(status_wait(10));
  processor.submit_wait(status_wait(11));  // nothing new applied: no second drain
  processor.submit(domain(3));
  processor.submit_wait(status_wait(12));
  processor.process_pending();
  EXPECT_EQ(timeline.events,
            (std::vector<std::string>{"apply:1", "apply:2", "drain", "status:10", "status:11",
                                      "apply:3", "drain", "status:12"}));
  const StatsSnapshot stats = processor.stats().snapshot();
  EXPECT_EQ(stats.batches, 2u);
  EXPECT_EQ(stats.batch_ops_sum, 4u);
  EXPECT_EQ(stats.batch_ops_max, 3u);
  EXPECT_EQ(stats.coalesced_away, 1u);
  EXPECT_EQ(stats.ops_applied, 3u);
  EXPECT_EQ(stats.waits_completed, 3u);
  EXPECT_EQ(stats.drains, 2u);
}

TEST(Processor, TrailingOpsWithoutWaitAreAppliedAndDrainedBeforeTheNextWait) {
  Timeline timeline;
  ProcessorOptions options;
  options.drain = true;
  InvalidationProcessor processor(timeline, &timeline, options);
  processor.submit(domain(4));
  processor.process_pending();
  EXPECT_EQ(timeline.events, (std::vector<std::string>{"apply:4"}));
  processor.submit_wait(status_wait(1));
  processor.process_pending();
  EXPECT_EQ(timeline.events, (std::vector<std::string>{"apply:4", "drain", "status:1"}));
}

TEST(Processor, CallbackInterruptFenceAndFailedStatusWrite) {
  Timeline timeline;
  InvalidationProcessor processor(timeline, &timeline);
  int callbacks = 0;
  WaitOp wait = status_wait(5, Timeline::kUnbacked);
  wait.interrupt = true;
  wait.fence = true;
  wait.callback = [&] { ++callbacks; };
  const WaitTicket ticket = processor.submit_wait(std::move(wait));
  processor.process_pending();
  EXPECT_TRUE(ticket.done());
  EXPECT_FALSE(ticket.status_ok());
  EXPECT_EQ(callbacks, 1);
  const StatsSnapshot stats = processor.stats().snapshot();
  EXPECT_EQ(stats.interrupts, 1u);
  EXPECT_EQ(stats.fences, 1u);
  EXPECT_EQ(stats.errors, 1u);
}

TEST(Processor, FenceProcessesSynchronouslyWithoutWorker) {
  Timeline timeline;
  InvalidationProcessor processor(timeline, &timeline);
  processor.submit(domain(8));
  processor.fence();
  EXPECT_EQ(timeline.events, (std::vector<std::string>{"apply:8"}));
}

TEST(Processor, WorkerProcessesAndTicketWaitBlocksUntilDone) {
  Timeline timeline;
  InvalidationProcessor processor(timeline, &timeline);
  processor.start();
  EXPECT_TRUE(processor.running());
  processor.submit(domain(3));
  const WaitTicket ticket = processor.submit_wait(status_wait(9));
  ticket.wait();
  EXPECT_TRUE(ticket.done());
  processor.stop();
  EXPECT_FALSE(processor.running());
  EXPECT_EQ(timeline.events, (std::vector<std::string>{"apply:3", "status:9"}));
}

// A Submission is what a tail write hands over: its entries must reach the caches in their
// order, with batches still cut at its waits, even when back-pressure (max_pending 3, far below
// its 13 entries) splits it across several trips through the queue, with a worker and without.
TEST(Processor, SubmissionKeepsOrderAndWaitsAcrossBackPressure) {
  for (const bool worker : {false, true}) {
    Timeline timeline;
    ProcessorOptions options;
    options.max_pending = 3;
    InvalidationProcessor processor(timeline, &timeline, options);
    if (worker) processor.start();
    Submission staged;
    std::vector<WaitTicket> tickets;
    std::vector<std::string> expected;
    for (uint16_t did = 1; did <= 10; ++did) {
      staged.add(domain(did));
      expected.push_back("apply:" + std::to_string(did));
      if (did % 4 == 0) {
        tickets.push_back(staged.add_wait(status_wait(100 + did)));
        expected.push_back("status:" + std::to_string(100 + did));
      }
    }
    tickets.push_back(staged.add_wait(status_wait(999)));
    expected.push_back("status:999");
    ASSERT_EQ(staged.size(), 13u);
    processor.submit(staged);
    EXPECT_TRUE(staged.empty());
    if (!worker) processor.process_pending();
    for (const WaitTicket &t : tickets) t.wait();
    processor.stop();
    EXPECT_EQ(timeline.events, expected) << (worker ? "worker" : "no worker");
    const StatsSnapshot stats = processor.stats().snapshot();
    EXPECT_EQ(stats.ops_submitted, 10u);
    EXPECT_EQ(stats.waits_submitted, 3u);
    EXPECT_EQ(stats.waits_completed, 3u);
    EXPECT_LE(stats.pending_max, 3u);
  }
}

TEST(Processor, QueueFeedsProcessorInOrder) {
  // The emulator path: IQT write -> decode -> submit -> process on the same thread.
  std::map<uint64_t, uint64_t> memory;
  const uint64_t base = 0x40000;
  memory[base] = 0x2 | (2u << 4) | (uint64_t{21} << 16);  // IOTLB domain 21
  memory[base + 8] = 0;
  memory[base + 16] = 0x5 | (1u << 5) | (uint64_t{0x77} << 32);  // wait, SW, data 0x77
  memory[base + 24] = 0x9000;
  auto fetch = [&](uint64_t pa, void *buf, size_t len) {
    for (size_t off = 0; off < len; off += 8) {
      auto it = memory.find(pa + off);
      if (it == memory.end()) return false;
      std::memcpy(static_cast<char *>(buf) + off, &it->second, 8);
    }
    return true;
  };
  Timeline timeline;
  InvalidationProcessor processor(timeline, &timeline);
  InvalidationQueue queue;
  queue.write_iqa(base);
  auto sink = [&](const DecodedDescriptor &d) {
    if (d.kind == DecodedKind::kOp) processor.submit(d.op);
    if (d.kind == DecodedKind::kWait) processor.submit_wait(d.wait);
  };
  ASSERT_TRUE(queue.write_tail(2, fetch, sink));
  processor.process_pending();
  EXPECT_EQ(timeline.events, (std::vector<std::string>{"apply:21", "status:119"}));
}

}  // namespace
}  // namespace nestor::invq
