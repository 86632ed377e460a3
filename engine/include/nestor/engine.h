// The C++ entry point: an engine owns machine memory, reads the VT-d structures from it and
// translates device requests through them.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "nestor/machine_memory.h"
#include "nestor/vtd_structures.h"
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

  // Structure lookups, exposed for tools and tests. On a fault, `fault` says why.
  bool read_context(uint16_t source_id, vtd::ContextEntry *ctx, Fault *fault, bool *fpd);
  bool read_pasid_entry(const vtd::ContextEntry &ctx, uint32_t pasid, vtd::PasidEntry *pe,
                        Fault *fault, bool *fpd);

 private:
  Result walk(const vtd::PasidEntry &pe, const Request &req, bool privileged);
  Result fail(const Request &req, Fault f, bool fpd);

  EngineConfig cfg_;
  MachineMemory mem_;
  FaultLog faults_;
  std::atomic<uint64_t> root_table_{0};
  std::atomic<bool> root_set_{false};
};

}  // namespace nestor
