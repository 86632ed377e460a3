// The seam between the generic translation engine and an IOMMU architecture (a "personality").
//
// The generic engine (translate pipeline, IOTLB and paging-structure caches, fills, resolution
// memos, drain, fault log, stats) knows requests, walk contexts and the stage walkers. A
// personality knows how its architecture turns a request into a walk context: which in-memory
// structures name the device's address space (VT-d: root, context, PASID directory and PASID
// entries), which stages to walk with which formats, and the cache tags the walk fills under.
// It is a compile-time parameter (the Personality concept below), so nothing on the hit path or
// per table-entry read goes through a virtual call. VT-d is the first one
// (nestor/vtd/personality.h); docs/ARCHITECTURE.md lists what a second one adds.
#pragma once

#include <concepts>
#include <cstdint>

#include "nestor/walkers/first_level.h"
#include "nestor/walkers/second_level.h"
#include "nestor/walkers/types.h"

namespace nestor {

// A device request as every personality receives it. VT-d: source-id and PASID; other
// architectures map theirs onto the same two tags (SMMUv3 StreamID/SubstreamID, the RISC-V
// IOMMU's device_id/process_id).
struct Request {
  uint16_t source_id = 0;  // bus << 8 | devfn
  bool has_pasid = false;  // false: the context entry's RID_PASID applies
  uint32_t pasid = 0;
  uint64_t iova = 0;
  uint8_t access = kAccessRead;  // AccessBits
  bool privileged = false;       // supervisor request (needs SRE)
};

// The fault code an architecture reports (VT-d: the fault reason of its fault recording
// registers), 8 bits. Generic code only stores and copies it; 0 means no fault. What a value
// means is the personality's: VT-d names its codes as this type's enumerators
// (nestor/vtd/faults.h); another personality would name its own as constants of the type.
enum class FaultReason : uint8_t;

// A fault as the engine reports and records it: the walker's stage, level and address with the
// personality's code for what went wrong.
struct Fault {
  FaultReason reason{};
  FaultStage stage = FaultStage::kNone;
  uint8_t level = 0;     // paging level (1 = leaf table) or 0 for structures
  uint64_t address = 0;  // iova for first-level/input faults, GPA for second-level faults
};

struct Result {
  bool ok = false;
  Translation t;  // out = HPA of iova; page_shift; perms; level
  Fault fault;
};

// Which stages translate an address space.
enum class StageSet : uint8_t {
  kPassThrough,  // input address is the output address (bounded by the host width)
  kSecondOnly,   // one stage, shared by every address space of the domain
  kFirstOnly,    // one stage, private to the address space
  kNested,       // first stage whose table and output addresses go through the second
};

// What a personality resolves a request to: all the generic pipeline needs to walk, to check a
// cached translation's permissions, and to tag what it caches. Built once per resolution (and
// memoised with it), never per translation.
struct WalkContext {
  StageSet stages = StageSet::kSecondOnly;
  // Cache tags. `domain` is shared by every address space whose second stage is the same
  // tables (VT-d: DID); `space` tells apart the first stages within it (VT-d: PASID).
  uint16_t domain = 0;
  uint32_t space = 0;
  sl::Config slc;           // host_width also bounds pass-through addresses
  fl::Config flc;           // its SRE/WPE/ERE/SMEP also re-judge IOTLB hits; slc.execute_enable too
  bool privileged = false;  // the request's effective privilege (VT-d: RID_PRIV without PASID)
  bool fpd = false;         // faults of this address space are not recorded
};

// The compile-time seam. walk_fault() names a walker's fault in the architecture's codes; it is
// the only place a walk failure becomes an architectural fault. resolve() runs on every translation
// that has no memoised resolution: it may use and fill the personality's own structure caches with
// `stamp` (taken before any structure was read, so that an invalidation racing the fill refuses
// it). On failure it sets *fault and *fpd (whether fault recording is disabled for it) and returns
// false.
template <class P>
concept Personality = requires(P &p, uint64_t stamp, const Request &req, WalkContext *ctx,
                               Fault *fault, bool *fpd, const WalkFault &walk) {
  { p.resolve(stamp, req, ctx, fault, fpd) } -> std::same_as<bool>;
  { P::walk_fault(walk) } -> std::same_as<Fault>;
};

}  // namespace nestor
