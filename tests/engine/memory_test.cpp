// Machine memory through the C ABI: RAM regions, lazily backed large RAM, caller-owned RAM,
// I/O callbacks and unbacked addresses.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

#include "capi_fixture.h"
#include "nestor/machine_memory.h"
#include "nestor/walkers/builder.h"

namespace nestor {
namespace {

using test::BumpSpace;
using test::CapiMem;

struct Engine {
  Engine() : e(nestor_engine_create(nullptr)) {}
  ~Engine() { nestor_engine_destroy(e); }
  nestor_engine *e;
};

TEST(Memory, AddRamErrors) {
  Engine x;
  EXPECT_EQ(nestor_mem_add_ram(x.e, 0x10000, 0x10000), 0);
  EXPECT_EQ(nestor_mem_add_ram(x.e, 0x10000, 0x1000), -EEXIST);
  EXPECT_EQ(nestor_mem_add_ram(x.e, 0xF000, 0x2000), -EEXIST);   // overlaps the start
  EXPECT_EQ(nestor_mem_add_ram(x.e, 0x1F000, 0x2000), -EEXIST);  // overlaps the end
  EXPECT_EQ(nestor_mem_add_ram(x.e, 0x0, 0x100000), -EEXIST);    // covers it
  EXPECT_EQ(nestor_mem_add_ram(x.e, 0x20000, 0x1000), 0);        // adjacent is fine
  EXPECT_EQ(nestor_mem_add_ram(x.e, 0x30800, 0x1000), -EINVAL);  // misaligned base
  EXPECT_EQ(nestor_mem_add_ram(x.e, 0x30000, 0x800), -EINVAL);   // misaligned size
  EXPECT_EQ(nestor_mem_add_ram(x.e, 0x30000, 0), -EINVAL);
  EXPECT_EQ(nestor_mem_add_ram(x.e, ~0ull << 12, 0x2000), -EINVAL);  // wraps
  uint64_t host[4];
  EXPECT_EQ(nestor_mem_add_host_ram(x.e, 0x40000, 0x1000, nullptr), -EINVAL);
  EXPECT_EQ(nestor_mem_add_host_ram(x.e, 0x40000, 0x1000, reinterpret_cast<char *>(host) + 1),
            -EINVAL);
  EXPECT_EQ(nestor_mem_add_host_ram(x.e, 0x10000, 0x1000, host), -EEXIST);
}

TEST(Memory, RegionTableFills) {
  Engine x;
  int rc = 0, n = 0;
  for (; n < 1000 && rc == 0; ++n) rc = nestor_mem_add_ram(x.e, uint64_t(n) << 20, 4096);
  EXPECT_EQ(rc, -ENOSPC);
  EXPECT_GT(n, 8);
}

TEST(Memory, RemoveRam) {
  Engine x;
  ASSERT_EQ(nestor_mem_add_ram(x.e, 0x10000, 0x2000), 0);
  ASSERT_EQ(nestor_mem_add_ram(x.e, 0x40000, 0x1000), 0);
  alignas(8) uint64_t host[512] = {};
  ASSERT_EQ(nestor_mem_add_host_ram(x.e, 0x80000, 0x1000, host), 0);
  const uint64_t v = 0x1234;
  ASSERT_EQ(nestor_mem_write(x.e, 0x11000, &v, 8), 0);
  // Only the exact region goes.
  EXPECT_EQ(nestor_mem_remove_ram(x.e, 0x10000, 0x1000), -ENOENT);
  EXPECT_EQ(nestor_mem_remove_ram(x.e, 0x11000, 0x1000), -ENOENT);
  EXPECT_EQ(nestor_mem_remove_ram(x.e, 0x10000, 0x2000), 0);
  EXPECT_EQ(nestor_mem_remove_ram(x.e, 0x10000, 0x2000), -ENOENT);
  uint64_t got = 0;
  EXPECT_EQ(nestor_mem_read(x.e, 0x11000, &got, 8), -EFAULT);
  // The regions after it still answer (the table stays dense), and caller-owned RAM is the
  // caller's again, with what was written through the engine.
  ASSERT_EQ(nestor_mem_write(x.e, 0x80008, &v, 8), 0);
  EXPECT_EQ(nestor_mem_read(x.e, 0x40000, &got, 8), 0);
  EXPECT_EQ(nestor_mem_remove_ram(x.e, 0x80000, 0x1000), 0);
  EXPECT_EQ(host[1], v);
  EXPECT_EQ(nestor_mem_read(x.e, 0x80008, &got, 8), -EFAULT);
  // A removed range can be declared again, zeroed.
  ASSERT_EQ(nestor_mem_add_ram(x.e, 0x10000, 0x2000), 0);
  EXPECT_EQ(nestor_mem_read(x.e, 0x11000, &got, 8), 0);
  EXPECT_EQ(got, 0u);
  // Removal frees a slot in a full table.
  int rc = 0;
  for (uint64_t n = 1; rc == 0; ++n) rc = nestor_mem_add_ram(x.e, n << 24, 4096);
  EXPECT_EQ(rc, -ENOSPC);
  EXPECT_EQ(nestor_mem_remove_ram(x.e, 0x40000, 0x1000), 0);
  EXPECT_EQ(nestor_mem_add_ram(x.e, 0x40000, 0x1000), 0);
}

TEST(Memory, RamIsZeroedAndReadsBack) {
  Engine x;
  ASSERT_EQ(nestor_mem_add_ram(x.e, 0x100000, 0x100000), 0);
  std::vector<uint8_t> buf(0x3000, 0xEE);
  ASSERT_EQ(nestor_mem_read(x.e, 0x100000, buf.data(), buf.size()), 0);
  for (uint8_t b : buf) ASSERT_EQ(b, 0);
  const char msg[] = "unaligned bytes across words";
  ASSERT_EQ(nestor_mem_write(x.e, 0x100003, msg, sizeof msg), 0);
  char back[sizeof msg];
  ASSERT_EQ(nestor_mem_read(x.e, 0x100003, back, sizeof back), 0);
  EXPECT_STREQ(back, msg);
}

TEST(Memory, UnbackedAccessIsEfault) {
  Engine x;
  ASSERT_EQ(nestor_mem_add_ram(x.e, 0x100000, 0x1000), 0);
  uint64_t v = 1;
  EXPECT_EQ(nestor_mem_read(x.e, 0x200000, &v, 8), -EFAULT);
  EXPECT_EQ(nestor_mem_write(x.e, 0x200000, &v, 8), -EFAULT);
  // A span that starts in RAM and runs past it fails as a whole.
  std::vector<uint8_t> buf(0x2000);
  EXPECT_EQ(nestor_mem_read(x.e, 0x100000, buf.data(), buf.size()), -EFAULT);
  EXPECT_EQ(nestor_mem_read(x.e, ~0ull - 3, &v, 8), -EFAULT);  // wraps around
}

TEST(Memory, LargeLazyRegionTouchedSparsely) {
  Engine x;
  const uint64_t base = 1ull << 40, size = 64ull << 30;  // 64 GiB at 1 TiB
  ASSERT_EQ(nestor_mem_add_ram(x.e, base, size), 0);
  ASSERT_EQ(nestor_set_root_table(x.e, base + size - 4096), 0);
  for (uint64_t off = 0; off < size; off += 4ull << 30) {
    const uint64_t v = off ^ 0x5A5A;
    ASSERT_EQ(nestor_mem_write(x.e, base + off + 0x1238, &v, 8), 0);
  }
  for (uint64_t off = 0; off < size; off += 4ull << 30) {
    uint64_t v = 0;
    ASSERT_EQ(nestor_mem_read(x.e, base + off + 0x1238, &v, 8), 0);
    EXPECT_EQ(v, off ^ 0x5A5A);
  }
  uint64_t last = 7;
  ASSERT_EQ(nestor_mem_write(x.e, base + size - 8, &last, 8), 0);
  EXPECT_EQ(nestor_mem_read(x.e, base + size, &last, 8), -EFAULT);
  // Page tables spread over the region work.
  CapiMem m{x.e};
  BumpSpace<CapiMem> space(m, base + (40ull << 30), base + (41ull << 30));
  build::SecondLevelBuilder<BumpSpace<CapiMem>> sl(space, space.alloc_table(), 4);
  ASSERT_EQ(sl.map(0x1000, 0x5000, 12, build::sl_leaf_bits(NESTOR_ACCESS_READ)),
            build::Status::kOk);
  const vtdw_writer w = vtdw_capi_writer(x.e);
  const uint64_t root = base + size - 4096, ctx = base + (63ull << 30), dir = base + (1ull << 30),
                 table = base + (2ull << 30) + 0x1000;
  vtdw_root(&w, root, 0, ctx, 0, 0, 0);
  vtdw_context c{};
  c.present = c.paside = 1;
  c.pasid_dir = dir;
  vtdw_context_entry(&w, ctx, 8, &c);
  vtdw_pasid_dir_entry(&w, dir, 1, table, 1, 0, 0);
  vtdw_pasid_entry pe = test::pe_second_level(sl.root());
  vtdw_pasid_entry_write(&w, table, 1, &pe);
  nestor_result r{};
  ASSERT_EQ(vtdw_translate(x.e, 8, 1, 1, 0x1234, NESTOR_ACCESS_READ, 0, &r), 0);
  EXPECT_EQ(r.hpa, 0x5234u);
}

TEST(Memory, CallerOwnedRamIsShared) {
  Engine x;
  std::vector<uint64_t> host(4096 / 8 * 16, 0);
  ASSERT_EQ(nestor_mem_add_host_ram(x.e, 0x200000, 16 * 4096, host.data()), 0);
  const uint64_t v = 0x1122334455667788ull;
  ASSERT_EQ(nestor_mem_write(x.e, 0x200010, &v, 8), 0);
  EXPECT_EQ(host[2], v);
  host[5] = 42;
  uint64_t back = 0;
  ASSERT_EQ(nestor_mem_read(x.e, 0x200028, &back, 8), 0);
  EXPECT_EQ(back, 42u);
  // Structures written by the caller directly into its buffer are used by translation.
  const uint64_t root = 0x200000, ctx = 0x201000, dir = 0x202000, table = 0x203000;
  std::fill(host.begin(), host.end(), 0);
  host[(root - 0x200000) / 8] = ctx | 1;         // bus 0 LCTP
  host[(ctx - 0x200000) / 8 + 4 * 3] = dir | 1;  // devfn 3: P, PASIDE=0
  host[(dir - 0x200000) / 8] = table | 1;        // dir slot 0
  host[(table - 0x200000) / 8] = 1 | (4u << 6);  // PASID 0: pass-through
  ASSERT_EQ(nestor_set_root_table(x.e, root), 0);
  nestor_result r{};
  ASSERT_EQ(vtdw_translate(x.e, 3, 0, 0, 0xABCDE000, NESTOR_ACCESS_WRITE, 0, &r), 0);
  EXPECT_EQ(r.hpa, 0xABCDE000u);
}

struct Device {
  std::map<uint64_t, uint8_t> bytes;
  int reads = 0, writes = 0;
  static int rd(void *ctx, uint64_t pa, void *buf, size_t len) {
    auto *d = static_cast<Device *>(ctx);
    ++d->reads;
    if (pa >= 0xF000'0000'0000ull) return -EIO;
    for (size_t i = 0; i < len; ++i) static_cast<uint8_t *>(buf)[i] = d->bytes[pa + i];
    return 0;
  }
  static int wr(void *ctx, uint64_t pa, const void *buf, size_t len) {
    auto *d = static_cast<Device *>(ctx);
    ++d->writes;
    for (size_t i = 0; i < len; ++i) d->bytes[pa + i] = static_cast<const uint8_t *>(buf)[i];
    return 0;
  }
};

TEST(Memory, IoCallbacksServeEverythingOutsideRam) {
  test::CapiEngine x;
  Device dev;
  ASSERT_EQ(x.set_io(Device::rd, Device::wr, &dev), 0);
  const uint64_t io = 0x8000'0000'0000ull;
  uint64_t v = 0xDEADBEEF;
  ASSERT_EQ(nestor_mem_write(x.e, io, &v, 8), 0);
  EXPECT_EQ(dev.writes, 1);
  v = 0;
  ASSERT_EQ(nestor_mem_read(x.e, io, &v, 8), 0);
  EXPECT_EQ(v, 0xDEADBEEFu);
  EXPECT_EQ(nestor_mem_read(x.e, 0xF000'0000'0000ull, &v, 8), -EIO);
  // A RAM access never reaches the device.
  const int before = dev.reads;
  ASSERT_EQ(nestor_mem_read(x.e, 0x1000, &v, 8), 0);
  EXPECT_EQ(dev.reads, before);
  // A PASID table that lives in device memory is fetched through the callback.
  x.layout.device(0x0008);
  const vtdw_writer w = x.layout.writer();
  vtdw_pasid_dir_entry(&w, x.layout.pasid_dir(0x0008), 1, io + 0x1000, 1, 0, 0);
  vtdw_pasid_entry pe = test::pe_pass_through();
  vtdw_pasid_entry_write(&w, io + 0x1000, 1, &pe);  // lands in the device via nestor_mem_write
  const int reads = dev.reads;
  EXPECT_EQ(x.fault(0x0008, true, 1, 0x5000), 0);
  EXPECT_GE(dev.reads, reads + 8);  // eight words of the PASID entry
  // Without callbacks the same address is unbacked.
  ASSERT_EQ(x.set_io(nullptr, nullptr, nullptr), 0);
  EXPECT_EQ(x.fault(0x0008, true, 1, 0x5000), NESTOR_FAULT_PASID_ENTRY_ACCESS);
  EXPECT_EQ(nestor_mem_read(x.e, io, &v, 8), -EFAULT);
}

// The write observer sees writes (fast 64-bit path and byte writes) but not CAS updates,
// which are the walkers' own A/D bookkeeping and must not look like table edits.
TEST(MachineMemory, WriteObserverSeesWritesNotCas) {
  MachineMemory mem;
  ASSERT_EQ(mem.add_ram(0, 1 << 20), 0);
  struct Seen {
    std::vector<std::pair<uint64_t, size_t>> writes;
    uint64_t last64 = 0;
  } seen;
  mem.set_write_observer(
      [](void *ctx, uint64_t pa, const void *data, size_t len) {
        auto *s = static_cast<Seen *>(ctx);
        s->writes.emplace_back(pa, len);
        if (len == 8) std::memcpy(&s->last64, data, 8);
      },
      &seen);
  ASSERT_TRUE(mem.write64(0x1000, 0xABCDEF));
  const uint8_t bytes[3] = {1, 2, 3};
  ASSERT_EQ(mem.write(0x2001, bytes, 3), 0);
  uint64_t expected = 0xABCDEF;
  ASSERT_EQ(mem.cas64(0x1000, expected, 0xABCDEF | 0x20), CasStatus::kOk);
  EXPECT_EQ(mem.write(1ull << 40, bytes, 3), -EFAULT);  // failed writes are not reported
  ASSERT_EQ(seen.writes.size(), 2u);
  EXPECT_EQ(seen.writes[0], std::make_pair(uint64_t{0x1000}, size_t{8}));
  EXPECT_EQ(seen.last64, 0xABCDEFu);
  EXPECT_EQ(seen.writes[1], std::make_pair(uint64_t{0x2001}, size_t{3}));
  mem.set_write_observer(nullptr, nullptr);
  ASSERT_TRUE(mem.write64(0x1000, 1));
  EXPECT_EQ(seen.writes.size(), 2u);
}

}  // namespace
}  // namespace nestor
