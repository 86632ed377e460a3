// Sharded set-associative cache whose sets are read under a per-set sequence counter.
//
// Readers never lock, never allocate and never wait for a writer: a read that keeps colliding
// with writers gives up and reports a miss, which only costs the caller a walk. Writers (fills,
// page/range invalidation) serialise per set on the same counter, so no lock is shared across
// sets, let alone shards.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "nestor/caches/hash.h"
#include "nestor/caches/large_array.h"
#include "nestor/caches/seqlock_order.h"

namespace nestor::caches {

// A key built from the 64-bit words the cache compares and hashes, one store per word. Keys
// written field by field and then read as words (as lookups do) stall on a failed
// store-to-load forward; this is how the hot lookups build theirs.
template <class Key, class... W>
Key key_from_words(W... words) {
  static_assert(sizeof(Key) == 8 * sizeof...(W) && std::endian::native == std::endian::little);
  return std::bit_cast<Key>(std::array<uint64_t, sizeof...(W)>{uint64_t(words)...});
}

enum class FillResult : uint8_t {
  kInserted,  // into an empty or dead slot
  kReplaced,  // the key was present; its payload and stamp were overwritten
  kEvicted,   // a live entry of another key was displaced
  kRefused,   // an invalidation newer than the stamp applies: the walk may have seen old tables
};

inline bool accepted(FillResult r) {
  return r != FillResult::kRefused;
}

struct SetAssocConfig {
  size_t capacity = 4096;  // entries; rounded up to a power of two
  size_t shards = 16;      // independent set arrays; rounded up to a power of two
  unsigned ways = 0;       // 0 = the compile-time maximum; otherwise rounded and clamped to it
};

// Key and Value travel as 64-bit atomic words (memcpy in and out) so that a reader racing a
// writer is a benign, TSan-visible atomic race rather than undefined behaviour; the sequence
// counter then tells the reader whether its copy is consistent.
//
// Policy callbacks (lambdas, inlined; no virtual dispatch):
//   valid(stamp, key, value) -> bool: is an entry with this stamp still trustworthy given the
//   scope invalidations that apply to it? Checked on every hit and before admitting a fill.
template <class Key, class Value, unsigned kWays>
class SetAssocCache {
  static_assert(std::is_trivially_copyable_v<Key> && std::has_unique_object_representations_v<Key>,
                "keys are compared word-wise, so they must have no padding");
  static_assert(std::is_trivially_copyable_v<Value>);
  static_assert(kWays >= 1 && kWays <= 32 && (kWays & (kWays - 1)) == 0);

 public:
  static constexpr size_t kKeyWords = (sizeof(Key) + 7) / 8;
  static constexpr size_t kValueWords = (sizeof(Value) + 7) / 8;
  // A reader that collides with writers this many times in a row reports a miss instead of
  // waiting; under a storm that is cheaper and keeps readers wait-free.
  static constexpr int kMaxReadAttempts = 64;

  explicit SetAssocCache(const SetAssocConfig &cfg = {}) {
    ways_ = cfg.ways == 0 ? kWays : static_cast<unsigned>(round_up_pow2(cfg.ways));
    if (ways_ > kWays) ways_ = kWays;
    const size_t shards = round_up_pow2(cfg.shards);
    size_t sets = round_up_pow2((cfg.capacity + ways_ - 1) / ways_);
    if (sets < shards) sets = shards;
    sets_per_shard_ = sets / shards;
    sets_per_shard_bits_ = static_cast<unsigned>(std::countr_zero(sets_per_shard_));
    const unsigned index_bits = static_cast<unsigned>(std::countr_zero(sets));
    index_mask_ = sets - 1;
    index_shift_ = index_bits == 0 ? 63 : 64 - index_bits;
    tag_shift_ = (index_bits == 0 ? 64 : index_shift_) - 7;
    // One allocation for all shards: one base pointer to load on every access, and a table
    // large enough to be backed by huge pages.
    sets_ = LargeArray<Set>(sets);
    base_ = sets_.data();
    num_shards_ = shards;
  }

  SetAssocCache(const SetAssocCache &) = delete;
  SetAssocCache &operator=(const SetAssocCache &) = delete;

  size_t capacity() const { return num_shards_ * sets_per_shard_ * ways_; }
  size_t num_sets() const { return num_shards_ * sets_per_shard_; }
  size_t num_shards() const { return num_shards_; }
  unsigned ways() const { return ways_; }

  // The words folded together, then one multiply (Fibonacci hashing): every lookup waits on
  // this before its first load, and a full finaliser (mix64, two multiplies and three
  // shift-xors) was half of a cache-resident lookup's dependency chain. Each later word is
  // multiplied by an odd constant (a bijection, so keys differing only there still differ) and
  // rotated by half a word or more, so that small fields of different words (page numbers in
  // the first, DIDs and PASIDs after it) do not cancel. A product's high bits depend on every
  // input bit below them, so placement uses the top bits only: the set index (shard first),
  // then the tag byte's seven bits right under it. Consecutive page numbers, the common key
  // sequence, land in evenly spread sets.
  static uint64_t hash_key(const Key &key) {
    const Words<kKeyWords> w = pack<kKeyWords>(key);
    uint64_t x = w[0];
#pragma GCC unroll 4
    for (size_t i = 1; i < kKeyWords; ++i)
      x ^= std::rotl(w[i] * (0x9e3779b97f4a7c15ULL + 2 * i), int(32 + 11 * (i - 1)) % 64);
    return x * 0x9e3779b97f4a7c15ULL;
  }

  // Which set key goes to, as an index over all sets (shard-major, as set_at numbers them).
  // For tests that need keys sharing a set.
  size_t set_index(const Key &key) const {
    return static_cast<size_t>(hash_key(key) >> index_shift_) & index_mask_;
  }

  // Starts loading key's set into the CPU cache; batch lookups issue it a few keys ahead.
  void prefetch(const Key &key) const {
    const Set &set = set_for(hash_key(key));
    const char *p = reinterpret_cast<const char *>(&set);
    for (size_t off = 0; off < sizeof(Set); off += 64) __builtin_prefetch(p + off);
  }

  // Two-stage prefetch for batches over a cache far larger than the CPU's: first the line with
  // the key's set header and tags, then, once that line has arrived, the one slot whose tag
  // matches. Prefetching a whole set (prefetch() above) asks for seven lines of which a lookup
  // reads two, and a batch's outstanding misses then queue behind each other.
  void prefetch_tags(const Key &key) const {
    __builtin_prefetch(&set_for(hash_key(key)));
  }
  void prefetch_slot(const Key &key) const {
    const uint64_t h = hash_key(key);
    const Set &set = set_for(h);
    for_each_tag_candidate(set, h, [&](unsigned w) {
      const char *p = reinterpret_cast<const char *>(&set.slots[w]);
      __builtin_prefetch(p);
      __builtin_prefetch(p + sizeof(Slot) - 1);  // a slot may straddle two lines
    });
  }

  // Copies the value out and returns true if the key is present and valid() accepts it.
  // The key comes by value and the value goes out word by word: a key written field by field
  // and read back as words, or a value written as words and read back as one wider copy, is a
  // failed store-to-load forward (a dozen cycles or more each), which made this function's
  // loads of L1-resident lines its costliest instructions.
  // Always inlined: a hit is a few dozen instructions, and a call per probe was a tenth of an
  // IOTLB hit through a handle.
  template <class Valid>
  [[gnu::always_inline]] bool lookup(const Key key, Value *out, Valid &&valid) const {
    const Words<kKeyWords> kw = pack<kKeyWords>(key);
    const uint64_t h = hash_key(key);
    const Set &set = set_for(h);
    const uint64_t tag_bytes = uint64_t(tag_of(h)) * 0x0101010101010101ULL;
    for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
      const uint64_t seq0 = set.seq.load(std::memory_order_acquire);
      if (seq0 & 1) {
        cpu_relax();
        continue;
      }
      uint64_t stamp = 0;
      Words<kValueWords> vw{};
      bool found = false;
      // Only ways whose tag byte matches are read: a miss touches the set's first cache line
      // alone, a hit that line and its own slot.
      for (size_t t = 0; t < kTagWords && !found; ++t) {
        const uint64_t x = set.tags[t].load(kDataLoad) ^ tag_bytes;
        // Zero bytes of x mark candidates (a borrow may add false ones; the key check drops them).
        uint64_t candidates = (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL;
        while (candidates && !found) {
          const unsigned w = unsigned(t * 8) + unsigned(std::countr_zero(candidates)) / 8;
          candidates &= candidates - 1;
          if (w >= ways_) break;
          const Slot &slot = set.slots[w];
          const uint64_t st = slot.stamp.load(kDataLoad);
          if (st == 0) continue;
          // Both loops unrolled, so that the words stay in registers (see above).
          bool eq = true;
#pragma GCC unroll 4
          for (size_t i = 0; i < kKeyWords; ++i) eq &= slot.key[i].load(kDataLoad) == kw[i];
          if (!eq) continue;
#pragma GCC unroll 4
          for (size_t i = 0; i < kValueWords; ++i) vw[i] = slot.value[i].load(kDataLoad);
          stamp = st;
          found = true;
        }
      }
      read_fence();
      if (set.seq.load(std::memory_order_relaxed) != seq0) continue;
      if (!found) return false;
      Value v;
      store_words(&v, vw);
      if (!valid(stamp, key, v)) return false;
      store_words(out, vw);
      return true;
    }
    return false;
  }

  // Inserts under the set lock. Refused when the set saw a page/range invalidation at or after
  // the stamp, or when valid() rejects the stamp (a scope invalidation at or after it). Either
  // check happens under the lock, so an invalidation racing this fill either sees the entry and
  // removes it, or is seen by the fill.
  template <class Valid>
  FillResult fill(uint64_t stamp, const Key &key, const Value &value, Valid &&valid) {
    NoRecheck none;
    return fill_impl(stamp, key, value, valid, none);
  }

  // fill() for a cache whose range invalidation probes sets without locking them
  // (KeyRemover's probe mode, with a RangeLog): the entry is written and its tag published
  // with a sequentially consistent store first, and only then does recent(stamp, key) look for
  // an invalidation the walk may have missed; if it finds one the entry is taken out again
  // before the set unlocks, so no reader ever sees it.
  template <class Valid, class Recent>
  FillResult fill_checked(uint64_t stamp, const Key &key, const Value &value, Valid &&valid,
                          Recent &&recent) {
    return fill_impl(stamp, key, value, valid, recent);
  }

  // Records t as the set's last invalidation time (so fills stamped at or before t are refused
  // from now on) and erases the entries of key's set that match(key) selects. Returns how many.
  template <class Match>
  size_t invalidate_set_of(const Key &key, uint64_t t, Match &&match) {
    return invalidate_set(set_for(hash_key(key)), t, match);
  }

  // Removes the entries of exactly the keys it is given; defined below, after Set.
  class KeyRemover;

  // Same for every set; for rare full scans (tests, diagnostics, scope clean-up).
  template <class Match>
  size_t invalidate_all_sets(uint64_t t, Match &&match) {
    size_t n = 0;
    for (size_t s = 0; s < num_shards_; ++s) {
      for (size_t i = 0; i < sets_per_shard_; ++i) n += invalidate_set(set_at(s, i), t, match);
    }
    return n;
  }

  // Counts entries for which pred(stamp, key, value) holds, set by set under the set lock.
  // Not for hot paths.
  template <class Pred>
  size_t count_if(Pred &&pred) {
    size_t n = 0;
    for (size_t s = 0; s < num_shards_; ++s) {
      for (size_t i = 0; i < sets_per_shard_; ++i) {
        Set &set = set_at(s, i);
        const uint64_t seq = lock(set);
        for (unsigned w = 0; w < ways_; ++w) {
          const Slot &slot = set.slots[w];
          const uint64_t st = slot.stamp.load(std::memory_order_relaxed);
          if (st != 0 && pred(st, unpack_key(slot), unpack_value(slot))) ++n;
        }
        unlock(set, seq);
      }
    }
    return n;
  }

 private:
  static constexpr std::memory_order kDataLoad = seqlock::kDataLoad;
  static constexpr std::memory_order kDataStore = seqlock::kDataStore;
  static void read_fence() {
    seqlock::read_fence();
  }
  static void write_fence() {
    seqlock::write_fence();
  }

  template <size_t N>
  using Words = std::array<uint64_t, N>;

  struct Slot {
    std::atomic<uint64_t> stamp{0};  // 0 = empty
    std::array<std::atomic<uint64_t>, kKeyWords> key{};
    std::array<std::atomic<uint64_t>, kValueWords> value{};
  };

  static constexpr size_t kTagWords = (kWays + 7) / 8;

  struct alignas(64) Set {
    std::atomic<uint64_t> seq{0};       // odd while a writer is inside; doubles as the lock
    std::atomic<uint64_t> inv_time{0};  // last page/range invalidation that touched this set
    std::atomic<uint32_t> hand{0};      // replacement clock hand
    // One byte per way: 0 for an empty way, else 0x80 | 7 hash bits of the key it holds.
    std::array<std::atomic<uint64_t>, kTagWords> tags{};
    std::array<Slot, kWays> slots{};
  };

  // The seven hash bits right under the set index: the keys of one set differ there.
  uint8_t tag_of(uint64_t h) const {
    return uint8_t((h >> tag_shift_) | 0x80);
  }

  // Writers only, under the set lock.
  static void set_tag(Set &set, unsigned way, uint8_t tag, std::memory_order order = kDataStore) {
    std::atomic<uint64_t> &word = set.tags[way / 8];
    const unsigned shift = (way % 8) * 8;
    const uint64_t old = word.load(std::memory_order_relaxed);
    word.store((old & ~(uint64_t{0xFF} << shift)) | (uint64_t(tag) << shift), order);
  }

  template <size_t N, class T>
  static Words<N> pack(const T &x) {
    Words<N> w{};
    std::memcpy(w.data(), &x, sizeof(T));
    return w;
  }

  // Word-sized stores (the last one as wide as what is left), so that reads of the value's
  // fields forward from them.
  static void store_words(Value *dst, const Words<kValueWords> &w) {
    char *d = reinterpret_cast<char *>(dst);
#pragma GCC unroll 4
    for (size_t i = 0; i < kValueWords; ++i) {
      const size_t left = sizeof(Value) - i * 8;
      std::memcpy(d + i * 8, &w[i], left < 8 ? left : 8);
    }
  }

  static Key unpack_key(const Slot &slot) {
    Words<kKeyWords> w;
    for (size_t i = 0; i < kKeyWords; ++i) w[i] = slot.key[i].load(std::memory_order_relaxed);
    Key k;
    std::memcpy(static_cast<void *>(&k), w.data(), sizeof(Key));
    return k;
  }

  static Value unpack_value(const Slot &slot) {
    Words<kValueWords> w;
    for (size_t i = 0; i < kValueWords; ++i) w[i] = slot.value[i].load(std::memory_order_relaxed);
    Value v;
    std::memcpy(static_cast<void *>(&v), w.data(), sizeof(Value));
    return v;
  }

  // Shard and set together from the top hash bits (see hash_key).
  Set &set_for(uint64_t h) const {
    return base_[static_cast<size_t>(h >> index_shift_) & index_mask_];
  }
  Set &set_at(size_t shard, size_t index) const {
    return base_[(shard << sets_per_shard_bits_) | index];
  }

  static uint64_t lock(Set &set) {
    uint64_t seq = set.seq.load(std::memory_order_relaxed);
    for (;;) {
      if ((seq & 1) == 0 && set.seq.compare_exchange_weak(seq, seq + 1, std::memory_order_acquire,
                                                          std::memory_order_relaxed)) {
        // Pairs with the reader's acquire fence: a reader that sees any payload store below
        // must then see the odd counter when it re-reads it.
        write_fence();
        return seq + 1;
      }
      cpu_relax();
      seq = set.seq.load(std::memory_order_relaxed);
    }
  }

  static void unlock(Set &set, uint64_t odd_seq) {
    set.seq.store(odd_seq + 1, std::memory_order_release);
  }

  static bool slot_key_equals(const Slot &slot, const Words<kKeyWords> &kw) {
    if (slot.stamp.load(std::memory_order_relaxed) == 0) return false;
    for (size_t i = 0; i < kKeyWords; ++i) {
      if (slot.key[i].load(std::memory_order_relaxed) != kw[i]) return false;
    }
    return true;
  }

  template <class Valid>
  static bool slot_live(const Slot &slot, Valid &valid) {
    const uint64_t st = slot.stamp.load(std::memory_order_relaxed);
    if (st == 0) return false;
    // A fill looking for a dead way asks this of every way of a full set: a Valid that can
    // vouch for a stamp alone (filled after every scope invalidation) spares unpacking each
    // slot's key and value, which made a warm nested miss's IOTLB fill its costliest step.
    if constexpr (requires { valid.live_by_stamp(st); }) {
      if (valid.live_by_stamp(st)) return true;
    }
    return valid(st, unpack_key(slot), unpack_value(slot));
  }

  template <class Match>
  size_t invalidate_set(Set &set, uint64_t t, Match &match) {
    const uint64_t seq = lock(set);
    if (set.inv_time.load(std::memory_order_relaxed) < t) {
      set.inv_time.store(t, std::memory_order_relaxed);
    }
    size_t removed = 0;
    for (unsigned w = 0; w < ways_; ++w) {
      Slot &slot = set.slots[w];
      if (slot.stamp.load(std::memory_order_relaxed) == 0) continue;
      if (match(unpack_key(slot))) {
        slot.stamp.store(0, kDataStore);
        set_tag(set, w, 0);
        ++removed;
      }
    }
    unlock(set, seq);
    return removed;
  }

  struct NoRecheck {};

  template <class Valid, class Recent>
  FillResult fill_impl(uint64_t stamp, const Key &key, const Value &value, Valid &valid,
                       Recent &recent) {
    const Words<kKeyWords> kw = pack<kKeyWords>(key);
    const Words<kValueWords> vw = pack<kValueWords>(value);
    const uint64_t h = hash_key(key);
    Set &set = set_for(h);
    const uint64_t seq = lock(set);
    FillResult result;
    if (stamp == 0 || stamp <= set.inv_time.load(std::memory_order_relaxed) ||
        !valid(stamp, key, value)) {
      result = FillResult::kRefused;
    } else {
      unsigned victim = ways_;
      result = FillResult::kInserted;
      // The key's own way, an empty way and a dead one, in that order, reading slots only where
      // the tag line says so: a set is seven lines, and a fill that read every way's stamp to
      // find the key took a miss per line on a cache larger than L2 (a storm's translators
      // spent a third of their fill time there).
      for_each_tag_candidate(set, h, [&](unsigned w) {
        if (victim == ways_ && slot_key_equals(set.slots[w], kw)) {
          victim = w;
          result = FillResult::kReplaced;
        }
      });
      if (victim == ways_) victim = first_empty_way(set);
      if (victim == ways_) {
        for (unsigned w = 0; w < ways_ && victim == ways_; ++w) {
          if (!slot_live(set.slots[w], valid)) victim = w;
        }
      }
      if (victim == ways_) {
        // Clock hand: cheaper than tracking recency on the read path, which stays write-free.
        const uint32_t hand = set.hand.load(std::memory_order_relaxed);
        set.hand.store(hand + 1, std::memory_order_relaxed);
        victim = hand & (ways_ - 1);
        result = FillResult::kEvicted;
      }
      Slot &slot = set.slots[victim];
      for (size_t i = 0; i < kKeyWords; ++i) slot.key[i].store(kw[i], kDataStore);
      for (size_t i = 0; i < kValueWords; ++i) slot.value[i].store(vw[i], kDataStore);
      slot.stamp.store(stamp, kDataStore);
      if constexpr (std::is_same_v<Recent, NoRecheck>) {
        set_tag(set, victim, tag_of(h));
      } else {
        set_tag(set, victim, tag_of(h), std::memory_order_seq_cst);
        if (recent(stamp, key)) {
          slot.stamp.store(0, kDataStore);
          set_tag(set, victim, 0);
          result = FillResult::kRefused;
        }
      }
    }
    unlock(set, seq);
    return result;
  }

  // Probe mode's unlocked look at a set: could it hold key hash h's entry, or is a writer
  // (maybe a fill of that key) inside? Sequentially consistent loads: they pair with
  // fill_checked's tag store across the caller's RangeLog publication.
  bool may_hold(const Set &set, uint64_t h) const {
    if ((set.seq.load(std::memory_order_seq_cst) & 1) != 0) return true;
    bool candidate = false;
    for_each_tag_candidate(
        set, h, [&](unsigned) { candidate = true; }, std::memory_order_seq_cst);
    return candidate;
  }

  // The lowest way whose tag byte is 0 (empty), or ways_. Writers only, under the set lock.
  unsigned first_empty_way(const Set &set) const {
    for (size_t t_word = 0; t_word < kTagWords; ++t_word) {
      const uint64_t x = set.tags[t_word].load(std::memory_order_relaxed);
      const uint64_t empty = (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL;
      if (empty == 0) continue;
      // The lowest flagged byte is exact (a borrow only flags bytes above a zero byte).
      const unsigned w = unsigned(t_word * 8) + unsigned(std::countr_zero(empty)) / 8;
      return w < ways_ ? w : ways_;
    }
    return ways_;
  }

  // Calls f(way) for each way whose tag byte equals key hash h's tag (a borrow may add a false
  // candidate; callers compare the key). Writers call it under the set lock.
  template <class F>
  void for_each_tag_candidate(const Set &set, uint64_t h, F &&f,
                              std::memory_order order = std::memory_order_relaxed) const {
    const uint64_t tag_bytes = uint64_t(tag_of(h)) * 0x0101010101010101ULL;
    for (size_t t_word = 0; t_word < kTagWords; ++t_word) {
      const uint64_t x = set.tags[t_word].load(order) ^ tag_bytes;
      uint64_t candidates = (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL;
      while (candidates) {
        const unsigned w = unsigned(t_word * 8) + unsigned(std::countr_zero(candidates)) / 8;
        candidates &= candidates - 1;
        if (w >= ways_) return;
        f(w);
      }
    }
  }

  void prefetch_matching_slots(const Set &set, uint64_t h) const {
    for_each_tag_candidate(set, h, [&](unsigned w) {
      const char *slot = reinterpret_cast<const char *>(&set.slots[w]);
      __builtin_prefetch(slot, 1);
      __builtin_prefetch(slot + sizeof(Slot) - 1, 1);
    });
  }

  size_t invalidate_exact(Set &set, uint64_t h, const Words<kKeyWords> &kw, uint64_t t) {
    const uint64_t seq = lock(set);
    if (set.inv_time.load(std::memory_order_relaxed) < t) {
      set.inv_time.store(t, std::memory_order_relaxed);
    }
    size_t removed = 0;
    for_each_tag_candidate(set, h, [&](unsigned w) {
      Slot &slot = set.slots[w];
      if (!slot_key_equals(slot, kw)) return;
      slot.stamp.store(0, kDataStore);
      set_tag(set, w, 0);
      ++removed;
    });
    unlock(set, seq);
    return removed;
  }

  unsigned ways_ = kWays;
  size_t num_shards_ = 1;
  size_t sets_per_shard_ = 1;
  unsigned sets_per_shard_bits_ = 0;
  // set_for/tag_of: index = hash >> index_shift_ (masked, for the one-set case), tag below.
  size_t index_mask_ = 0;
  unsigned index_shift_ = 63;
  unsigned tag_shift_ = 57;
  LargeArray<Set> sets_;
  Set *base_ = nullptr;  // sets_.data(): const lookups hand out sets that writers lock

 public:
  // Removes the entries of exactly the keys it is given and records t on each key's set, like
  // invalidate_set_of with an equality match. Address-selective invalidation enumerates every
  // key an overlapping entry can have, so equality is all it needs, and equality lets a set be
  // settled by its tag line plus the one slot whose tag matches. Keys are taken in chunks whose
  // sets are all prefetched before the first is locked: on a large cache each set is a memory
  // miss, and overlapping the misses is what keeps a range's cost close to its page count
  // rather than to the latency of each page in turn.
  class KeyRemover {
   public:
    // Locking mode: every named key's set is locked, its entry removed and t recorded as the
    // set's invalidation time (fills stamped at or before t are refused by the set).
    KeyRemover(SetAssocCache &cache, uint64_t t) : cache_(cache), t_(t) {}
    // Probe mode: the caller has already published the invalidation where fill_checked's
    // `recent` finds it (a RangeLog), so a set is locked only if may_hold() says it could
    // hold the key; most sets of a range are read, not written.
    struct Probe {};
    KeyRemover(SetAssocCache &cache, Probe) : cache_(cache), t_(0), probe_(true) {}
    KeyRemover(const KeyRemover &) = delete;
    KeyRemover &operator=(const KeyRemover &) = delete;
    ~KeyRemover() { flush(); }

    void add(const Key &key) {
      const uint64_t h = hash_key(key);
      Set &set = cache_.set_for(h);
      if (probe_) {
        __builtin_prefetch(&set, 0);  // read: most probed sets stay untouched
      } else {
        __builtin_prefetch(&set, 1);
      }
      pending_[n_++] = Pending{&set, h, pack<kKeyWords>(key)};
      if (n_ == kChunk) flush();
    }

    // Entries removed so far (after flushing what is pending).
    size_t removed() {
      flush();
      return removed_;
    }

   private:
    static constexpr size_t kChunk = 16;
    struct Pending {
      Set *set;
      uint64_t hash;
      Words<kKeyWords> key;
    };

    void flush() {
      // The tag lines have been on their way since add(); a way whose tag matches is almost
      // always the entry to remove, so its slot is requested for every key before any set is
      // locked. The unlocked tag read only steers a prefetch; the removal re-reads under lock.
      for (size_t i = 0; i < n_; ++i)
        cache_.prefetch_matching_slots(*pending_[i].set, pending_[i].hash);
      for (size_t i = 0; i < n_; ++i) {
        if (probe_ && !cache_.may_hold(*pending_[i].set, pending_[i].hash)) continue;
        removed_ +=
            cache_.invalidate_exact(*pending_[i].set, pending_[i].hash, pending_[i].key, t_);
      }
      n_ = 0;
    }

    SetAssocCache &cache_;
    uint64_t t_;
    bool probe_ = false;
    size_t removed_ = 0;
    size_t n_ = 0;
    std::array<Pending, kChunk> pending_;
  };
};

}  // namespace nestor::caches
