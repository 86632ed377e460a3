// Smallest useful C++ embedder: Engine + BindLayer, one second-level mapping, one device.
#include <cstdio>

#include <nestor/bind.h>
#include <nestor/engine.h>

int main() {
  nestor::Engine engine;
  if (engine.memory().add_ram(0, 64u << 20) != 0) return 1;
  nestor::BindConfig bc;
  bc.table_base = 1u << 20;
  bc.table_size = 4u << 20;
  int err = 0;
  auto bind = nestor::BindLayer::create(engine, bc, &err);
  if (!bind) return 1;
  uint16_t did = 0;
  bool ok = bind->create_domain(nestor::DomainConfig{}, &did) == 0 &&
            bind->map(did, 0x10000000, 0x2000000, 4096, nestor::kAccessRead) == 0 &&
            bind->attach_device(0x0100, did) == 0;
  nestor::Request req;
  req.source_id = 0x0100;
  req.iova = 0x10000123;
  const nestor::Result r = engine.translate(req);
  ok = ok && r.ok && r.t.out == 0x2000123;
  std::printf("consumer (C++): %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
