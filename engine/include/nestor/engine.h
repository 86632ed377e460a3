// The C++ entry point: an engine owns machine memory, reads the VT-d structures from it and
// translates device requests through them.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "nestor/caches/caches.h"
#include "nestor/invq/op.h"
#include "nestor/machine_memory.h"
#include "nestor/vtd_structures.h"
#include "nestor/walkers/first_level.h"
#include "nestor/walkers/second_level.h"
#include "nestor/walkers/types.h"

namespace nestor {

struct EngineConfig {
  uint8_t host_address_width = 48;  // HAW: physical address bits
  uint8_t pasid_bits = 20;          // PASIDs are < 2^pasid_bits
  uint8_t sagaw = 0b1110;           // second-level widths: bit1 39, bit2 48, bit3 57
  bool first_level_5 = true;        // 5-level first-level tables supported
  bool first_level_1g = true;       // FL1GP
  bool second_level_2m = true;      // SLLPS
  bool second_level_1g = true;
  bool first_level_ad = true;       // update A/D in first-level tables
  uint32_t fault_log_entries = 256;
  // Caches. `caching = false` gives the uncached reference engine (every translation walks).
  bool caching = true;
  uint32_t iotlb_entries = 65536;
  uint32_t iotlb_shards = 16;
  uint32_t iotlb_ways = 0;  // 0: the IOTLB's compile-time associativity
  uint32_t context_cache_entries = 1024;
  uint32_t pasid_cache_entries = 4096;
  uint32_t psc_entries = 4096;  // each of: first-level, second-level, nested-table caches
  uint64_t promote_threshold_pages = 1024;  // ranges above this become PASID/domain scope
};

// Per-cache statistics summed over threads.
struct EngineStats {
  caches::CacheStats context, pasid, iotlb, psc_first_level, psc_second_level, psc_nested_table;
};

struct Request {
  uint16_t source_id = 0;  // bus << 8 | devfn
  bool has_pasid = false;  // false: the context entry's RID_PASID applies
  uint32_t pasid = 0;
  uint64_t iova = 0;
  uint8_t access = kAccessRead;  // AccessBits
  bool privileged = false;       // supervisor request (needs SRE)
};

struct Result {
  bool ok = false;
  Translation t;  // out = HPA of iova; page_shift; perms; level
  Fault fault;
};

struct FaultRecord {
  Request request;
  Fault fault;
};

// A bounded log of faults, as hardware's fault-recording registers: when full, new faults
// are dropped and the overflow flag is set until the log is drained.
class FaultLog {
 public:
  explicit FaultLog(uint32_t capacity) : capacity_(capacity ? capacity : 1) {}
  void record(const FaultRecord &r);
  // Moves up to `max` records out, oldest first. Returns how many.
  size_t drain(FaultRecord *out, size_t max);
  size_t size() const;
  bool overflowed() const;
  void clear_overflow();

 private:
  mutable std::mutex mu_;
  std::vector<FaultRecord> records_;
  uint32_t capacity_;
  bool overflow_ = false;
};

class Engine {
 public:
  explicit Engine(const EngineConfig &cfg = {});
  ~Engine();
  Engine(const Engine &) = delete;
  Engine &operator=(const Engine &) = delete;

  const EngineConfig &config() const { return cfg_; }
  MachineMemory &memory() { return mem_; }
  FaultLog &fault_log() { return faults_; }

  // Root-table address register (scalable mode). Returns 0 or -EINVAL (misaligned/beyond HAW).
  int set_root_table(uint64_t root_table_pa);
  uint64_t root_table() const;

  Result translate(const Request &req);

  EngineStats stats() const;

  // Invalidation entry point for software that changed structures or tables: applies `op`
  // to every cache it names. Completion (and drain) is `invalidate_wait()`; together they are
  // the typed equivalent of queueing descriptors followed by a wait descriptor.
  void invalidate(const invq::InvalidationOp &op);
  // Returns once every earlier invalidation is applied (and, with drain on, every translation
  // that began before it has finished).
  void invalidate_wait();

  // Structure lookups, exposed for tools and tests. On a fault, `fault` says why.
  bool read_context(uint16_t source_id, vtd::ContextEntry *ctx, Fault *fault, bool *fpd);
  bool read_pasid_entry(const vtd::ContextEntry &ctx, uint32_t pasid, vtd::PasidEntry *pe,
                        Fault *fault, bool *fpd);

 private:
  Result walk(const vtd::PasidEntry &pe, const Request &req, bool privileged);
  Result cached_walk(uint64_t stamp, const vtd::PasidEntry &pe, uint32_t pasid,
                     const Request &req, bool privileged);
  sl::Config sl_config(const vtd::PasidEntry &pe) const;
  fl::Config fl_config(const vtd::PasidEntry &pe) const;
  friend class CachedTables;
  Result fail(const Request &req, Fault f, bool fpd);

  EngineConfig cfg_;
  MachineMemory mem_;
  FaultLog faults_;
  std::unique_ptr<caches::InvalidationClock> clock_;
  std::unique_ptr<caches::ContextCache<vtd::ContextEntry>> context_cache_;
  std::unique_ptr<caches::PasidCache<vtd::PasidEntry>> pasid_cache_;
  std::unique_ptr<caches::Iotlb> iotlb_;
  std::unique_ptr<caches::PagingStructureCaches> psc_;
  std::atomic<uint64_t> root_table_{0};
  std::atomic<bool> root_set_{false};
};

}  // namespace nestor
