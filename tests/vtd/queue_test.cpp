// Queue-register emulation: head/tail movement, wrap-around, error stop and resume.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <vector>

#include "nestor/vtd/queue.h"

namespace nestor::invq {
namespace {

// Sparse machine memory holding descriptors; unbacked addresses fail to fetch.
class FakeMemory {
 public:
  void put(uint64_t pa, uint64_t qw0, uint64_t qw1) {
    words_[pa] = qw0;
    words_[pa + 8] = qw1;
  }
  void put256(uint64_t pa, uint64_t qw0, uint64_t qw1, uint64_t qw2, uint64_t qw3) {
    put(pa, qw0, qw1);
    put(pa + 16, qw2, qw3);
  }
  void remove(uint64_t pa) { words_.erase(pa); }
  bool fetch(uint64_t pa, void *buf, size_t len) const {
    for (size_t off = 0; off < len; off += 8) {
      auto it = words_.find(pa + off);
      if (it == words_.end()) return false;
      std::memcpy(static_cast<char *>(buf) + off, &it->second, 8);
    }
    return true;
  }

 private:
  std::map<uint64_t, uint64_t> words_;
};

struct Recorder {
  std::vector<DecodedDescriptor> seen;
  void operator()(const DecodedDescriptor &d) { seen.push_back(d); }
};

constexpr uint64_t kBase = 0x100000;

// Domain-selective IOTLB invalidation for `did`: easy to tell apart in the sink.
uint64_t iotlb_domain(uint16_t did) {
  return 0x2 | (2u << 4) | (uint64_t{did} << 16);
}

class QueueTest : public ::testing::Test {
 protected:
  bool tail(size_t index) {
    return queue.write_tail(
        index, [&](uint64_t pa, void *buf, size_t len) { return memory.fetch(pa, buf, len); },
        recorder);
  }
  InvalidationQueue queue;
  FakeMemory memory;
  Recorder recorder;
};

TEST_F(QueueTest, IqaFieldsAndSizes) {
  queue.write_iqa(kBase | 0);
  EXPECT_EQ(queue.entries(), 256u);
  EXPECT_EQ(queue.width(), DescriptorWidth::k128);
  queue.write_iqa(kBase | InvalidationQueue::kIqaDw256 | 2);
  EXPECT_EQ(queue.entries(), 4u * 4096 / 32);
  EXPECT_EQ(queue.width(), DescriptorWidth::k256);
  EXPECT_EQ(queue.base(), kBase);
  EXPECT_EQ(queue.read_iqa(), kBase | InvalidationQueue::kIqaDw256 | 2);
}

TEST_F(QueueTest, HeadFollowsTailAndSinkSeesDescriptorsInOrder) {
  queue.write_iqa(kBase);
  for (uint16_t i = 0; i < 5; ++i) memory.put(kBase + 16 * i, iotlb_domain(i + 1), 0);
  ASSERT_TRUE(tail(3));
  EXPECT_EQ(queue.head(), 3u);
  EXPECT_EQ(queue.read_iqh(), 3u * 16);
  EXPECT_EQ(queue.read_iqt(), 3u * 16);
  ASSERT_TRUE(tail(5));
  ASSERT_EQ(recorder.seen.size(), 5u);
  for (uint16_t i = 0; i < 5; ++i) EXPECT_EQ(recorder.seen[i].op.did, i + 1);
  EXPECT_EQ(queue.stats().snapshot().descriptors_by_type[0x2], 5u);
}

TEST_F(QueueTest, WrapsAround) {
  queue.write_iqa(kBase);  // 256 entries
  for (size_t i = 0; i < 256; ++i) memory.put(kBase + 16 * i, iotlb_domain(uint16_t(i)), 0);
  ASSERT_TRUE(tail(250));
  ASSERT_TRUE(tail(4));  // 250..255, 0..3
  EXPECT_EQ(queue.head(), 4u);
  ASSERT_EQ(recorder.seen.size(), 260u);
  EXPECT_EQ(recorder.seen[249].op.did, 249);
  EXPECT_EQ(recorder.seen[250].op.did, 250);
  EXPECT_EQ(recorder.seen[255].op.did, 255);
  EXPECT_EQ(recorder.seen[256].op.did, 0);  // first after the wrap
  EXPECT_EQ(recorder.seen.back().op.did, 3);
}

// QEMU vtd_process_wait_desc fails the descriptor when its status write fails, which stops
// the queue with IQE on that descriptor; a sink that cannot do the write refuses it the same way.
TEST_F(QueueTest, SinkRefusalStopsOnTheRefusedDescriptor) {
  queue.write_iqa(kBase);
  memory.put(kBase + 0, iotlb_domain(1), 0);
  memory.put(kBase + 16, 0x5 | (1u << 5), 0xDEAD0000);  // wait, SW
  memory.put(kBase + 32, iotlb_domain(3), 0);
  std::vector<DecodedDescriptor> accepted;
  auto refuse_waits = [&](const DecodedDescriptor &d) {
    if (d.kind == DecodedKind::kWait) return false;
    accepted.push_back(d);
    return true;
  };
  auto fetch = [&](uint64_t pa, void *buf, size_t len) { return memory.fetch(pa, buf, len); };
  EXPECT_FALSE(queue.write_tail(3, fetch, refuse_waits));
  EXPECT_EQ(queue.error(), QiError::kInvalidDescriptor);
  EXPECT_EQ(queue.fault(), QueueFault::kStatusWrite);
  EXPECT_EQ(queue.head(), 1u);
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_EQ(accepted[0].op.did, 1);
}

TEST_F(QueueTest, ErrorStopsOnBadDescriptorUntilCleared) {
  queue.write_iqa(kBase);
  memory.put(kBase + 0, iotlb_domain(1), 0);
  memory.put(kBase + 16, iotlb_domain(2), 0);
  memory.put(kBase + 32, 0x2 | (2u << 4) | (1u << 8), 0);  // reserved bit 8
  memory.put(kBase + 48, iotlb_domain(4), 0);
  EXPECT_FALSE(tail(4));
  EXPECT_EQ(queue.error(), QiError::kInvalidDescriptor);
  EXPECT_EQ(queue.fault(), QueueFault::kDecode);
  EXPECT_EQ(queue.decode_error(), DecodeError::kReservedBit);
  EXPECT_EQ(queue.head(), 2u);  // on the bad descriptor
  EXPECT_EQ(queue.tail(), 4u);
  ASSERT_EQ(recorder.seen.size(), 2u);

  // Still stopped: another tail write applies nothing.
  memory.put(kBase + 64, iotlb_domain(5), 0);
  EXPECT_FALSE(tail(5));
  EXPECT_EQ(recorder.seen.size(), 2u);
  EXPECT_EQ(queue.head(), 2u);

  // The guest fixes the descriptor, clears the error, and writes the tail again.
  memory.put(kBase + 32, iotlb_domain(3), 0);
  queue.clear_error();
  EXPECT_EQ(queue.error(), QiError::kNone);
  EXPECT_TRUE(tail(5));
  ASSERT_EQ(recorder.seen.size(), 5u);
  EXPECT_EQ(recorder.seen[2].op.did, 3);
  EXPECT_EQ(recorder.seen[4].op.did, 5);
  EXPECT_EQ(queue.stats().snapshot().errors, 1u);
}

TEST_F(QueueTest, FetchFailureLosesNothing) {
  queue.write_iqa(kBase);
  memory.put(kBase, iotlb_domain(1), 0);
  EXPECT_FALSE(tail(2));  // entry 1 is unbacked
  EXPECT_EQ(queue.fault(), QueueFault::kFetchFailed);
  EXPECT_EQ(queue.head(), 1u);
  memory.put(kBase + 16, iotlb_domain(2), 0);
  queue.clear_error();
  EXPECT_TRUE(tail(2));
  ASSERT_EQ(recorder.seen.size(), 2u);
  EXPECT_EQ(recorder.seen[1].op.did, 2);
}

TEST_F(QueueTest, TailBeyondQueueIsAnError) {
  queue.write_iqa(kBase);
  EXPECT_FALSE(tail(256));
  EXPECT_EQ(queue.fault(), QueueFault::kTailOutOfRange);
  EXPECT_EQ(queue.tail(), 0u);
  EXPECT_TRUE(recorder.seen.empty());
}

TEST_F(QueueTest, MisalignedTailIn256BitModeIsAnError) {
  queue.write_iqa(kBase | InvalidationQueue::kIqaDw256);
  memory.put256(kBase, iotlb_domain(1), 0, 0, 0);
  memory.put256(kBase + 32, iotlb_domain(2), 0, 0, 0);
  auto fetch = [&](uint64_t pa, void *buf, size_t len) { return memory.fetch(pa, buf, len); };
  EXPECT_FALSE(queue.write_iqt(0x10, fetch, recorder));
  EXPECT_EQ(queue.fault(), QueueFault::kTailMisaligned);
  queue.clear_error();
  EXPECT_TRUE(queue.write_iqt(0x40, fetch, recorder));  // two 32-byte descriptors
  EXPECT_EQ(queue.head(), 2u);
  EXPECT_EQ(queue.read_iqh(), 0x40u);
  EXPECT_EQ(recorder.seen.size(), 2u);
}

TEST_F(QueueTest, UpperHalfOf256BitDescriptorIsChecked) {
  queue.write_iqa(kBase | InvalidationQueue::kIqaDw256);
  memory.put256(kBase, iotlb_domain(1), 0, 0, 1);
  EXPECT_FALSE(tail(1));
  EXPECT_EQ(queue.decode_error(), DecodeError::kReservedBit);
  EXPECT_EQ(queue.head(), 0u);
}

TEST_F(QueueTest, IqaRewriteResetsHeadTailAndError) {
  queue.write_iqa(kBase);
  EXPECT_FALSE(tail(1));  // unbacked
  queue.write_iqa(kBase);
  EXPECT_EQ(queue.error(), QiError::kNone);
  EXPECT_EQ(queue.head(), 0u);
  EXPECT_EQ(queue.tail(), 0u);
}

}  // namespace
}  // namespace nestor::invq
