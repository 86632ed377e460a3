#include "nestor/invq/batch.h"

#include <algorithm>
#include <bit>
#include <unordered_map>

namespace nestor::invq {

namespace {

int scope_rank(Scope scope) {
  switch (scope) {
    case Scope::kGlobal:
      return 4;
    case Scope::kDomain:
    case Scope::kDevice:
      return 3;
    case Scope::kPasid:
      return 2;
    case Scope::kRange:
      return 1;
  }
  return 0;
}

uint64_t range_end_page(const InvalidationOp &op) {
  return (op.addr >> kPageShift) + op.npages;
}

// Clears the fields covers() ignores for this scope, so equivalent ops compare equal. In
// place and field by field: it runs on every op of every batch.
void canonicalize(InvalidationOp &op) {
  const bool devtlb_only = op.caches == kCacheDevTlb;
  const bool has_devtlb = (op.caches & kCacheDevTlb) != 0;
  if (op.scope != Scope::kRange) {
    op.addr = 0;
    op.npages = 0;
    op.leaf = false;
    op.addr_is_gpa = false;
  }
  if (op.scope != Scope::kDevice) op.function_mask = 0;
  switch (op.scope) {
    case Scope::kGlobal:
      op.did = 0;
      [[fallthrough]];
    case Scope::kDomain:
      op.source_id = 0;
      op.pasid = kNoPasid;
      op.pfsid = 0;
      op.max_invs_pending = 0;
      op.devtlb_global = false;
      break;
    case Scope::kDevice:
      op.did = 0;
      op.pasid = kNoPasid;
      break;
    case Scope::kPasid:
    case Scope::kRange:
      if (op.scope == Scope::kRange && op.addr_is_gpa) {
        op.source_id = 0;
        op.pasid = kNoPasid;
        break;
      }
      if (!has_devtlb) op.source_id = 0;
      if (devtlb_only) op.did = 0;
      break;
  }
}

// Every field of an op packed into words that compare in one order: scope rank first (widest
// first, the order ops are applied in), then everything that must be equal for two ranges to
// merge, then address ascending, length descending and the leaf flag. Equal ops are adjacent,
// ranges that may merge are adjacent and in address order, and ranges come last, so one sort
// serves dedupe, merge_ranges and the application order. Building the 13-field tuples this
// replaced in every comparison was most of a batch's coalescing time.
struct OrderKey {
  uint64_t group_hi, group_lo, addr, npages_desc;
  bool leaf;
  friend auto operator<=>(const OrderKey &, const OrderKey &) = default;
  bool same_group(const OrderKey &o) const {
    return group_hi == o.group_hi && group_lo == o.group_lo;
  }
};

OrderKey order_key(const InvalidationOp &op) {
  const uint64_t rank_desc = 255u - unsigned(scope_rank(op.scope));
  return OrderKey{
      .group_hi = rank_desc << 56 | uint64_t(op.caches) << 48 | uint64_t(op.did) << 32 |
                  uint64_t(op.source_id) << 16 | uint64_t(op.function_mask) << 8 |
                  op.max_invs_pending,
      .group_lo = uint64_t(op.pasid) << 32 | uint64_t(op.pfsid) << 16 | uint64_t(op.scope) << 8 |
                  uint64_t(op.addr_is_gpa) << 1 | op.devtlb_global,
      .addr = op.addr,
      .npages_desc = ~op.npages,
      .leaf = op.leaf,
  };
}

uint64_t hash_key(const OrderKey &k) {
  // Multiply-xorshift over the words; only the table index depends on it.
  uint64_t h = k.group_hi * 0x9E3779B97F4A7C15ull;
  h ^= (k.group_lo + (h >> 29)) * 0xBF58476D1CE4E5B9ull;
  h ^= (k.addr + (h >> 31)) * 0x94D049BB133111EBull;
  h ^= (k.npages_desc ^ uint64_t(k.leaf)) + (h >> 27);
  return h ^ (h >> 32);
}

// The keyed ops to sort. A storm repeats a few scope descriptors many times over (511
// PASID-selective descriptors naming 64 PASIDs, round robin): dropping the repeats through a
// hash table first leaves a short array to sort, where sorting all of them was a third of
// such a batch's time. Small batches sort as they are.
void keys_without_repeats(const std::vector<InvalidationOp> &ops,
                          std::vector<std::pair<OrderKey, uint32_t>> &keyed) {
  constexpr size_t kSmall = 32;
  const size_t n = ops.size();
  keyed.reserve(n);
  if (n <= kSmall) {
    for (uint32_t i = 0; i < n; ++i) keyed.emplace_back(order_key(ops[i]), i);
    return;
  }
  const size_t mask = std::bit_ceil(2 * n) - 1;
  std::vector<uint32_t> slots(mask + 1, 0);  // 1 + index into keyed; 0 empty
  for (uint32_t i = 0; i < n; ++i) {
    const OrderKey key = order_key(ops[i]);
    for (size_t h = hash_key(key) & mask;; h = (h + 1) & mask) {
      if (slots[h] == 0) {
        keyed.emplace_back(key, i);
        slots[h] = uint32_t(keyed.size());
        break;
      }
      if (keyed[slots[h] - 1].first == key) break;  // a repeat: equal keys are equal ops
    }
  }
}

// Keys are built once per op, not twice per comparison, and every field of an op is in its
// key, so equal keys are equal ops.
void sort_and_dedupe(std::vector<InvalidationOp> &ops) {
  if (ops.size() < 2) return;
  // A driver often queues its pages in address order: then there is nothing to reorder or
  // drop (strictly ascending keys), and neither the sort (a quarter of such a batch's
  // coalescing) nor its arrays are needed. One key at a time, so that case allocates nothing.
  OrderKey previous = order_key(ops[0]);
  bool ascending = true;
  for (size_t i = 1; i < ops.size() && ascending; ++i) {
    const OrderKey key = order_key(ops[i]);
    ascending = previous < key;
    previous = key;
  }
  if (ascending) return;
  // Local arrays, not per-thread ones: the processor's destructor may coalesce at exit, after
  // the exiting thread's thread_local objects are gone (fuzz_capi caught it).
  std::vector<std::pair<OrderKey, uint32_t>> keyed;
  keys_without_repeats(ops, keyed);
  std::sort(keyed.begin(), keyed.end());
  std::vector<InvalidationOp> sorted;
  sorted.reserve(keyed.size());
  for (size_t k = 0; k < keyed.size(); ++k) {
    if (k > 0 && keyed[k].first == keyed[k - 1].first) continue;
    sorted.push_back(ops[keyed[k].second]);
  }
  ops.swap(sorted);
}

// Strips from every op the cache bits a wider op of the batch already covers (by covers():
// a global op every narrower one; a domain op the domain-tagged caches of the domain's PASID
// and range ops, every cache of its GPA ranges; a device op the device-TLB bits of matching
// requesters; a PASID op its ranges' caches of the same domain or requester). The wider ops
// are folded into unions of cache bits per tag, so each op costs a few lookups rather than a
// pass over every wider op: a batch of 511 device-selective context ops spent three quarters
// of its time in the pairwise version. CoalesceProperty checks the result against covers().
void absorb(std::vector<InvalidationOp> &ops) {
  // An op is stripped only by a strictly wider one (below: global strips ranks < 4, domain and
  // device ranks < 3, PASID rank 1). Most batches of a storm are all one rank (all ranges, all
  // device-selective context flushes): then the maps below are not even built.
  int low = 4, high = 0;
  for (const InvalidationOp &op : ops) {
    low = std::min(low, scope_rank(op.scope));
    high = std::max(high, scope_rank(op.scope));
  }
  if (low == high) return;
  uint8_t global = 0;
  std::unordered_map<uint16_t, uint8_t> by_domain;     // did
  std::unordered_map<uint32_t, uint8_t> by_device[4];  // [fm] sid with fm bits cleared
  std::unordered_map<uint64_t, uint8_t> by_pasid_did, by_pasid_sid;  // pasid << 32 | did or sid
  auto device_key = [](uint16_t sid, unsigned fm) {
    const unsigned ignored_bits = fm > 3 ? 3u : fm;
    return uint32_t(sid & ~(((1u << ignored_bits) - 1u) << (3u - ignored_bits)));
  };
  bool any = false;
  for (const InvalidationOp &op : ops) {
    switch (op.scope) {
      case Scope::kGlobal:
        global |= op.caches;
        break;
      case Scope::kDomain:
        by_domain[op.did] |= op.caches;
        break;
      case Scope::kDevice: {
        const unsigned fm = op.function_mask > 3 ? 3u : op.function_mask;
        by_device[fm][device_key(op.source_id, fm)] |= op.caches;
        break;
      }
      case Scope::kPasid:
        by_pasid_did[uint64_t(op.pasid) << 32 | op.did] |= op.caches;
        by_pasid_sid[uint64_t(op.pasid) << 32 | op.source_id] |= op.caches;
        break;
      case Scope::kRange:
        continue;
    }
    any = true;
  }
  if (!any) return;
  auto lookup = [](const auto &map, auto key) -> uint8_t {
    const auto it = map.find(key);
    return it == map.end() ? 0 : it->second;
  };
  const uint8_t sid_bits = kCacheDevTlb, did_bits = static_cast<uint8_t>(~kCacheDevTlb);
  for (InvalidationOp &op : ops) {
    const int rank = scope_rank(op.scope);
    if (rank >= 4) continue;
    const bool gpa = op.scope == Scope::kRange && op.addr_is_gpa;
    uint8_t stripped = global;
    if (rank < 3) {
      // Domain ops take every cache of a GPA range of their domain, domain-tagged caches
      // otherwise; device ops only device TLBs of matching requesters, never of GPA ranges.
      stripped |= lookup(by_domain, op.did) & (gpa ? uint8_t(0xFF) : did_bits);
      if (!gpa)
        for (unsigned fm = 0; fm < 4; ++fm)
          stripped |= lookup(by_device[fm], device_key(op.source_id, fm)) & sid_bits;
    }
    if (rank < 2 && !gpa) {
      stripped |= lookup(by_pasid_did, uint64_t(op.pasid) << 32 | op.did) & did_bits;
      stripped |= lookup(by_pasid_sid, uint64_t(op.pasid) << 32 | op.source_id) & sid_bits;
    }
    op.caches &= static_cast<uint8_t>(~stripped);
  }
  std::erase_if(ops, [](const InvalidationOp &op) { return op.caches == 0; });
}

// Runs on the order sort_and_dedupe leaves (absorb only erases): the ranges are the tail, and
// the ranges of one group are adjacent in address order, so one pass merges in place.
void merge_ranges(std::vector<InvalidationOp> &ops) {
  size_t out =
      size_t(std::find_if(ops.begin(), ops.end(),
                          [](const InvalidationOp &op) { return op.scope == Scope::kRange; }) -
             ops.begin());
  const size_t first_range = out;
  OrderKey current_key{};  // of ops[out - 1]; merging never changes its group
  for (size_t i = first_range; i < ops.size(); ++i) {
    const InvalidationOp next = ops[i];
    const OrderKey next_key = order_key(next);
    if (out == first_range || !current_key.same_group(next_key)) {
      ops[out++] = next;
      current_key = next_key;
      continue;
    }
    InvalidationOp &current = ops[out - 1];
    const uint64_t current_end = range_end_page(current);
    const uint64_t next_start = next.addr >> kPageShift;
    const uint64_t next_end = range_end_page(next);
    // absorb() may have stripped cache bits since the sort, moving a range into a group it was
    // not sorted with: one that starts below `current` is kept apart, not merged as if it
    // followed it (merging it lost its pages below current's start: a domain op with the
    // IOTLB bit, a range with IOTLB and device-TLB bits, and a device-TLB range above it).
    if (next_start > current_end || next_start < (current.addr >> kPageShift)) {
      ops[out++] = next;
      continue;
    }
    // A leaf range leaves paging-structure caches alone; widening a non-leaf range over it
    // would flush more than asked, so with paging caches the flags must agree unless one
    // range contains the other.
    const bool paging = (current.caches & kCachePaging) != 0;
    if (!paging || current.leaf == next.leaf) {
      const uint64_t end = std::max(current_end, next_end);
      current.npages = end - (current.addr >> kPageShift);
      current.leaf = current.leaf && next.leaf;
    } else if (!current.leaf && next_end <= current_end) {
      // next is inside a non-leaf range: nothing to add.
    } else if (!next.leaf && next_start == (current.addr >> kPageShift) &&
               next_end >= current_end) {
      current = next;
    } else {
      ops[out++] = next;
    }
  }
  ops.resize(out);
}

uint64_t promote(std::vector<InvalidationOp> &ops, uint64_t threshold) {
  if (threshold == 0) return 0;
  uint64_t promoted = 0;
  for (InvalidationOp &op : ops) {
    if (op.scope != Scope::kRange || op.npages <= threshold) continue;
    op.scope = op.addr_is_gpa ? Scope::kDomain : Scope::kPasid;
    canonicalize(op);
    ++promoted;
  }
  return promoted;
}

// Ops that differ only in their cache bits become one op with the union of the bits, kept at
// the first one's place. Sorting indices by everything but the bits finds them in O(n log n):
// a pairwise search made a 511-op batch with nothing to merge cost 4x its own application.
void combine_caches(std::vector<InvalidationOp> &ops) {
  if (ops.size() < 2) return;
  // Ops with one set of cache bits have nothing to combine: the usual storm batch.
  if (std::all_of(ops.begin(), ops.end(),
                  [&](const InvalidationOp &op) { return op.caches == ops[0].caches; }))
    return;
  // Sorting (key without the cache bits, index) pairs keeps equal keys in input order, so
  // the first op of each run is the one that stays.
  std::vector<std::pair<OrderKey, uint32_t>> keyed(ops.size());
  for (uint32_t i = 0; i < ops.size(); ++i) {
    InvalidationOp op = ops[i];
    op.caches = 0;
    keyed[i] = {order_key(op), i};
  }
  std::sort(keyed.begin(), keyed.end());
  // Every field but the cache bits is in the key, so equal keys are ops that differ only there.
  bool any = false;
  for (size_t k = 1, first = 0; k < keyed.size(); ++k) {
    if (keyed[k].first == keyed[first].first) {
      ops[keyed[first].second].caches |= ops[keyed[k].second].caches;
      ops[keyed[k].second].caches = 0;  // folded into the first; dropped below
      any = true;
    } else {
      first = k;
    }
  }
  if (any) std::erase_if(ops, [](const InvalidationOp &op) { return op.caches == 0; });
}

}  // namespace

std::vector<InvalidationOp> coalesce(std::span<const InvalidationOp> input,
                                     const CoalesceOptions &options, CoalesceCounters *counters) {
  std::vector<InvalidationOp> ops;
  coalesce_into(input, options, counters, ops);
  return ops;
}

void coalesce_into(std::span<const InvalidationOp> input, const CoalesceOptions &options,
                   CoalesceCounters *counters, std::vector<InvalidationOp> &ops) {
  ops.clear();
  ops.reserve(input.size());
  for (const InvalidationOp &op : input) {
    if ((op.caches & kAllCaches) == 0) continue;  // touches no cache
    InvalidationOp cleaned = op;
    cleaned.caches &= kAllCaches;
    if (cleaned.scope == Scope::kRange && cleaned.npages == 0) continue;
    if (options.enabled) {
      canonicalize(cleaned);
      // A storm repeats descriptors back to back: drop a repeat before it is stored.
      if (!ops.empty() && ops.back() == cleaned) continue;
    }
    ops.push_back(cleaned);
  }
  uint64_t promotions = 0;
  // One op (the op-and-wait pattern of a driver that waits after every invalidation) has
  // nothing to merge with; only promotion can change it.
  if (options.enabled && ops.size() == 1) {
    promotions += promote(ops, options.promote_threshold_pages);
  } else if (options.enabled) {
    promotions += promote(ops, options.promote_threshold_pages);
    sort_and_dedupe(ops);
    absorb(ops);
    merge_ranges(ops);
    // Merged ranges may now cross the threshold, and what they become may absorb others.
    const uint64_t late = promote(ops, options.promote_threshold_pages);
    if (late != 0) {
      promotions += late;
      sort_and_dedupe(ops);
      absorb(ops);
    }
    // Keeps the survivors' relative order, which is already widest scope first.
    combine_caches(ops);
  }
  if (counters != nullptr) {
    counters->input_ops += input.size();
    counters->output_ops += ops.size();
    counters->promotions += promotions;
  }
}

}  // namespace nestor::invq
