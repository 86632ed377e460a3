// An engine driven only through the C ABI, with RAM, a structure layout and table spaces.
//
// The engine caches structures and translations and never snoops memory, so after tests
// rewrite structures or tables something must invalidate. The C ABI has no "invalidate
// everything" call, so this fixture keeps its RAM caller-owned and, on the first translation
// after any write, replaces the engine by a fresh one over the same RAM (with the same
// configuration, root table and I/O callbacks) -- the strongest possible invalidation.
#pragma once

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <vector>

#include "engine_support.h"
#include "nestor.h"

namespace nestor::test {

inline constexpr uint64_t kRamSize = 64ull << 20;
inline constexpr uint64_t kStructBase = 0x10'0000, kStructEnd = 0x80'0000;
inline constexpr uint64_t kTableBase = 0x80'0000, kTableEnd = kRamSize;

class CapiEngine {
 public:
  // read64/write64 over the C ABI through the fixture (marks memory as changed).
  struct Mem {
    CapiEngine *x;
    bool read64(uint64_t pa, uint64_t *out) { return nestor_mem_read(x->e, pa, out, 8) == 0; }
    bool write64(uint64_t pa, uint64_t v) {
      x->dirty_ = true;
      return nestor_mem_write(x->e, pa, &v, 8) == 0;
    }
  };

  explicit CapiEngine(const nestor_config *cfg = nullptr, bool set_root = true)
      : mem{this},
        structs(mem, kStructBase, kStructEnd),
        tables(mem, kTableBase, kTableEnd),
        layout(writer(), [this] { return structs.alloc_table(); }) {
    if (cfg) cfg_ = *cfg, has_cfg_ = true;
    create();
    layout = VtdLayout(writer(), [this] { return structs.alloc_table(); });
    if (set_root) set_root_table(layout.root());
  }
  ~CapiEngine() {
    nestor_engine_destroy(e);
    if (ram_) munmap(ram_, kRamSize);
  }
  CapiEngine(const CapiEngine &) = delete;

  int set_root_table(uint64_t pa) {
    const int rc = nestor_set_root_table(e, pa);
    EXPECT_EQ(rc, 0);
    root_ = pa, root_set_ = true;
    return rc;
  }
  int set_io(nestor_io_read_fn rd, nestor_io_write_fn wr, void *ctx) {
    rd_ = rd, wr_ = wr, io_ctx_ = ctx;
    dirty_ = true;  // the memory map changed
    return nestor_mem_set_io(e, rd, wr, ctx);
  }

  nestor_result tr(uint16_t sid, bool has_pasid, uint32_t pasid, uint64_t iova,
                   uint8_t access = NESTOR_ACCESS_READ, bool priv = false) {
    if (dirty_) refresh();
    nestor_result r{};
    const int rc = vtdw_translate(e, sid, has_pasid, pasid, iova, access, priv, &r);
    EXPECT_GE(rc, 0) << "nestor_translate returned an error";
    return r;
  }
  int fault(uint16_t sid, bool has_pasid, uint32_t pasid, uint64_t iova,
            uint8_t access = NESTOR_ACCESS_READ, bool priv = false) {
    return tr(sid, has_pasid, pasid, iova, access, priv).fault;
  }
  std::vector<nestor_fault_record> drain() {
    std::vector<nestor_fault_record> out(1024);
    const int n = nestor_fault_log_drain(e, out.data(), out.size(), nullptr);
    EXPECT_GE(n, 0);
    out.resize(size_t(n < 0 ? 0 : n));
    return out;
  }
  // Replaces the engine by a fresh one over the same RAM (drops every cache and the log).
  void refresh() {
    nestor_engine_destroy(e);
    e = nullptr;
    create();
    if (root_set_) {
      EXPECT_EQ(nestor_set_root_table(e, root_), 0);
    }
    if (rd_ || wr_) nestor_mem_set_io(e, rd_, wr_, io_ctx_);
    dirty_ = false;
  }
  void mark_dirty() { dirty_ = true; }
  vtdw_writer writer() { return vtdw_writer{&CapiEngine::write_cb, this}; }

  nestor_engine *e = nullptr;
  Mem mem;
  BumpSpace<Mem> structs, tables;
  VtdLayout layout;

 private:
  static int write_cb(void *ctx, uint64_t pa, const void *buf, size_t len) {
    auto *x = static_cast<CapiEngine *>(ctx);
    x->dirty_ = true;
    return nestor_mem_write(x->e, pa, buf, len);
  }
  void create() {
    if (!ram_) {
      void *p = mmap(nullptr, kRamSize, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      ASSERT_NE(p, MAP_FAILED);
      ram_ = p;
    }
    e = nestor_engine_create(has_cfg_ ? &cfg_ : nullptr);
    ASSERT_NE(e, nullptr);
    ASSERT_EQ(nestor_mem_add_host_ram(e, 0, kRamSize, ram_), 0);
  }

  nestor_config cfg_{};
  bool has_cfg_ = false;
  void *ram_ = nullptr;
  bool dirty_ = false;
  uint64_t root_ = 0;
  bool root_set_ = false;
  nestor_io_read_fn rd_ = nullptr;
  nestor_io_write_fn wr_ = nullptr;
  void *io_ctx_ = nullptr;
};

}  // namespace nestor::test
