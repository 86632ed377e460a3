// Test bench for NestorIommu: a memory, the IOMMU and one DMA device. The memory's storage is
// also nestor's machine memory (nestor_mem_add_host_ram), so the page tables the "driver"
// writes are the ones the IOMMU walks and the data the device moves is what memory serves.
// Proves: translated reads/writes (also across a page boundary), an ATS translation request,
// faults as TLM error responses, a DMI grant used directly, and its revocation by
// invalidate_direct_mem_ptr after the driver unmaps the page and invalidates; a neighbouring
// grant survives a page-selective invalidation and falls to a global one.
// Exit code 0 only if every check holds.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include <tlm_utils/simple_initiator_socket.h>
#include <tlm_utils/simple_target_socket.h>

#include "nestor_iommu.h"

using nestor_tlm::AtsType;
using nestor_tlm::IommuExtension;
using nestor_tlm::NestorIommu;

namespace {

int g_failures = 0;
#define CHECK(cond, what)                                               \
  do {                                                                  \
    if (!(cond)) {                                                      \
      ++g_failures;                                                     \
      std::fprintf(stderr, "CHECK FAILED (line %d): %s\n", __LINE__, what); \
    }                                                                   \
  } while (0)

constexpr uint64_t kRamSize = 16ull << 20;
constexpr uint64_t kPage = 4096;
constexpr uint16_t kSid = 0x0010;  // 00:02.0
constexpr uint32_t kPasid = 5;
constexpr uint16_t kDid = 3;
constexpr uint64_t kIova = 0x5555'0000'0000ull;  // device buffer: pages 0..3
constexpr uint64_t kDataHpa = 0x400000;           // data pages live at 4 MiB + ...

// RAM with DMI for everything; its storage is 8-byte aligned (uint64_t words) as nestor
// requires of host RAM.
struct Memory : sc_core::sc_module {
  tlm_utils::simple_target_socket<Memory> socket;
  std::vector<uint64_t> words;
  explicit Memory(sc_core::sc_module_name n) : sc_module(n), socket("socket"), words(kRamSize / 8) {
    socket.register_b_transport(this, &Memory::b_transport);
    socket.register_get_direct_mem_ptr(this, &Memory::get_direct_mem_ptr);
    socket.register_transport_dbg(this, &Memory::transport_dbg);
  }
  unsigned char *bytes() { return reinterpret_cast<unsigned char *>(words.data()); }
  unsigned access(tlm::tlm_generic_payload &t) {
    const uint64_t a = t.get_address();
    const unsigned n = t.get_data_length();
    if (a >= kRamSize || n > kRamSize - a) return 0;
    if (t.is_write())
      std::memcpy(bytes() + a, t.get_data_ptr(), n);
    else
      std::memcpy(t.get_data_ptr(), bytes() + a, n);
    return n;
  }
  void b_transport(tlm::tlm_generic_payload &t, sc_core::sc_time &delay) {
    const unsigned n = access(t);
    t.set_response_status(n ? tlm::TLM_OK_RESPONSE : tlm::TLM_ADDRESS_ERROR_RESPONSE);
    t.set_dmi_allowed(true);
    delay += sc_core::sc_time(10, sc_core::SC_NS);
  }
  bool get_direct_mem_ptr(tlm::tlm_generic_payload &, tlm::tlm_dmi &dmi) {
    dmi.set_dmi_ptr(bytes());
    dmi.set_start_address(0);
    dmi.set_end_address(kRamSize - 1);
    dmi.allow_read_write();
    return true;
  }
  unsigned transport_dbg(tlm::tlm_generic_payload &t) { return access(t); }
};

struct Device : sc_core::sc_module {
  tlm_utils::simple_initiator_socket<Device> socket;
  NestorIommu *iommu = nullptr;  // the "driver" side reaches the IOMMU's invalidation hook
  nestor_engine *engine = nullptr;
  // The device's DMI cache: one granted page (enough for the bench).
  struct Dmi {
    bool valid = false;
    tlm::tlm_dmi dmi;
  };
  Dmi dmi_cache[4];
  unsigned revoked_calls = 0;

  SC_HAS_PROCESS(Device);
  explicit Device(sc_core::sc_module_name n) : sc_module(n), socket("socket") {
    socket.register_invalidate_direct_mem_ptr(this, &Device::invalidate_dmi);
    SC_THREAD(run);
  }

  void invalidate_dmi(sc_dt::uint64 start, sc_dt::uint64 end) {
    ++revoked_calls;
    for (Dmi &d : dmi_cache)
      if (d.valid && d.dmi.get_start_address() <= end && d.dmi.get_end_address() >= start)
        d.valid = false;
  }

  // One transaction with the requester extension; returns the response and the fault.
  tlm::tlm_response_status dma(tlm::tlm_command cmd, uint64_t iova, void *buf, unsigned len,
                               int *fault = nullptr, AtsType ats = AtsType::kUntranslated,
                               IommuExtension *out = nullptr) {
    tlm::tlm_generic_payload t;
    IommuExtension x;
    x.source_id = kSid;
    x.has_pasid = true;
    x.pasid = kPasid;
    x.ats = ats;
    t.set_command(cmd);
    t.set_address(iova);
    t.set_data_ptr(static_cast<unsigned char *>(buf));
    t.set_data_length(len);
    t.set_streaming_width(len);
    t.set_response_status(tlm::TLM_INCOMPLETE_RESPONSE);
    t.set_extension(&x);
    sc_core::sc_time delay = sc_core::SC_ZERO_TIME;
    socket->b_transport(t, delay);
    t.clear_extension(&x);  // stack-owned: the payload must not free it
    if (fault) *fault = x.fault;
    if (out) *out = x;
    wait(delay);
    return t.get_response_status();
  }

  bool request_dmi(uint64_t iova, Dmi *slot) {
    tlm::tlm_generic_payload t;
    IommuExtension x;
    x.source_id = kSid;
    x.has_pasid = true;
    x.pasid = kPasid;
    t.set_command(tlm::TLM_WRITE_COMMAND);
    t.set_address(iova);
    t.set_extension(&x);
    slot->valid = socket->get_direct_mem_ptr(t, slot->dmi);
    t.clear_extension(&x);
    return slot->valid;
  }

  uint64_t hpa_word(uint64_t hpa) {
    uint64_t v = 0;
    CHECK(nestor_mem_read(engine, hpa, &v, 8) == 0, "nestor_mem_read");
    return v;
  }

  void invalidate_page(uint64_t iova) {
    nestor_inv_op op{};
    op.cache = NESTOR_CACHE_IOTLB | NESTOR_CACHE_PAGING | NESTOR_CACHE_DEVTLB;
    op.scope = NESTOR_SCOPE_RANGE;
    op.did = kDid;
    op.source_id = kSid;
    op.pasid = kPasid;
    op.addr = iova;
    op.npages = 1;
    op.leaf = 1;
    CHECK(iommu->invalidate(op) == 0, "page invalidation");
  }

  void run();
};

// The guest driver's first-level tables: a 4-level x86 table built with nestor_mem_write.
struct Tables {
  nestor_engine *e;
  uint64_t next = 0x100000;  // table pages from 1 MiB
  uint64_t alloc() {
    const uint64_t p = next;
    next += kPage;
    return p;
  }
  uint64_t get(uint64_t pa) {
    uint64_t v = 0;
    nestor_mem_read(e, pa, &v, 8);
    return v;
  }
  void put(uint64_t pa, uint64_t v) { CHECK(nestor_mem_write(e, pa, &v, 8) == 0, "table write"); }
  uint64_t leaf_slot(uint64_t root, uint64_t iova) {
    uint64_t table = root;
    for (int level = 4; level > 1; --level) {
      const uint64_t slot = table + ((iova >> (12 + 9 * (level - 1))) & 511) * 8;
      uint64_t ent = get(slot);
      if (!(ent & 1)) {
        ent = alloc() | 0x7;  // P, RW, US on the way down; the leaf decides
        put(slot, ent);
      }
      table = ent & 0x000f'ffff'ffff'f000ull;
    }
    return table + ((iova >> 12) & 511) * 8;
  }
};

Tables *g_tables = nullptr;
uint64_t g_fl_root = 0;

void Device::run() {
  uint64_t v = 0x1122334455667788ull, r = 0;
  int fault = 0;

  // 1. Translated write and read back.
  CHECK(dma(tlm::TLM_WRITE_COMMAND, kIova + 0x10, &v, 8) == tlm::TLM_OK_RESPONSE, "write page 0");
  CHECK(hpa_word(kDataHpa + 0x10) == v, "write landed at the translated address");
  CHECK(dma(tlm::TLM_READ_COMMAND, kIova + 0x10, &r, 8) == tlm::TLM_OK_RESPONSE && r == v,
        "read back page 0");

  // 2. A write straddling pages 0 and 1, which are not adjacent in memory.
  unsigned char buf[16];
  for (unsigned i = 0; i < 16; ++i) buf[i] = static_cast<unsigned char>(0xA0 + i);
  CHECK(dma(tlm::TLM_WRITE_COMMAND, kIova + kPage - 8, buf, 16) == tlm::TLM_OK_RESPONSE,
        "cross-page write");
  uint64_t lo = hpa_word(kDataHpa + kPage - 8), hi = hpa_word(kDataHpa + 5 * kPage);
  CHECK(std::memcmp(&lo, buf, 8) == 0 && std::memcmp(&hi, buf + 8, 8) == 0,
        "cross-page halves landed in both pages");

  // 3. ATS translation request: the answer, no memory access.
  IommuExtension ans;
  CHECK(dma(tlm::TLM_READ_COMMAND, kIova + kPage + 0x20, &r, 8, &fault,
            AtsType::kTranslationRequest, &ans) == tlm::TLM_OK_RESPONSE,
        "ATS translation request");
  CHECK(ans.translated_address == kDataHpa + 5 * kPage + 0x20 && ans.page_size == kPage,
        "ATS translation result");

  // 4. Faults as TLM errors: write to read-only page 3, access to unmapped page 9.
  CHECK(dma(tlm::TLM_WRITE_COMMAND, kIova + 3 * kPage, &v, 8, &fault) ==
            tlm::TLM_COMMAND_ERROR_RESPONSE && fault != 0,
        "write to a read-only page -> TLM_COMMAND_ERROR_RESPONSE");
  std::printf("fault: write to read-only page: 0x%x %s\n", unsigned(fault), nestor_fault_name(fault));
  CHECK(dma(tlm::TLM_READ_COMMAND, kIova + 9 * kPage, &r, 8, &fault) ==
            tlm::TLM_ADDRESS_ERROR_RESPONSE && fault == NESTOR_FAULT_FL_ENTRY_NOT_PRESENT,
        "unmapped page -> TLM_ADDRESS_ERROR_RESPONSE with 0x71");
  std::printf("fault: read of unmapped page: 0x%x %s\n", unsigned(fault), nestor_fault_name(fault));

  // 5. DMI for pages 1 and 2; write through page 1's pointer directly.
  CHECK(request_dmi(kIova + kPage, &dmi_cache[0]), "DMI grant for page 1");
  CHECK(request_dmi(kIova + 2 * kPage, &dmi_cache[1]), "DMI grant for page 2");
  CHECK(dmi_cache[0].dmi.is_write_allowed(), "page 1 grant is writable");
  if (dmi_cache[0].valid) {
    const uint64_t w = 0xD1D1D1D1D1D1D1D1ull;
    std::memcpy(dmi_cache[0].dmi.get_dmi_ptr() + 0x40, &w, 8);
    CHECK(hpa_word(kDataHpa + 5 * kPage + 0x40) == w, "DMI write reached the translated page");
  }
  CHECK(iommu->dmi_grants() == 2, "two grants recorded");

  // 6. The driver unmaps page 1 and invalidates it: page 1's grant is revoked, page 2's is not.
  g_tables->put(g_tables->leaf_slot(g_fl_root, kIova + kPage), 0);
  invalidate_page(kIova + kPage);
  CHECK(!dmi_cache[0].valid, "page 1 DMI revoked after unmap + invalidation");
  CHECK(dmi_cache[1].valid, "page 2 DMI survives a page-1 invalidation");
  CHECK(dma(tlm::TLM_READ_COMMAND, kIova + kPage, &r, 8, &fault) ==
            tlm::TLM_ADDRESS_ERROR_RESPONSE && fault == NESTOR_FAULT_FL_ENTRY_NOT_PRESENT,
        "page 1 faults after the invalidation");
  CHECK(!request_dmi(kIova + kPage, &dmi_cache[0]), "no new DMI for the unmapped page");

  // 7. A global invalidation revokes everything that is left.
  nestor_inv_op all{};
  all.cache = NESTOR_CACHE_IOTLB | NESTOR_CACHE_PAGING | NESTOR_CACHE_PASID;
  all.scope = NESTOR_SCOPE_GLOBAL;
  CHECK(iommu->invalidate(all) == 0, "global invalidation");
  CHECK(!dmi_cache[1].valid && iommu->dmi_grants() == 0, "global invalidation revokes page 2");
  CHECK(iommu->revocations() == 2 && revoked_calls == 2, "exactly two revocations");

  // The fault log has what the emulator would report.
  nestor_fault_record rec[8];
  const int n = nestor_fault_log_drain(engine, rec, 8, nullptr);
  // Three faulting transactions, plus the refused DMI request: its translation faulted too.
  CHECK(n == 4, "four faults logged");
  for (int i = 0; i < n; ++i)
    std::printf("DMAR: [%s PASID 0x%x] Request device [%02x:%02x.%d] fault addr 0x%" PRIx64
                " [fault reason 0x%02x] %s\n",
                (rec[i].access & NESTOR_ACCESS_WRITE) ? "DMA Write" : "DMA Read",
                unsigned(rec[i].pasid), rec[i].source_id >> 8, (rec[i].source_id >> 3) & 0x1f,
                rec[i].source_id & 7, rec[i].address, unsigned(rec[i].reason),
                nestor_fault_name(rec[i].reason));
  sc_core::sc_stop();
}

struct EngineDeleter {
  void operator()(nestor_engine *e) const { nestor_engine_destroy(e); }
};

}  // namespace

int sc_main(int, char *[]) {
  std::unique_ptr<nestor_engine, EngineDeleter> engine(nestor_engine_create(nullptr));
  if (!engine) return 1;
  nestor_engine *e = engine.get();
  Memory mem("memory");
  // One memory, two views: TLM transactions and nestor's table walks see the same bytes.
  CHECK(nestor_mem_add_host_ram(e, 0, kRamSize, mem.bytes()) == 0, "add_host_ram");
  NestorIommu iommu("iommu", e);
  Device dev("device");
  dev.socket.bind(iommu.dev_socket);
  iommu.mem_socket.bind(mem.socket);
  dev.iommu = &iommu;
  dev.engine = e;

  // Driver: root -> context (00:02.0) -> PASID directory -> PASID table (PASID 5, first-level).
  Tables tables{e};
  g_tables = &tables;
  const uint64_t root = tables.alloc(), ctx = tables.alloc(), dir = tables.alloc(),
                 ptable = tables.alloc();
  g_fl_root = tables.alloc();
  tables.put(root + 0 * 16, ctx | 1);
  tables.put(ctx + (kSid & 0x7f) * 32, dir | 0x8 | 0x1);  // PASID enable, present, PDTS 0
  tables.put(dir + (kPasid >> 6) * 8, ptable | 1);
  const uint64_t pe = ptable + (kPasid & 63) * 64;
  tables.put(pe, 1u | (1u << 6));  // present, PGTT first-level
  tables.put(pe + 8, kDid);
  tables.put(pe + 16, g_fl_root);  // 4-level, user requests only
  // Pages 0..3 -> data pages 0, 5, 6, 7 (page 3 read-only); everything user-accessible.
  const uint64_t data_page[4] = {0, 5, 6, 7};
  for (uint64_t p = 0; p < 4; ++p)
    tables.put(tables.leaf_slot(g_fl_root, kIova + p * kPage),
               (kDataHpa + data_page[p] * kPage) | 0x5 | (p == 3 ? 0 : 0x2));
  CHECK(nestor_set_root_table(e, root) == 0, "set_root_table");

  sc_core::sc_start();
  if (g_failures) {
    std::fprintf(stderr, "systemc_iommu: %d check(s) failed\n", g_failures);
    return 1;
  }
  std::printf("systemc_iommu: all checks passed\n");
  return 0;
}
