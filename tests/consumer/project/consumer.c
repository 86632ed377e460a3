/* Smallest useful C embedder: the bind layer builds a second-level domain and attaches a
 * device; a request without PASID translates through it, an unmapped one faults. */
#include <nestor.h>
#include <stdio.h>

int main(void) {
  nestor_bind_config bc = {0};
  nestor_domain_config dc = {0};
  nestor_request req = {0};
  nestor_result res;
  nestor_bind *b;
  uint16_t did = 0;
  int err = 0, ok = 1;
  nestor_engine *e = nestor_engine_create(NULL);
  if (!e || nestor_mem_add_ram(e, 0, 64u << 20) != 0) return 1;
  bc.size = sizeof bc;
  bc.table_base = 1u << 20; /* the layer's tables: [1 MiB, 5 MiB) */
  bc.table_size = 4u << 20;
  b = nestor_bind_create(e, &bc, &err);
  if (!b) {
    fprintf(stderr, "nestor_bind_create: %s\n", nestor_strerror(err));
    return 1;
  }
  dc.size = sizeof dc;
  dc.levels = 4;
  ok &= nestor_domain_create(b, &dc, &did) == 0;
  ok &= nestor_domain_map(b, did, 0x10000000, 0x2000000, 4096,
                          NESTOR_ACCESS_READ | NESTOR_ACCESS_WRITE) == 0;
  ok &= nestor_device_attach(b, 0x0100, did) == 0;
  req.source_id = 0x0100;
  req.iova = 0x10000123;
  req.access = NESTOR_ACCESS_READ;
  ok &= nestor_translate(e, &req, &res) == 0 && !res.fault && res.hpa == 0x2000123;
  req.iova = 0x20000000;
  ok &= nestor_translate(e, &req, &res) == 0 && res.fault != 0;
  printf("consumer (C): unmapped iova -> fault 0x%x %s\n", (unsigned)res.fault,
         nestor_fault_name(res.fault));
  nestor_bind_destroy(b);
  nestor_engine_destroy(e);
  printf("consumer (C): %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
