// The C ABI: thin, exception-free wrappers over the C++ engine.
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>

#include "nestor.h"
#include "nestor/engine.h"

struct nestor_engine {
  explicit nestor_engine(const nestor::EngineConfig &cfg) : engine(cfg) {}
  nestor::Engine engine;
};

namespace {

nestor::EngineConfig to_config(const nestor_config *c) {
  nestor::EngineConfig cfg;
  if (!c) return cfg;
  // Only the prefix the caller knows about is read: older callers pass a smaller size.
  nestor_config in{};
  const size_t n = std::min<size_t>(c->size ? c->size : sizeof in, sizeof in);
  std::memcpy(&in, c, n);
  if (in.host_address_width) cfg.host_address_width = in.host_address_width;
  if (in.pasid_bits) cfg.pasid_bits = in.pasid_bits;
  if (in.sagaw) cfg.sagaw = in.sagaw;
  cfg.first_level_5 = !(in.flags & NESTOR_CFG_NO_FL5);
  cfg.first_level_1g = !(in.flags & NESTOR_CFG_NO_FL1G);
  cfg.second_level_2m = cfg.second_level_1g = !(in.flags & NESTOR_CFG_NO_SL_LARGE);
  cfg.first_level_ad = !(in.flags & NESTOR_CFG_NO_FL_AD);
  if (in.fault_log_entries) cfg.fault_log_entries = in.fault_log_entries;
  return cfg;
}

}  // namespace

extern "C" {

nestor_engine *nestor_engine_create(const nestor_config *cfg) {
  try {
    return std::make_unique<nestor_engine>(to_config(cfg)).release();
  } catch (...) {
    return nullptr;
  }
}

void nestor_engine_destroy(nestor_engine *e) { std::unique_ptr<nestor_engine> owned(e); }

int nestor_mem_add_ram(nestor_engine *e, uint64_t base, uint64_t size) {
  if (!e) return -EINVAL;
  return e->engine.memory().add_ram(base, size);
}

int nestor_mem_add_host_ram(nestor_engine *e, uint64_t base, uint64_t size, void *host) {
  if (!e) return -EINVAL;
  return e->engine.memory().add_host_ram(base, size, host);
}

int nestor_mem_set_io(nestor_engine *e, nestor_io_read_fn rd, nestor_io_write_fn wr, void *ctx) {
  if (!e) return -EINVAL;
  e->engine.memory().set_io_callbacks(rd, wr, ctx);
  return 0;
}

int nestor_mem_write(nestor_engine *e, uint64_t pa, const void *buf, size_t len) {
  if (!e || (!buf && len)) return -EINVAL;
  return e->engine.memory().write(pa, buf, len);
}

int nestor_mem_read(nestor_engine *e, uint64_t pa, void *buf, size_t len) {
  if (!e || (!buf && len)) return -EINVAL;
  return e->engine.memory().read(pa, buf, len);
}

int nestor_set_root_table(nestor_engine *e, uint64_t root_table_pa) {
  if (!e) return -EINVAL;
  return e->engine.set_root_table(root_table_pa);
}

int nestor_translate(nestor_engine *e, const nestor_request *req, nestor_result *res) {
  if (!e || !req || !res) return -EINVAL;
  if (req->access == 0 || (req->access & ~7u)) return -EINVAL;
  nestor::Request r;
  r.source_id = req->source_id;
  r.has_pasid = req->has_pasid;
  r.pasid = req->pasid;
  r.iova = req->iova;
  r.access = req->access;
  r.privileged = req->privileged;
  const nestor::Result out = e->engine.translate(r);
  if (out.ok) {
    res->fault = 0;
    res->hpa = out.t.out;
    res->page_size = uint64_t{1} << out.t.page_shift;
    res->perms = out.t.perms;
    res->level = out.t.level;
  } else {
    res->fault = int(out.fault.reason);
    res->hpa = 0;
    res->page_size = 0;
    res->perms = 0;
    res->level = out.fault.level;
  }
  return 0;
}

int nestor_fault_log_drain(nestor_engine *e, nestor_fault_record *out, size_t max, int *overflow) {
  if (!e || (!out && max)) return -EINVAL;
  if (overflow) *overflow = e->engine.fault_log().overflowed();
  size_t done = 0;
  nestor::FaultRecord buf[32];
  while (done < max) {
    const size_t n = e->engine.fault_log().drain(buf, std::min<size_t>(32, max - done));
    if (n == 0) break;
    for (size_t i = 0; i < n; ++i) {
      nestor_fault_record &o = out[done + i];
      o.source_id = buf[i].request.source_id;
      o.has_pasid = buf[i].request.has_pasid;
      o.pasid = buf[i].request.pasid;
      o.iova = buf[i].request.iova;
      o.access = buf[i].request.access;
      o.privileged = buf[i].request.privileged;
      o.reason = int(buf[i].fault.reason);
      o.stage = int(buf[i].fault.stage);
      o.level = buf[i].fault.level;
      o.address = buf[i].fault.address;
    }
    done += n;
  }
  return int(done);
}

int nestor_fault_log_clear_overflow(nestor_engine *e) {
  if (!e) return -EINVAL;
  e->engine.fault_log().clear_overflow();
  return 0;
}

int nestor_inv_submit(nestor_engine *e, const nestor_inv_op *op) {
  if (!e || !op) return -EINVAL;
  if (!op->cache || (op->cache & ~0x1Fu) || op->scope > NESTOR_SCOPE_RANGE) return -EINVAL;
  nestor::invq::InvalidationOp o;
  o.caches = op->cache;
  o.scope = nestor::invq::Scope(op->scope);
  o.did = op->did;
  o.source_id = op->source_id;
  o.pasid = op->pasid;
  o.leaf = op->leaf;
  if (o.scope == nestor::invq::Scope::kRange) {
    if (op->npages == 0 || op->npages > (~uint64_t{0} >> 12) ||
        (op->addr >> 12) + op->npages < (op->addr >> 12))
      return -EINVAL;
    o.addr = op->addr & ~uint64_t{0xFFF};
    o.npages = op->npages;
  }
  e->engine.invalidate(o);
  return 0;
}

int nestor_inv_wait(nestor_engine *e) {
  if (!e) return -EINVAL;
  e->engine.invalidate_wait();
  return 0;
}

const char *nestor_fault_name(int reason) {
  if (reason < 0 || reason > 255) return "Unknown";
  // Scalable-mode codes Linux names but the engine never produces (not in FaultReason).
  switch (reason) {
    case 0x31: return "SM: TTM 0 for request with PASID";
    case 0x32: return "SM: TTM 0 for page group request";
    case 0x44: return "SM: DTE field in Context Entry is clear";
    case 0x47: return "SM: PRE field in Context-Entry is clear";
    case 0x7C: return "SM: A/D bit update needed in second-level entry when set up in no snoop";
    case 0x87: return "SM: Invalid address-interrupt address";
    case 0x90: return "SM: A/D bit update needed in first-level entry when set up in no snoop";
    default: break;
  }
  const char *name = nestor::fault_reason_name(nestor::FaultReason(reason));
  // Codes the engine never produces still get the generic name.
  return name;
}

const char *nestor_strerror(int err) {
  switch (-err) {
    case 0: return "success";
    case EINVAL: return "invalid argument";
    case EFAULT: return "address not backed by RAM or an I/O callback";
    case ENOMEM: return "out of memory";
    case EEXIST: return "overlaps an existing region";
    case ENOSPC: return "no room left (region table, queue or allocator full)";
    case EPERM: return "operation not permitted (not the owner, or feature disabled)";
    case EBUSY: return "resource busy (in use, or the queue is in an error state)";
    case ENOENT: return "no such object";
    case EOPNOTSUPP: return "not supported by this engine configuration";
    case EDQUOT: return "quota exceeded";
    case EALREADY: return "already done (double free or repeated operation)";
  }
  return "unknown error";
}

}  // extern "C"
