// System-wide PASID allocation (the SYSWIDE_PASID duty): PASIDs come from one space shared by
// every device, handed to owners (typically one per VM) under per-owner quotas, with an
// optional guest-PASID -> host-PASID translation for guests whose PASID namespace differs.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "nestor/export.h"

namespace nestor {

// A bitmap with 64-ary summary levels: level 0 holds one bit per item (1 = set), each higher
// level one bit per word below (1 = that word has a set bit). Finding the next set bit costs
// one word per level (4 words for 2^20 items) instead of a linear scan. Not thread-safe.
//
// Level 0 is kept in chunks allocated on their first change; a missing chunk reads as the
// uniform fill (all clear after construction, all set after set_all()). Every BindLayer and
// every PasidAllocator holds a map over its whole space (2^20 PASIDs: 128 KiB of level 0), so
// constructing and filling one costs what the summaries cost (~2 KiB), not the whole space.
class NESTOR_CXX_API HierarchicalBitmap {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  explicit HierarchicalBitmap(uint32_t nbits);  // all bits clear
  uint32_t size() const { return nbits_; }
  bool test(uint32_t i) const { return (word0(i >> 6) >> (i & 63)) & 1; }
  void set(uint32_t i);
  void clear(uint32_t i);
  void set_all();  // O(summary words): level 0 becomes a uniform fill again
  // Lowest set bit >= from, or kNone.
  uint32_t find_next(uint32_t from) const;

 private:
  static constexpr size_t kChunkWords = 64;  // 4096 items per level-0 chunk
  using Chunk = std::array<uint64_t, kChunkWords>;
  uint64_t word0(uint64_t w) const {
    const std::unique_ptr<Chunk> &c = chunks_[w / kChunkWords];
    return c ? (*c)[w % kChunkWords] : fill_;
  }
  uint64_t &word0_mut(uint64_t w);  // materialises the chunk
  uint64_t word(size_t level, uint64_t w) const { return level ? levels_[level][w] : word0(w); }
  uint64_t &word_mut(size_t level, uint64_t w) { return level ? levels_[level][w] : word0_mut(w); }
  size_t words(size_t level) const { return level ? levels_[level].size() : words0_; }

  uint32_t nbits_;
  size_t words0_;                               // level-0 words
  uint64_t fill_ = 0;                           // what a missing level-0 chunk holds
  std::vector<std::unique_ptr<Chunk>> chunks_;  // level 0, lazily
  std::vector<std::vector<uint64_t>> levels_;   // levels_[0] unused (chunks_); back(): one word
};

class NESTOR_CXX_API PasidAllocator {
 public:
  static constexpr uint32_t kAnyPasid = 0;  // alloc(): any free PASID
  static constexpr uint32_t kNoGuestPasid = UINT32_MAX;
  static constexpr uint32_t kUnlimited = 0;  // quota

  // PASIDs are allocated from [1, 2^pasid_bits); PASID 0 is every device's RID_PASID and is
  // never handed out. pasid_bits is clamped to [1, 20].
  explicit PasidAllocator(uint8_t pasid_bits);
  PasidAllocator(const PasidAllocator &) = delete;
  PasidAllocator &operator=(const PasidAllocator &) = delete;

  uint8_t pasid_bits() const { return bits_; }
  uint32_t capacity() const { return (1u << bits_) - 1; }  // allocatable PASIDs

  // Owners. IDs start at 1 and are never reused by one allocator. Quota 0 = unlimited.
  int create_owner(uint32_t quota, uint32_t *owner);
  // -ENOENT unknown, -EBUSY while the owner still holds PASIDs.
  int destroy_owner(uint32_t owner);
  bool has_owner(uint32_t owner) const;

  // Allocates `want` (or any free PASID when want == kAnyPasid) for `owner`, recording
  // guest_pasid -> PASID unless guest_pasid == kNoGuestPasid. Errors: -ENOENT unknown owner,
  // -EINVAL want/guest PASID out of range, -EDQUOT quota reached, -EBUSY `want` taken or the
  // guest PASID already mapped by this owner, -ENOSPC no PASID left.
  int alloc(uint32_t owner, uint32_t want, uint32_t guest_pasid, uint32_t *pasid);
  // -ENOENT unknown owner, -EINVAL out of range, -EALREADY not allocated (double free),
  // -EPERM held by another owner.
  int free(uint32_t owner, uint32_t pasid);
  // Frees everything `owner` holds; returns how many (>= 0) or -ENOENT. `freed` (optional)
  // receives the PASIDs.
  int release_all(uint32_t owner, std::vector<uint32_t> *freed = nullptr);

  // Owner of `pasid`, or 0 when it is free or out of range.
  uint32_t owner_of(uint32_t pasid) const;
  // Host PASID for a guest PASID of `owner`: 0 or -ENOENT.
  int guest_to_host(uint32_t owner, uint32_t guest_pasid, uint32_t *pasid) const;
  // PASIDs `owner` holds (0 for unknown owners).
  uint32_t held(uint32_t owner) const;
  uint32_t allocated() const;

 private:
  struct Owner {
    uint32_t quota = 0;
    std::unordered_map<uint32_t, uint32_t> held;  // host PASID -> guest PASID or kNoGuest
    std::unordered_map<uint32_t, uint32_t> guest_to_host;
  };
  void release_locked(Owner &o, uint32_t pasid);

  const uint8_t bits_;
  mutable std::mutex mu_;
  HierarchicalBitmap free_;  // 1 = free
  // Allocated PASIDs only: a table over the whole space would be 4 MiB at 20 bits, written
  // for every allocator (one per BindLayer) however few PASIDs it ever hands out.
  std::unordered_map<uint32_t, uint32_t> owner_of_;
  std::unordered_map<uint32_t, Owner> owners_;
  uint32_t next_owner_ = 1;
  // Next-fit cursor: a freed PASID is not handed out again until the others have been, so a
  // PASID that a buggy owner keeps using after free is unlikely to belong to someone else yet.
  uint32_t cursor_ = 1;
  uint32_t allocated_ = 0;
};

}  // namespace nestor
