#include "nestor/vtd/structures_writer.h"

#include <array>
#include <cerrno>
#include <cstring>

#include "nestor/walkers/second_level.h"

namespace nestor {

uint64_t GuestTableSpace::alloc_table() {
  uint64_t gpa;
  {
    std::lock_guard lock(mu_);
    if (next_ + 4096 > end_) return 0;
    gpa = next_;
    next_ += 4096;
  }
  uint64_t hpa;
  if (!resolve(gpa, &hpa)) return 0;
  static const uint8_t zero[4096] = {};
  return mem_.write(hpa, zero, sizeof zero) == 0 ? gpa : 0;
}

bool GuestTableSpace::resolve(uint64_t gpa, uint64_t *hpa) {
  sl::Result r = sl::walk(mem_, slc_, gpa, kAccessRead);
  if (!r.ok) return false;
  *hpa = r.t.out;
  return true;
}

bool GuestTableSpace::read(uint64_t gpa, uint64_t *v) {
  uint64_t hpa;
  return resolve(gpa, &hpa) && mem_.read64(hpa, v);
}

bool GuestTableSpace::write(uint64_t gpa, uint64_t v) {
  uint64_t hpa;
  return resolve(gpa, &hpa) && mem_.write64(hpa, v);
}

StructuresWriter::StructuresWriter(MachineMemory &mem, PageAllocator &pages)
    : mem_(mem), pages_(pages) {
  root_ = pages_.alloc();
}

uint64_t StructuresWriter::context_entry_address(uint16_t sid, bool create) {
  if (!root_) return 0;
  const uint8_t devfn = uint8_t(sid & 0xFF);
  const uint64_t half_pa = root_ + uint64_t(sid >> 8) * 16 + (devfn >= 128 ? 8 : 0);
  uint64_t half;
  if (!mem_.read64(half_pa, &half)) return 0;
  if (!(half & vtd::kRootPresent)) {
    if (!create) return 0;
    const uint64_t table = pages_.alloc();
    if (!table) return 0;
    half = table | vtd::kRootPresent;
    if (!mem_.write64(half_pa, half)) return 0;
  }
  return (half & vtd::kAddr) + uint64_t(devfn & 0x7F) * 32;
}

int StructuresWriter::attach(uint16_t sid, uint32_t rid_pasid, bool pasid_enable, uint8_t pdts,
                             bool rid_priv) {
  if (pdts > 7) return -EINVAL;
  const uint64_t ce = context_entry_address(sid, true);
  if (!ce) return -ENOMEM;
  Device &d = devices_[sid];
  if (!d.pasid_dir || d.pdts != pdts) {
    // A directory of 2^(pdts+7) 8-byte entries spans 2^(pdts+10) bytes: one page up to
    // PDTS 2, 32 pages for the full 20-bit space. PASID tables behind it come on demand.
    const uint64_t pages = pasid_dir_pages(pdts);
    const uint64_t first = pages_.alloc_contiguous(pages);
    if (!first) return -ENOMEM;
    d.pasid_dir = first;
    d.pdts = pdts;
  }
  uint64_t w[4];
  vtd::encode_context(w, d.pasid_dir, pdts, pasid_enable, rid_pasid, rid_priv);
  // Write the low word last so the entry becomes present only once complete.
  for (int i = 3; i >= 0; --i)
    if (!mem_.write64(ce + 8 * unsigned(i), w[i])) return -EFAULT;
  return 0;
}

int StructuresWriter::detach(uint16_t sid) {
  const uint64_t ce = context_entry_address(sid, false);
  if (!ce) return -ENOENT;
  for (int i = 0; i < 4; ++i)
    if (!mem_.write64(ce + 8 * unsigned(i), 0)) return -EFAULT;
  return 0;
}

uint64_t StructuresWriter::pasid_entry_address(uint16_t sid, uint32_t pasid) {
  auto it = devices_.find(sid);
  if (it == devices_.end()) return 0;
  if ((pasid >> 6) >= (1u << (it->second.pdts + 7))) return 0;
  uint64_t pde;
  if (!mem_.read64(it->second.pasid_dir + uint64_t(pasid >> 6) * 8, &pde) ||
      !(pde & vtd::kPdePresent))
    return 0;
  return (pde & vtd::kAddr) + uint64_t(pasid & 63) * 64;
}

int StructuresWriter::set_pasid_entry(uint16_t sid, uint32_t pasid, const vtd::PasidEntry &pe) {
  auto it = devices_.find(sid);
  if (it == devices_.end()) return -ENOENT;
  if ((pasid >> 6) >= (1u << (it->second.pdts + 7))) return -EINVAL;
  const uint64_t pde_pa = it->second.pasid_dir + uint64_t(pasid >> 6) * 8;
  uint64_t pde;
  if (!mem_.read64(pde_pa, &pde)) return -EFAULT;
  if (!(pde & vtd::kPdePresent)) {
    const uint64_t table = pages_.alloc();
    if (!table) return -ENOMEM;
    if (!mem_.write64(pde_pa, vtd::encode_pasid_dir(table))) return -EFAULT;
    pde = vtd::encode_pasid_dir(table);
  }
  const uint64_t pe_pa = (pde & vtd::kAddr) + uint64_t(pasid & 63) * 64;
  uint64_t w[8];
  vtd::encode_pasid_entry(w, pe);
  // Clear present first, fill the rest, then publish word 0: a concurrent walker sees either
  // the old entry, a not-present entry, or the complete new one.
  if (!mem_.write64(pe_pa, 0)) return -EFAULT;
  for (int i = 7; i >= 1; --i)
    if (!mem_.write64(pe_pa + 8 * unsigned(i), w[i])) return -EFAULT;
  return mem_.write64(pe_pa, w[0]) ? 0 : -EFAULT;
}

uint64_t StructuresWriter::unlink_pasid_table_if_empty(uint16_t sid, uint32_t pasid) {
  auto it = devices_.find(sid);
  if (it == devices_.end() || (pasid >> 6) >= (1u << (it->second.pdts + 7))) return 0;
  const uint64_t pde_pa = it->second.pasid_dir + uint64_t(pasid >> 6) * 8;
  uint64_t pde;
  if (!mem_.read64(pde_pa, &pde) || !(pde & vtd::kPdePresent)) return 0;
  const uint64_t table = pde & vtd::kAddr;
  // One read of the page, not 512 entry reads: unbind does this every time.
  std::array<uint64_t, 512> words;
  if (mem_.read(table, words.data(), sizeof words) != 0) return 0;
  // OR, not a test per word: under coverage instrumentation each test is a callback.
  uint64_t any = 0;
  for (uint64_t w : words) any |= w;
  if (any != 0) return 0;
  return mem_.write64(pde_pa, 0) ? table : 0;
}

int StructuresWriter::clear_pasid_entry(uint16_t sid, uint32_t pasid) {
  const uint64_t pe_pa = pasid_entry_address(sid, pasid);
  if (!pe_pa) return -ENOENT;
  for (int i = 0; i < 8; ++i)
    if (!mem_.write64(pe_pa + 8 * unsigned(i), 0)) return -EFAULT;
  return 0;
}

}  // namespace nestor
