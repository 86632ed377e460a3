#include "nestor/pasid_allocator.h"

#include <bit>
#include <cerrno>

namespace nestor {

HierarchicalBitmap::HierarchicalBitmap(uint32_t nbits) : nbits_(nbits) {
  uint64_t items = nbits ? nbits : 1;
  words0_ = size_t((items + 63) / 64);
  chunks_.resize((words0_ + kChunkWords - 1) / kChunkWords);
  levels_.emplace_back();  // level 0 lives in chunks_
  items = words0_;
  while (items > 1) {
    const uint64_t words = (items + 63) / 64;
    levels_.emplace_back(words, 0);
    items = words;
  }
}

uint64_t &HierarchicalBitmap::word0_mut(uint64_t w) {
  std::unique_ptr<Chunk> &c = chunks_[w / kChunkWords];
  if (!c) {
    c = std::make_unique<Chunk>();
    c->fill(fill_);
  }
  return (*c)[w % kChunkWords];
}

void HierarchicalBitmap::set(uint32_t i) {
  uint64_t idx = i;
  for (size_t l = 0; l < levels_.size(); ++l) {
    uint64_t &w = word_mut(l, idx >> 6);
    const bool was_empty = w == 0;
    w |= uint64_t{1} << (idx & 63);
    // The summary above already says "non-empty" unless this word just became so.
    if (!was_empty) return;
    idx >>= 6;
  }
}

void HierarchicalBitmap::clear(uint32_t i) {
  uint64_t idx = i;
  for (size_t l = 0; l < levels_.size(); ++l) {
    uint64_t &w = word_mut(l, idx >> 6);
    w &= ~(uint64_t{1} << (idx & 63));
    if (w != 0) return;
    idx >>= 6;
  }
}

void HierarchicalBitmap::set_all() {
  // Level 0: a uniform all-ones fill, except a partial last word, which must not claim
  // items past the end.
  for (std::unique_ptr<Chunk> &c : chunks_) c.reset();
  fill_ = ~uint64_t{0};
  const uint64_t tail = nbits_ % 64;
  if (tail || nbits_ == 0) word0_mut(words0_ - 1) = (uint64_t{1} << tail) - 1;
  uint64_t items = words0_;
  for (size_t l = 1; l < levels_.size(); ++l) {
    std::vector<uint64_t> &level = levels_[l];
    for (size_t w = 0; w < level.size(); ++w) {
      const uint64_t n = items - w * 64;  // items covered by this word
      level[w] = n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1;
    }
    items = level.size();
  }
}

uint32_t HierarchicalBitmap::find_next(uint32_t from) const {
  if (from >= nbits_) return kNone;
  uint64_t idx = from;
  for (size_t l = 0; l < levels_.size(); ++l) {
    const uint64_t w = idx >> 6;
    if (w >= words(l)) return kNone;
    const uint64_t m = word(l, w) & (~uint64_t{0} << (idx & 63));
    if (m) {
      idx = w * 64 + uint64_t(std::countr_zero(m));
      // Every summary bit promises a non-empty word below it.
      for (size_t k = l; k > 0; --k) idx = idx * 64 + uint64_t(std::countr_zero(word(k - 1, idx)));
      return idx < nbits_ ? uint32_t(idx) : kNone;
    }
    // Nothing left in this word: continue with the next word, found through the level above.
    idx = w + 1;
  }
  return kNone;
}

PasidAllocator::PasidAllocator(uint8_t pasid_bits)
    : bits_(pasid_bits < 1    ? 1
            : pasid_bits > 20 ? 20
                              : pasid_bits),
      free_(1u << bits_) {
  free_.set_all();
  free_.clear(0);
}

int PasidAllocator::create_owner(uint32_t quota, uint32_t *owner) {
  if (!owner) return -EINVAL;
  std::lock_guard lock(mu_);
  if (next_owner_ == 0) return -ENOSPC;  // 2^32 owners created: wrapped
  const uint32_t id = next_owner_++;
  owners_[id].quota = quota;
  *owner = id;
  return 0;
}

int PasidAllocator::destroy_owner(uint32_t owner) {
  std::lock_guard lock(mu_);
  auto it = owners_.find(owner);
  if (it == owners_.end()) return -ENOENT;
  if (!it->second.held.empty()) return -EBUSY;
  owners_.erase(it);
  return 0;
}

bool PasidAllocator::has_owner(uint32_t owner) const {
  std::lock_guard lock(mu_);
  return owners_.count(owner) != 0;
}

int PasidAllocator::alloc(uint32_t owner, uint32_t want, uint32_t guest_pasid, uint32_t *pasid) {
  if (!pasid) return -EINVAL;
  const uint32_t limit = 1u << bits_;
  if (want != kAnyPasid && want >= limit) return -EINVAL;
  // Guest PASIDs live in the architectural 20-bit space whatever the host's size.
  if (guest_pasid != kNoGuestPasid && guest_pasid >= (1u << 20)) return -EINVAL;
  std::lock_guard lock(mu_);
  auto it = owners_.find(owner);
  if (it == owners_.end()) return -ENOENT;
  Owner &o = it->second;
  if (o.quota != kUnlimited && o.held.size() >= o.quota) return -EDQUOT;
  if (guest_pasid != kNoGuestPasid && o.guest_to_host.count(guest_pasid)) return -EBUSY;
  uint32_t p;
  if (want != kAnyPasid) {
    if (!free_.test(want)) return -EBUSY;
    p = want;
  } else {
    p = free_.find_next(cursor_);
    if (p == HierarchicalBitmap::kNone) p = free_.find_next(1);
    if (p == HierarchicalBitmap::kNone) return -ENOSPC;
    cursor_ = p + 1 < limit ? p + 1 : 1;
  }
  free_.clear(p);
  owner_of_.emplace(p, owner);
  o.held.emplace(p, guest_pasid);
  if (guest_pasid != kNoGuestPasid) o.guest_to_host.emplace(guest_pasid, p);
  ++allocated_;
  *pasid = p;
  return 0;
}

void PasidAllocator::release_locked(Owner &o, uint32_t pasid) {
  auto h = o.held.find(pasid);
  if (h->second != kNoGuestPasid) o.guest_to_host.erase(h->second);
  o.held.erase(h);
  owner_of_.erase(pasid);
  free_.set(pasid);
  --allocated_;
}

int PasidAllocator::free(uint32_t owner, uint32_t pasid) {
  std::lock_guard lock(mu_);
  auto it = owners_.find(owner);
  if (it == owners_.end()) return -ENOENT;
  if (pasid == 0 || pasid >= (1u << bits_)) return -EINVAL;
  const auto held_by = owner_of_.find(pasid);
  if (held_by == owner_of_.end()) return -EALREADY;
  if (held_by->second != owner) return -EPERM;
  release_locked(it->second, pasid);
  return 0;
}

int PasidAllocator::release_all(uint32_t owner, std::vector<uint32_t> *freed) {
  std::lock_guard lock(mu_);
  auto it = owners_.find(owner);
  if (it == owners_.end()) return -ENOENT;
  Owner &o = it->second;
  std::vector<uint32_t> pasids;
  pasids.reserve(o.held.size());
  for (const auto &h : o.held) pasids.push_back(h.first);
  for (uint32_t p : pasids) release_locked(o, p);
  if (freed) *freed = pasids;
  return int(pasids.size());
}

uint32_t PasidAllocator::owner_of(uint32_t pasid) const {
  std::lock_guard lock(mu_);
  const auto it = owner_of_.find(pasid);
  return it == owner_of_.end() ? 0 : it->second;
}

int PasidAllocator::guest_to_host(uint32_t owner, uint32_t guest_pasid, uint32_t *pasid) const {
  std::lock_guard lock(mu_);
  auto it = owners_.find(owner);
  if (it == owners_.end()) return -ENOENT;
  auto g = it->second.guest_to_host.find(guest_pasid);
  if (g == it->second.guest_to_host.end()) return -ENOENT;
  if (pasid) *pasid = g->second;
  return 0;
}

uint32_t PasidAllocator::held(uint32_t owner) const {
  std::lock_guard lock(mu_);
  auto it = owners_.find(owner);
  return it == owners_.end() ? 0 : uint32_t(it->second.held.size());
}

uint32_t PasidAllocator::allocated() const {
  std::lock_guard lock(mu_);
  return allocated_;
}

}  // namespace nestor
