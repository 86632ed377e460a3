// The engine workload the QEMU-text sink tests run: second-level-only devices without PASID
// (RID_PASID) in three domains on a caching engine, translations and the results they gave
// kept in order, invalidations applied as a guest driver sends them.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <vector>

#include "nestor/machine/machine.h"

namespace nestor::trace {

inline invq::InvalidationOp make_op(uint8_t caches, invq::Scope scope, uint16_t did = 0) {
  invq::InvalidationOp op;
  op.caches = caches;
  op.scope = scope;
  op.did = did;
  return op;
}

inline constexpr uint8_t kIotlbPaging = invq::kCacheIotlb | invq::kCachePaging;

// The machine, with what was translated and what it gave. Single-threaded but for engine(),
// which threads may translate through directly.
class SinkWorkload {
 public:
  static constexpr uint64_t kHpa = 0x4000'0000ull;

  SinkWorkload() : m_(layout()) {
    m_.place_structures();
    for (uint16_t did : {1, 2, 3}) domains_[did] = &m_.add_domain(did);
    add_device(0x0010, 1);
    add_device(0x0018, 1);
    add_device(0x0100, 2);
    add_device(0x0208, 3);
  }

  Engine &engine() { return m_.engine(); }

  void map(uint16_t did, uint64_t iova, uint64_t hpa, unsigned shift = 12,
           uint8_t perms = kAccessRead | kAccessWrite) {
    domains_.at(did)->map(iova, hpa, uint64_t{1} << shift, shift, perms);
  }
  void unmap(uint16_t did, uint64_t iova) {
    ASSERT_EQ(domains_.at(did)->tables.unmap(iova, 12), build::Status::kOk);
  }

  Result translate(uint16_t sid, uint64_t iova, uint8_t access = kAccessRead) {
    const Request q = machine::request(sid, 0, iova, access, /*has_pasid=*/false);
    const Result r = engine().translate(q);
    requests_.push_back(q);
    results_.push_back(r);
    return r;
  }
  // Through an address-space handle, whose own cache answers repeats.
  Result translate_handle(AddressSpace &as, uint16_t sid, uint64_t iova) {
    const Result r = as.translate(iova, kAccessRead);
    requests_.push_back(machine::request(sid, 0, iova, kAccessRead, false));
    results_.push_back(r);
    return r;
  }

  void invalidate(const invq::InvalidationOp &op) {
    engine().invalidate(op);
    engine().invalidate_wait();
    ++invalidations_;
  }
  // What a guest driver sends after changing second-level leaves: a type 0x2 page range.
  void invalidate_range(uint16_t did, uint64_t iova, uint64_t npages) {
    invq::InvalidationOp op = make_op(kIotlbPaging, invq::Scope::kRange, did);
    op.addr = iova;
    op.npages = npages;
    op.addr_is_gpa = true;
    invalidate(op);
  }

  const std::vector<Request> &requests() const { return requests_; }
  const std::vector<Result> &results() const { return results_; }
  uint64_t invalidations() const { return invalidations_; }

 private:
  static machine::RamLayout layout() {
    return {.ram_size = 256ull << 20, .tables_base = 1ull << 20, .tables_size = 64ull << 20};
  }
  void add_device(uint16_t sid, uint16_t did) {
    machine::DeviceSpec spec;
    spec.source_id = sid;
    spec.pasid = 0;
    spec.mode = machine::Mode::kSecondLevel;
    spec.domain = domains_.at(did);
    m_.add_device(spec);
  }

  machine::Machine m_;
  std::map<uint16_t, machine::Domain *> domains_;
  std::vector<Request> requests_;
  std::vector<Result> results_;
  uint64_t invalidations_ = 0;
};

}  // namespace nestor::trace
