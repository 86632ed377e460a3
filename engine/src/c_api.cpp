// The C ABI: thin, exception-free wrappers over the C++ engine.
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "c_api_internal.h"
#include "nestor.h"
#include "nestor/engine.h"

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
  cfg.caching = !(in.flags & NESTOR_CFG_NO_CACHES);
  if (in.iotlb_entries) cfg.iotlb_entries = in.iotlb_entries;
  if (in.iotlb_shards) cfg.iotlb_shards = in.iotlb_shards;
  if (in.iotlb_ways) cfg.iotlb_ways = in.iotlb_ways;
  if (in.context_cache_entries) cfg.context_cache_entries = in.context_cache_entries;
  if (in.pasid_cache_entries) cfg.pasid_cache_entries = in.pasid_cache_entries;
  if (in.psc_entries) cfg.psc_entries = in.psc_entries;
  cfg.drain = (in.flags & NESTOR_CFG_DRAIN) != 0;
  cfg.coalesce = !(in.flags & NESTOR_CFG_NO_COALESCE);
  cfg.background_invalidation = (in.flags & NESTOR_CFG_BACKGROUND_INV) != 0;
  if (in.gpa_invalidation == NESTOR_GPA_INV_DEPENDENCIES)
    cfg.gpa_invalidation = nestor::EngineConfig::GpaInvalidation::kDependencies;
  else if (in.gpa_invalidation != NESTOR_GPA_INV_ARCHITECTURAL)
    throw std::invalid_argument("gpa_invalidation must be 0 or 1");
  return cfg;
}

thread_local std::string t_last_error;

}  // namespace

void nestor_set_last_error(const char *reason) {
  try {
    t_last_error = reason;
  } catch (...) {
    t_last_error.clear();  // no memory for the message: an empty reason beats none at all
  }
}

extern "C" {

nestor_engine *nestor_engine_create2(const nestor_config *cfg, int *err) {
  int dummy;
  if (!err) err = &dummy;
  try {
    const nestor::EngineConfig ec = to_config(cfg);
    // Checked before anything is allocated: oversized caches used to take seconds and
    // gigabytes before failing without a word.
    const char *why = "";
    if (int r = nestor::validate_config(ec, &why); r != 0) {
      nestor_set_last_error(why);
      *err = r;
      return nullptr;
    }
    auto e = std::make_unique<nestor_engine>(ec);
    *err = 0;
    return e.release();
  } catch (const std::invalid_argument &x) {
    nestor_set_last_error(x.what());
    *err = -EINVAL;
  } catch (...) {
    nestor_set_last_error("out of memory");
    *err = -ENOMEM;
  }
  return nullptr;
}

nestor_engine *nestor_engine_create(const nestor_config *cfg) {
  return nestor_engine_create2(cfg, nullptr);
}

const char *nestor_last_error(void) {
  return t_last_error.c_str();
}

void nestor_engine_destroy(nestor_engine *e) {
  std::unique_ptr<nestor_engine> owned(e);
}

int nestor_engine_reset(nestor_engine *e) {
  if (!e) return -EINVAL;
  e->engine.reset();
  return 0;
}

int nestor_mem_add_ram(nestor_engine *e, uint64_t base, uint64_t size) {
  if (!e) return -EINVAL;
  return e->engine.memory().add_ram(base, size);
}

int nestor_mem_add_host_ram(nestor_engine *e, uint64_t base, uint64_t size, void *host) {
  if (!e) return -EINVAL;
  return e->engine.memory().add_host_ram(base, size, host);
}

int nestor_mem_remove_ram(nestor_engine *e, uint64_t base, uint64_t size) {
  if (!e) return -EINVAL;
  return e->engine.memory().remove_ram(base, size);
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

}  // extern "C"

namespace {

bool valid_access(uint8_t access) {
  return access != 0 && !(access & ~7u);
}

nestor::Request to_request(const nestor_request &req) {
  nestor::Request r;
  r.source_id = req.source_id;
  r.has_pasid = req.has_pasid;
  r.pasid = req.pasid;
  r.iova = req.iova;
  r.access = req.access;
  r.privileged = req.privileged;
  return r;
}

}  // namespace

extern "C" {

int nestor_translate(nestor_engine *e, const nestor_request *req, nestor_result *res) {
  if (!e || !req || !res || !valid_access(req->access)) return -EINVAL;
  nestor::capi::to_c_result(e->engine.translate(to_request(*req)), res);
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

// nestor_inv_* and nestor_qi_*: c_api_invalidation.cpp

struct nestor_handle {
  nestor::AddressSpace as;
};

nestor_handle *nestor_handle_open(nestor_engine *e, uint16_t source_id, uint8_t has_pasid,
                                  uint32_t pasid, uint8_t privileged) {
  if (!e) return nullptr;
  try {
    auto h = std::make_unique<nestor_handle>();
    h->as = e->engine.open(source_id, has_pasid, pasid, privileged);
    return h.release();
  } catch (...) {
    return nullptr;
  }
}

void nestor_handle_close(nestor_handle *h) {
  std::unique_ptr<nestor_handle> owned(h);
}

int nestor_handle_translate(nestor_handle *h, uint64_t iova, uint8_t access, nestor_result *res) {
  if (!h || !res || !valid_access(access)) return -EINVAL;
  nestor::capi::to_c_result(h->as.translate(iova, access), res);
  return 0;
}

int nestor_translate_batch(nestor_engine *e, const nestor_request *reqs, nestor_result *res,
                           size_t n) {
  if (!e || (n && (!reqs || !res))) return -EINVAL;
  for (size_t i = 0; i < n; ++i)
    if (!valid_access(reqs[i].access)) return -EINVAL;
  constexpr size_t kChunk = 64;
  nestor::Request in[kChunk];
  nestor::Result out[kChunk];
  for (size_t base = 0; base < n; base += kChunk) {
    const size_t m = std::min(kChunk, n - base);
    for (size_t i = 0; i < m; ++i) in[i] = to_request(reqs[base + i]);
    e->engine.translate_batch(in, out, m);
    for (size_t i = 0; i < m; ++i) nestor::capi::to_c_result(out[i], &res[base + i]);
  }
  return 0;
}

static void copy_stats(const nestor::caches::CacheStats &s, nestor_cache_stats *o) {
  o->hits = s.hits;
  o->misses = s.misses;
  o->fills = s.fills;
  o->refused_fills = s.refused_fills;
  o->evictions = s.evictions;
  o->inv_global = s.inv_global;
  o->inv_domain = s.inv_domain;
  o->inv_pasid = s.inv_pasid;
  o->inv_device = s.inv_device;
  o->inv_page = s.inv_page;
  o->inv_range = s.inv_range;
  o->inv_gpa = s.inv_gpa;
  o->inv_promoted = s.inv_promoted;
  o->over_invalidations = s.over_invalidations;
  o->entries_removed = s.entries_removed;
}

int nestor_get_stats(nestor_engine *e, nestor_stats *out) {
  if (!e || !out || out->size < sizeof(uint32_t)) return -EINVAL;
  const nestor::EngineStats s = e->engine.stats();
  nestor_stats full{};
  full.size = sizeof full;
  copy_stats(s.context, &full.context);
  copy_stats(s.pasid, &full.pasid);
  copy_stats(s.iotlb, &full.iotlb);
  copy_stats(s.psc_first_level, &full.psc_first_level);
  copy_stats(s.psc_second_level, &full.psc_second_level);
  copy_stats(s.psc_nested_table, &full.psc_nested_table);
  full.walks = s.iotlb.walks;
  full.walk_refs = s.iotlb.walk_refs;
  // Older callers get the prefix they know; newer ones get the unknown tail zeroed.
  const uint32_t want = out->size;
  const size_t n = std::min<size_t>(want, sizeof full);
  std::memcpy(out, &full, n);
  if (want > sizeof full)
    std::memset(reinterpret_cast<char *>(out) + sizeof full, 0, want - sizeof full);
  out->size = want;
  return 0;
}

const char *nestor_fault_name(int reason) {
  if (reason < 0 || reason > 255) return "Unknown";
  // Scalable-mode codes Linux names but the engine never produces (not in FaultReason):
  // 0x43 has no condition in this model (every context-entry error has its own code), and an
  // address above HAW in a second-level entry is the reserved-field fault 0x7A (VT-d 9.8
  // marks those bits reserved), so 0x84 never arises either.
  switch (reason) {
    case 0x31:
      return "SM: TTM 0 for request with PASID";
    case 0x32:
      return "SM: TTM 0 for page group request";
    case 0x44:
      return "SM: DTE field in Context Entry is clear";
    case 0x43:
      return "SM: Invalid Context Entry";
    case 0x47:
      return "SM: PRE field in Context-Entry is clear";
    case 0x84:
      return "SM: Second-level entry address beyond the max";
    case 0x7C:
      return "SM: A/D bit update needed in second-level entry when set up in no snoop";
    case 0x87:
      return "SM: Invalid address-interrupt address";
    case 0x90:
      return "SM: A/D bit update needed in first-level entry when set up in no snoop";
    default:
      break;
  }
  const char *name = nestor::fault_reason_name(nestor::FaultReason(reason));
  // Codes the engine never produces still get the generic name.
  return name;
}

const char *nestor_strerror(int err) {
  switch (-static_cast<long long>(err)) {  // widened: -INT_MIN is UB in int
    case 0:
      return "success";
    case EINVAL:
      return "invalid argument";
    case EFAULT:
      return "address not backed by RAM or an I/O callback";
    case ENOMEM:
      return "out of memory";
    case EEXIST:
      return "overlaps an existing region";
    case ENOSPC:
      return "no room left (region table, queue or allocator full)";
    case EPERM:
      return "operation not permitted (not the owner, or feature disabled)";
    case EBUSY:
      return "resource busy (in use, or the queue is in an error state)";
    case ENOENT:
      return "no such object";
    case EOPNOTSUPP:
      return "not supported by this engine configuration";
    case EDQUOT:
      return "quota exceeded";
    case EALREADY:
      return "already done (double free or repeated operation)";
    case EAGAIN:
      return "try again: a documented limit on pending work was reached";
    case EIO:
      return "I/O error (reported by an I/O callback)";
  }
  // nestor_mem_read/write and translations pass an I/O callback's own negative errno through,
  // so any errno value can come back: name it rather than call it unknown.
  if (err < 0 && err > -4096) return "error reported by an I/O callback (see errno.h)";
  return "unknown error";
}

}  // extern "C"
