// Table builders: map / unmap / remap and every refusal status, for both formats.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "flat_memory.h"
#include "nestor/walkers/builder.h"
#include "nestor/walkers/first_level.h"
#include "nestor/walkers/second_level.h"

namespace nestor {
namespace {

using build::Status;
using test::FlatMemory;
using test::FlatSpace;

constexpr uint64_t kMemSize = 2ull << 20;
constexpr uint64_t kRW = build::fl_leaf_bits(true, true, true);
constexpr uint64_t kOut = 0x0000'0040'0000'0000ull;

TEST(Builder, StatusNamesAreDistinct) {
  std::set<std::string> names;
  for (Status s :
       {Status::kOk, Status::kMisaligned, Status::kBadPageSize, Status::kConflict,
        Status::kNoMemory, Status::kNotMapped, Status::kBeyondWidth, Status::kMemoryError})
    EXPECT_TRUE(names.insert(build::status_name(s)).second);
}

TEST(Builder, LeafBitsEncodePermissions) {
  EXPECT_EQ(build::fl_leaf_bits(false, false, true), fl::kPresent);
  EXPECT_EQ(build::fl_leaf_bits(true, true, false),
            fl::kPresent | fl::kWritable | fl::kUser | fl::kNoExecute);
  EXPECT_EQ(build::sl_leaf_bits(kAccessRead | kAccessExec), sl::kRead | sl::kExec);
  EXPECT_EQ(build::sl_leaf_bits(kAccessWrite), sl::kWrite);
}

template <class B>
struct BuilderFixture {
  FlatMemory mem{0, kMemSize};
  FlatSpace space{mem, 0x1000, kMemSize};
  B b{space, space.alloc_table(), 4};
};

TEST(Builder, MapUnmapRemapFirstLevel) {
  BuilderFixture<build::FirstLevelBuilder<FlatSpace>> f;
  fl::Config c;
  c.root = f.b.root();
  ASSERT_EQ(f.b.map(0x1000, kOut, 12, kRW), Status::kOk);
  EXPECT_EQ(f.space.allocated, 4);  // root + 3 new tables
  auto r = fl::walk(f.mem, c, 0x1000, kAccessRead, false);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.t.out, kOut);
  // Remap of the same 4K slot replaces it.
  ASSERT_EQ(f.b.map(0x1000, kOut + 0x3000, 12, kRW), Status::kOk);
  EXPECT_EQ(fl::walk(f.mem, c, 0x1000, kAccessRead, false).t.out, kOut + 0x3000);
  // A neighbour reuses the tables.
  ASSERT_EQ(f.b.map(0x2000, kOut, 12, kRW), Status::kOk);
  EXPECT_EQ(f.space.allocated, 4);
  ASSERT_EQ(f.b.unmap(0x1000, 12), Status::kOk);
  EXPECT_EQ(fl::walk(f.mem, c, 0x1000, kAccessRead, false).fault.error, WalkError::kNotPresent);
  EXPECT_TRUE(fl::walk(f.mem, c, 0x2000, kAccessRead, false).ok);
  EXPECT_EQ(f.b.unmap(0x1000, 12), Status::kNotMapped);
  EXPECT_EQ(f.b.unmap(0x0000'0100'0000'0000ull, 12), Status::kNotMapped);  // no path at all
}

TEST(Builder, MapUnmapRemapSecondLevelLargePages) {
  BuilderFixture<build::SecondLevelBuilder<FlatSpace>> f;
  sl::Config c;
  c.root = f.b.root();
  ASSERT_EQ(f.b.map(0x4000'0000, kOut, 30, build::sl_leaf_bits(kAccessRead)), Status::kOk);
  ASSERT_EQ(f.b.map(0x20'0000, kOut, 21, build::sl_leaf_bits(kAccessRead)), Status::kOk);
  EXPECT_EQ(sl::walk(f.mem, c, 0x4000'1234, kAccessRead).t.page_shift, 30);
  EXPECT_EQ(sl::walk(f.mem, c, 0x20'1234, kAccessRead).t.page_shift, 21);
  // Remap 1G with new permissions.
  ASSERT_EQ(f.b.map(0x4000'0000, kOut, 30, build::sl_leaf_bits(kAccessRead | kAccessWrite)),
            Status::kOk);
  EXPECT_TRUE(sl::walk(f.mem, c, 0x4000'0000, kAccessWrite).ok);
  // Unmap must name the right size.
  EXPECT_EQ(f.b.unmap(0x4000'0000, 21), Status::kNotMapped);
  EXPECT_EQ(f.b.unmap(0x4000'0000, 12), Status::kNotMapped);
  EXPECT_EQ(f.b.unmap(0x20'0000, 12), Status::kNotMapped);
  ASSERT_EQ(f.b.unmap(0x4000'0000, 30), Status::kOk);
  EXPECT_EQ(sl::walk(f.mem, c, 0x4000'0000, kAccessRead).fault.error, WalkError::kNotPresent);
}

TEST(Builder, ConflictsAreRefused) {
  BuilderFixture<build::FirstLevelBuilder<FlatSpace>> f;
  ASSERT_EQ(f.b.map(0x20'0000, kOut, 21, kRW), Status::kOk);
  // A 4K page inside an existing 2M page: refused, not split.
  EXPECT_EQ(f.b.map(0x20'1000, kOut, 12, kRW), Status::kConflict);
  ASSERT_EQ(f.b.map(0x4000'0000, kOut, 30, kRW), Status::kOk);
  EXPECT_EQ(f.b.map(0x4020'0000, kOut, 21, kRW), Status::kConflict);
  EXPECT_EQ(f.b.map(0x4000'1000, kOut, 12, kRW), Status::kConflict);
  // A large page over an existing table: refused.
  ASSERT_EQ(f.b.map(0x8000'1000, kOut, 12, kRW), Status::kOk);
  EXPECT_EQ(f.b.map(0x8000'0000, kOut, 21, kRW), Status::kConflict);
  EXPECT_EQ(f.b.map(0x8000'0000, kOut, 30, kRW), Status::kConflict);
  // Even an empty table left behind by an unmap still occupies the slot.
  ASSERT_EQ(f.b.unmap(0x8000'1000, 12), Status::kOk);
  EXPECT_EQ(f.b.map(0x8000'0000, kOut, 21, kRW), Status::kConflict);
}

TEST(Builder, ArgumentErrors) {
  BuilderFixture<build::SecondLevelBuilder<FlatSpace>> f;
  const uint64_t leaf = build::sl_leaf_bits(kAccessRead);
  EXPECT_EQ(f.b.map(0x1000, kOut, 13, leaf), Status::kBadPageSize);
  EXPECT_EQ(f.b.map(0x1000, kOut, 39, leaf), Status::kBadPageSize);
  EXPECT_EQ(f.b.map(0x1800, kOut, 12, leaf), Status::kMisaligned);
  EXPECT_EQ(f.b.map(0x1000, kOut | 0x800, 12, leaf), Status::kMisaligned);
  EXPECT_EQ(f.b.map(0x1000, kOut, 21, leaf), Status::kMisaligned);
  EXPECT_EQ(f.b.map(0x20'0000, kOut | 0x1000, 21, leaf), Status::kMisaligned);
  EXPECT_EQ(f.b.map(0x20'0000, kOut, 30, leaf), Status::kMisaligned);
  EXPECT_EQ(f.b.map(1ull << 48, kOut, 12, leaf), Status::kBeyondWidth);
  EXPECT_EQ(f.b.unmap(0x1800, 12), Status::kMisaligned);
  EXPECT_EQ(f.b.unmap(0x1000, 14), Status::kBadPageSize);
  EXPECT_EQ(f.space.allocated, 1);  // nothing was allocated by refused calls
}

TEST(Builder, OutOfTableMemory) {
  FlatMemory mem(0, 0x4000);
  FlatSpace space(mem, 0x1000, 0x4000);  // room for the root and two tables
  build::SecondLevelBuilder<FlatSpace> b(space, space.alloc_table(), 4);
  EXPECT_EQ(b.map(0x1000, kOut, 12, build::sl_leaf_bits(kAccessRead)), Status::kNoMemory);
  EXPECT_EQ(b.map(0x4000'0000, kOut, 30, build::sl_leaf_bits(kAccessRead)), Status::kOk);
}

TEST(Builder, MemoryErrorsAreReported) {
  FlatMemory mem(0, 0x2000);
  FlatSpace space(mem, 0x1000, 0x2000);
  build::FirstLevelBuilder<FlatSpace> b(space, 0x10'0000, 4);  // root outside memory
  EXPECT_EQ(b.map(0x1000, kOut, 12, kRW), Status::kMemoryError);
}

TEST(Builder, UpdateLeafAndEntryAddress) {
  BuilderFixture<build::FirstLevelBuilder<FlatSpace>> f;
  ASSERT_EQ(f.b.map(0x5000, kOut, 12, kRW), Status::kOk);
  const uint64_t a = f.b.entry_address(0x5000, 1);
  ASSERT_NE(a, 0u);
  EXPECT_EQ(f.mem.peek(a), kOut | kRW);
  EXPECT_EQ(f.b.entry_address(0x0000'0100'0000'0000ull, 1), 0u);
  ASSERT_EQ(f.b.update_leaf(
                0x5000, 12, [](uint64_t old, void *) { return old & ~fl::kWritable; }, nullptr),
            Status::kOk);
  EXPECT_EQ(f.mem.peek(a), kOut | (kRW & ~fl::kWritable));
  EXPECT_EQ(f.b.update_leaf(
                0x6000, 12, [](uint64_t o, void *) { return o; }, nullptr),
            Status::kNotMapped);
}

TEST(Builder, FiveLevelAndThreeLevelWidths) {
  FlatMemory mem(0, kMemSize);
  FlatSpace space(mem, 0x1000, kMemSize);
  build::FirstLevelBuilder<FlatSpace> b5(space, space.alloc_table(), 5);
  EXPECT_EQ(b5.map(0x00FF'FFFF'FFFF'F000ull, kOut, 12, kRW), Status::kOk);
  EXPECT_EQ(b5.map(1ull << 57, kOut, 12, kRW), Status::kBeyondWidth);
  build::SecondLevelBuilder<FlatSpace> b3(space, space.alloc_table(), 3);
  EXPECT_EQ(b3.map((1ull << 39) - 0x1000, kOut, 12, build::sl_leaf_bits(kAccessRead)), Status::kOk);
  EXPECT_EQ(b3.map(1ull << 39, kOut, 12, build::sl_leaf_bits(kAccessRead)), Status::kBeyondWidth);
}

}  // namespace
}  // namespace nestor
