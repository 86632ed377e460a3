// VT-d's capability and extended capability registers (spec 11.4.2, 11.4.3) as a vIOMMU built
// on the engine presents them: what the walkers, the structure decoders and the queue
// implement, for a personality configuration. Bit positions as Linux's cap_*/ecap_* macros in
// drivers/iommu/intel/iommu.h.
#pragma once

#include <algorithm>
#include <cstdint>

#include "nestor/vtd/descriptor.h"
#include "nestor/vtd/personality.h"

namespace nestor {

// CAP register bits (Linux cap_* macros) used by vtd::cap_register().
namespace cap_bits {
inline constexpr unsigned kNdShift = 0;      // 2:0, 2^(4+2*ND) domain ids
inline constexpr unsigned kSagawShift = 8;   // 12:8
inline constexpr unsigned kMgawShift = 16;   // 21:16, MGAW - 1
inline constexpr unsigned kSllpsShift = 34;  // 37:34, bit 0 2M, bit 1 1G
inline constexpr uint64_t kPsi = 1ull << 39;
inline constexpr unsigned kNfrShift = 40;   // 47:40, fault recording registers - 1
inline constexpr unsigned kMamvShift = 48;  // 53:48
inline constexpr uint64_t kFl1gp = 1ull << 56;
inline constexpr uint64_t kFl5lp = 1ull << 60;
}  // namespace cap_bits

// ECAP register bits (Linux ecap_* macros) used by vtd::ecap_register().
namespace ecap_bits {
inline constexpr uint64_t kC = 1ull << 0;
inline constexpr uint64_t kQi = 1ull << 1;
inline constexpr uint64_t kDt = 1ull << 2;
inline constexpr uint64_t kPt = 1ull << 6;
inline constexpr uint64_t kNest = 1ull << 26;
inline constexpr uint64_t kErs = 1ull << 30;
inline constexpr uint64_t kSrs = 1ull << 31;
inline constexpr uint64_t kEafs = 1ull << 34;
inline constexpr unsigned kPssShift = 35;  // 39:35, PASID bits - 1
inline constexpr uint64_t kPasid = 1ull << 40;
inline constexpr uint64_t kSmts = 1ull << 43;
inline constexpr uint64_t kSlads = 1ull << 45;
inline constexpr uint64_t kSlts = 1ull << 46;
inline constexpr uint64_t kFlts = 1ull << 47;
}  // namespace ecap_bits

// Widest second-level input width the SAGAW mask allows (39/48/57), 0 if none.
constexpr uint8_t max_guest_address_width(uint8_t sagaw) {
  return (sagaw & 8) ? 57 : (sagaw & 4) ? 48 : (sagaw & 2) ? 39 : 0;
}

namespace vtd {

// `fault_records`: fault recording registers (NFR + 1, clamped to 1..256); `max_domain_id`: the
// highest DID the host may allocate (ND covers it).
constexpr uint64_t cap_register(const VtdPersonality::Config &c, uint64_t fault_records,
                                uint16_t max_domain_id = 0xFFFF) {
  using namespace cap_bits;
  uint64_t nd = 0;  // smallest ND whose 2^(4+2*ND) ids cover [0, max_domain_id]
  while (nd < 6 && (uint64_t{1} << (4 + 2 * nd)) <= max_domain_id) ++nd;
  const uint8_t mgaw = max_guest_address_width(c.sagaw);
  const uint64_t nfr = std::clamp<uint64_t>(fault_records, 1, 256) - 1;
  uint64_t cap = (nd << kNdShift) | (uint64_t(c.sagaw & 0x1F) << kSagawShift) |
                 (uint64_t(mgaw ? mgaw - 1 : 0) << kMgawShift) | kPsi | (nfr << kNfrShift) |
                 (uint64_t(invq::DecodeOptions{}.mamv & 0x3F) << kMamvShift);
  if (c.second_level_2m) cap |= uint64_t{1} << kSllpsShift;
  if (c.second_level_1g) cap |= uint64_t{2} << kSllpsShift;
  if (c.first_level_1g) cap |= kFl1gp;
  if (c.first_level_5) cap |= kFl5lp;
  return cap;
}

constexpr uint64_t ecap_register(const VtdPersonality::Config &c) {
  using namespace ecap_bits;
  // Coherent structure reads, queued invalidation with device-TLB descriptors, pass-through,
  // nesting, SRE/ERE/EAFE in PASID entries, scalable mode with both table formats and
  // second-level A/D: everything the engine's walkers and invq implement.
  uint64_t ecap =
      kC | kQi | kDt | kPt | kNest | kErs | kSrs | kEafs | kSmts | kSlads | kSlts | kFlts;
  if (c.pasid_bits) ecap |= kPasid | (uint64_t(c.pasid_bits - 1) & 0x1F) << kPssShift;
  return ecap;
}

}  // namespace vtd
}  // namespace nestor
