// Writers of valid page tables, for tests, benchmarks and the bind layer. A builder works in
// a "table space": host-physical memory for second-level and single-stage tables, or a
// guest's GPA space (through its second level) for nested first-level tables.
#pragma once

#include <cstdint>

#include "nestor/walkers/first_level.h"
#include "nestor/walkers/second_level.h"

namespace nestor::build {

// A table space: where tables live and how they are allocated.
template <class S>
concept TableSpace = requires(S &s, uint64_t addr, uint64_t v, uint64_t *out) {
  { s.alloc_table() } -> std::same_as<uint64_t>;  // zeroed 4K page address, 0 = out of memory
  { s.read(addr, out) } -> std::same_as<bool>;
  { s.write(addr, v) } -> std::same_as<bool>;
};

struct FirstLevelFormat {
  static constexpr uint64_t kNonLeaf = fl::kPresent | fl::kWritable | fl::kUser;
  static constexpr uint64_t kPageSize = fl::kPageSize;
  static constexpr uint64_t kAddrMask = fl::kAddrMask52;
  static bool present(uint64_t e) { return e & fl::kPresent; }
};

struct SecondLevelFormat {
  static constexpr uint64_t kNonLeaf = sl::kRead | sl::kWrite | sl::kExec;
  static constexpr uint64_t kPageSize = sl::kPageSize;
  static constexpr uint64_t kAddrMask = sl::kAddrMask52;
  static bool present(uint64_t e) { return e & (sl::kRead | sl::kWrite); }
};

// Leaf attribute bits (everything but the address and PS) for each format.
constexpr uint64_t fl_leaf_bits(bool writable, bool user, bool exec) {
  return fl::kPresent | (writable ? fl::kWritable : 0) | (user ? fl::kUser : 0) |
         (exec ? 0 : fl::kNoExecute);
}
constexpr uint64_t sl_leaf_bits(uint8_t access_perms) {
  return (access_perms & kAccessRead ? sl::kRead : 0) |
         (access_perms & kAccessWrite ? sl::kWrite : 0) |
         (access_perms & kAccessExec ? sl::kExec : 0);
}

enum class Status : uint8_t {
  kOk,
  kMisaligned,    // address or size not aligned to the page size
  kBadPageSize,   // not 4K, 2M or 1G
  kConflict,      // a larger page or a table already occupies the slot
  kNoMemory,      // the table space could not allocate a table
  kNotMapped,     // unmap of something that is not mapped at that size
  kBeyondWidth,   // address beyond what the table's level count covers
  kMemoryError,   // the table space refused a read or write
};

const char *status_name(Status s) noexcept;

template <class Format, TableSpace Space>
class TableBuilder {
 public:
  TableBuilder(Space &space, uint64_t root, int levels)
      : space_(space), root_(root), levels_(levels) {}

  uint64_t root() const { return root_; }
  int levels() const { return levels_; }

  // Maps [va, va + 2^shift) to pa with the given leaf bits; replaces an existing leaf of the
  // same size (a remap), refuses to split or cover anything else.
  Status map(uint64_t va, uint64_t pa, unsigned shift, uint64_t leaf_bits) {
    if (shift != 12 && shift != 21 && shift != 30) return Status::kBadPageSize;
    if ((va | pa) & ~page_mask(shift)) return Status::kMisaligned;
    if ((va >> (12 + 9 * levels_)) != 0) return Status::kBeyondWidth;
    const int target = int(shift - 12) / 9 + 1;
    uint64_t table = root_;
    for (int level = levels_; level > target; --level) {
      const uint64_t slot = slot_addr(table, va, level);
      uint64_t e;
      if (!space_.read(slot, &e)) return Status::kMemoryError;
      if (!Format::present(e)) {
        const uint64_t next = space_.alloc_table();
        if (!next) return Status::kNoMemory;
        if (!space_.write(slot, next | Format::kNonLeaf)) return Status::kMemoryError;
        table = next;
        continue;
      }
      if (level <= 3 && (e & Format::kPageSize)) return Status::kConflict;
      table = e & Format::kAddrMask;
    }
    const uint64_t slot = slot_addr(table, va, target);
    uint64_t old;
    if (!space_.read(slot, &old)) return Status::kMemoryError;
    if (Format::present(old) && target > 1 && !(old & Format::kPageSize))
      return Status::kConflict;  // a table hangs here
    const uint64_t e = pa | leaf_bits | (target > 1 ? Format::kPageSize : 0);
    return space_.write(slot, e) ? Status::kOk : Status::kMemoryError;
  }

  Status unmap(uint64_t va, unsigned shift) {
    uint64_t slot;
    if (Status s = find_leaf(va, shift, &slot); s != Status::kOk) return s;
    return space_.write(slot, 0) ? Status::kOk : Status::kMemoryError;
  }

  // Rewrites the raw leaf entry (e.g. to change permissions or clear A/D) of a mapped page.
  Status update_leaf(uint64_t va, unsigned shift, uint64_t (*fn)(uint64_t old, void *), void *ctx) {
    uint64_t slot, e;
    if (Status s = find_leaf(va, shift, &slot); s != Status::kOk) return s;
    if (!space_.read(slot, &e)) return Status::kMemoryError;
    return space_.write(slot, fn(e, ctx)) ? Status::kOk : Status::kMemoryError;
  }

  // Address (in table space) of the entry at `level` on va's path, or 0 if the path ends.
  uint64_t entry_address(uint64_t va, int level) {
    uint64_t table = root_;
    for (int l = levels_; l > level; --l) {
      uint64_t e;
      if (!space_.read(slot_addr(table, va, l), &e) || !Format::present(e)) return 0;
      if (l <= 3 && (e & Format::kPageSize)) return 0;
      table = e & Format::kAddrMask;
    }
    return slot_addr(table, va, level);
  }

 private:
  static uint64_t slot_addr(uint64_t table, uint64_t va, int level) {
    return table + ((va >> (12 + 9 * (level - 1))) & 511) * 8;
  }

  Status find_leaf(uint64_t va, unsigned shift, uint64_t *slot_out) {
    if (shift != 12 && shift != 21 && shift != 30) return Status::kBadPageSize;
    if (va & ~page_mask(shift)) return Status::kMisaligned;
    const int target = int(shift - 12) / 9 + 1;
    const uint64_t slot = entry_address(va, target);
    if (!slot) return Status::kNotMapped;
    uint64_t e;
    if (!space_.read(slot, &e)) return Status::kMemoryError;
    if (!Format::present(e) || (target > 1 && !(e & Format::kPageSize))) return Status::kNotMapped;
    *slot_out = slot;
    return Status::kOk;
  }

  Space &space_;
  uint64_t root_;
  int levels_;
};

template <TableSpace Space>
using FirstLevelBuilder = TableBuilder<FirstLevelFormat, Space>;
template <TableSpace Space>
using SecondLevelBuilder = TableBuilder<SecondLevelFormat, Space>;

inline const char *status_name(Status s) noexcept {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kMisaligned: return "address not aligned to the page size";
    case Status::kBadPageSize: return "page size is not 4K, 2M or 1G";
    case Status::kConflict: return "slot already holds a larger page or a table";
    case Status::kNoMemory: return "no memory left for a page table";
    case Status::kNotMapped: return "not mapped at that page size";
    case Status::kBeyondWidth: return "address beyond the table's address width";
    case Status::kMemoryError: return "table memory not accessible";
  }
  return "unknown";
}

}  // namespace nestor::build
