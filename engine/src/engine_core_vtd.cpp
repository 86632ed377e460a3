// The generic core instantiated for this build's personality (VT-d), with Engine's and the
// address-space handle's translate entry points beside it, so their hit paths inline the core.
#include "engine_core.h"
#include "translate_pipeline.h"

namespace nestor {

template class EngineCore<VtdPersonality>;

Result Engine::translate(const Request &req) {
  return core_.translate(req);
}

void Engine::translate_batch(const Request *reqs, Result *out, size_t n) {
  core_.translate_batch(reqs, out, n);
}

Result AddressSpace::translate(uint64_t iova, uint8_t access) {
  Request req = base_;
  req.iova = iova;
  req.access = access;
  return engine_->core_.translate_in(*this, req);
}

void AddressSpace::translate_batch(const uint64_t *iovas, uint8_t access, Result *out, size_t n) {
  engine_->core_.translate_batch_in(*this, iovas, access, out, n);
}

}  // namespace nestor
