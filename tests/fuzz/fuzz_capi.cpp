// Fuzz target (d): the C ABI as an embedder (or a careless one) calls it: a sequence of C calls
// with fuzz-chosen arguments, NULL engines/structs/outputs where the ABI says they are checked,
// garbage enum values, versioned structs with arbitrary (in-bounds) size fields. Checks: no
// crash/hang/UB, and every int-returning call answers 0/a count or a negative errno that
// nestor_strerror knows; the RAM regions an input added can be removed again.
//
// Engines come from a pool keyed by the configuration as nestor_engine_create reads it
// (engine()): a fuzzed configuration mostly leaves the default geometry (a 64K-entry IOTLB),
// milliseconds to build under ASan, while nestor_engine_reset is microseconds. Each input
// hands its engine back as a fresh one would be: regions removed, I/O callbacks cleared.
#include <algorithm>
#include <cstring>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "fuzz_common.h"
#include "nestor.h"

namespace {

void check_rc(int rc, int call) {
  if (rc >= 0) return;
  const char *s = nestor_strerror(rc);
  FUZZ_CHECK(s != nullptr && s[0] != '\0', "call %d: errno %d has no message", call, rc);
}

struct IoCtx {
  bool fail;
};
int io_read(void *ctx, uint64_t, void *buf, size_t len) {
  if (static_cast<IoCtx *>(ctx)->fail) return -5;
  std::memset(buf, 0x5A, len);
  return 0;
}
int io_write(void *ctx, uint64_t, const void *, size_t) {
  return static_cast<IoCtx *>(ctx)->fail ? -5 : 0;
}

struct EngineDeleter {
  void operator()(nestor_engine *e) const { nestor_engine_destroy(e); }
};

// A pooled engine (reset) for `cfg`, or a new one; null when nestor_engine_create refuses the
// configuration (never pooled, so every refused configuration still reaches the create path).
nestor_engine *engine(const nestor_config *cfg) {
  static nestor::fuzz::EnginePool<nestor_engine, EngineDeleter> pool(64);
  // The key is what nestor_engine_create reads: the prefix `size` names (0: all of it), the
  // rest as zeros, which is what an older caller's missing fields mean.
  std::string key = "default";
  if (cfg) {
    nestor_config read{};
    std::memcpy(&read, cfg, std::min<size_t>(cfg->size ? cfg->size : sizeof read, sizeof read));
    read.size = 0;
    key.assign(reinterpret_cast<const char *>(&read), sizeof read);
  }
  if (nestor_engine *e = pool.find(key)) {
    check_rc(nestor_engine_reset(e), -1);
    return e;
  }
  nestor_engine *e = nestor_engine_create(cfg);
  if (!e) return nullptr;
  check_rc(nestor_engine_reset(e), -1);  // as fuzz::warm(): no false leak on the next input
  return pool.put(key, std::unique_ptr<nestor_engine, EngineDeleter>(e));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider in(data, size);
  nestor_config cfg{};
  const bool null_cfg = in.ConsumeBool();
  // Older callers' sizes (fields past `size` take their defaults) stay reachable, in one input
  // of eight: most of them leave the default geometry (a 64K-entry IOTLB), the configuration
  // too expensive to build per input, and each new truncated configuration misses the pool.
  cfg.size = in.ConsumeIntegralInRange<int>(0, 7) == 0
                 ? in.ConsumeIntegralInRange<uint32_t>(0, sizeof(nestor_config))
                 : uint32_t(sizeof(nestor_config));
  cfg.host_address_width = in.ConsumeIntegral<uint8_t>();
  cfg.pasid_bits = in.ConsumeIntegral<uint8_t>();
  cfg.sagaw = in.ConsumeIntegral<uint8_t>();
  cfg.flags =
      in.ConsumeIntegral<uint8_t>() & ~NESTOR_CFG_BACKGROUND_INV;  // keep it single-threaded
  cfg.fault_log_entries = in.ConsumeIntegralInRange<uint32_t>(0, 64);
  cfg.iotlb_entries = in.ConsumeIntegralInRange<uint32_t>(0, 256);
  cfg.iotlb_shards = in.ConsumeIntegralInRange<uint32_t>(0, 8);
  cfg.iotlb_ways = in.ConsumeIntegralInRange<uint32_t>(0, 16);
  cfg.context_cache_entries = in.ConsumeIntegralInRange<uint32_t>(1, 64);
  cfg.pasid_cache_entries = in.ConsumeIntegralInRange<uint32_t>(1, 64);
  cfg.psc_entries = in.ConsumeIntegralInRange<uint32_t>(1, 64);
  nestor_engine *e = engine(null_cfg ? nullptr : &cfg);
  if (!e) return 0;
  IoCtx io{false};
  std::vector<std::pair<uint64_t, uint64_t>> ram;  // regions this input added
  std::vector<nestor_handle *> handles;
  std::vector<uint8_t> buf(256);

  while (in.remaining_bytes() > 0) {
    const int call = in.ConsumeIntegralInRange<int>(0, 22);
    nestor_engine *target = in.ConsumeIntegralInRange<int>(0, 15) == 0 ? nullptr : e;
    int rc = 0;
    switch (call) {
      case 0: {
        const uint64_t base = uint64_t(in.ConsumeIntegral<uint16_t>()) << 12;
        const uint64_t len = uint64_t(in.ConsumeIntegralInRange<uint32_t>(0, 4096)) << 12;
        rc = nestor_mem_add_ram(target, base, len);
        if (rc == 0) ram.emplace_back(base, len);
        break;
      }
      case 22: {  // a region this input added, or anything
        uint64_t base = uint64_t(in.ConsumeIntegral<uint16_t>()) << 12;
        uint64_t len = uint64_t(in.ConsumeIntegralInRange<uint32_t>(0, 4096)) << 12;
        if (!ram.empty() && in.ConsumeBool())
          std::tie(base, len) = ram[in.ConsumeIntegralInRange<size_t>(0, ram.size() - 1)];
        rc = nestor_mem_remove_ram(target, base, len);
        if (rc == 0) std::erase(ram, std::pair{base, len});
        break;
      }
      case 1: {
        const uint64_t pa =
            in.ConsumeBool() ? in.ConsumeIntegral<uint32_t>() : in.ConsumeIntegral<uint64_t>();
        const size_t len = in.ConsumeIntegralInRange<size_t>(0, buf.size());
        for (size_t i = 0; i < len; ++i) buf[i] = in.ConsumeIntegral<uint8_t>();
        rc = nestor_mem_write(target, pa, buf.data(), len);
        break;
      }
      case 2: {
        const uint64_t pa =
            in.ConsumeBool() ? in.ConsumeIntegral<uint32_t>() : in.ConsumeIntegral<uint64_t>();
        rc = nestor_mem_read(target, pa, buf.data(),
                             in.ConsumeIntegralInRange<size_t>(0, buf.size()));
        break;
      }
      case 3:
        rc = nestor_set_root_table(target, in.ConsumeIntegral<uint64_t>());
        break;
      case 4: {
        nestor_request req{};
        req.source_id = in.ConsumeIntegral<uint16_t>();
        req.has_pasid = in.ConsumeIntegral<uint8_t>();
        req.pasid = in.ConsumeIntegral<uint32_t>();
        req.iova = in.ConsumeIntegral<uint64_t>();
        req.access = in.ConsumeIntegral<uint8_t>();
        req.privileged = in.ConsumeIntegral<uint8_t>();
        nestor_result res{};
        const int which = in.ConsumeIntegralInRange<int>(0, 3);
        rc = nestor_translate(target, which == 1 ? nullptr : &req, which == 2 ? nullptr : &res);
        break;
      }
      case 5: {
        nestor_request reqs[4]{};
        nestor_result res[4]{};
        for (auto &r : reqs) {
          r.source_id = in.ConsumeIntegral<uint16_t>();
          r.has_pasid = in.ConsumeBool();
          r.pasid = in.ConsumeIntegralInRange<uint32_t>(0, 16);
          r.iova = in.ConsumeIntegral<uint64_t>();
          r.access = in.ConsumeIntegralInRange<uint8_t>(0, 7);
        }
        const size_t n = in.ConsumeIntegralInRange<size_t>(0, 4);
        rc = nestor_translate_batch(target, n ? reqs : nullptr, n ? res : nullptr, n);
        break;
      }
      case 6:
        if (target && handles.size() < 8) {
          nestor_handle *h =
              nestor_handle_open(e, in.ConsumeIntegral<uint16_t>(), in.ConsumeBool(),
                                 in.ConsumeIntegralInRange<uint32_t>(0, 16), in.ConsumeBool());
          if (h) handles.push_back(h);
        } else {
          FUZZ_CHECK(nestor_handle_open(nullptr, 0, 0, 0, 0) == nullptr, "handle on NULL engine");
        }
        break;
      case 7:
        if (!handles.empty()) {
          nestor_result res{};
          rc = nestor_handle_translate(
              handles[in.ConsumeIntegralInRange<size_t>(0, handles.size() - 1)],
              in.ConsumeIntegral<uint64_t>(), in.ConsumeIntegral<uint8_t>(),
              in.ConsumeBool() ? &res : nullptr);
        } else {
          rc = nestor_handle_translate(nullptr, 0, 1, nullptr);
        }
        break;
      case 8: {
        nestor_fault_record recs[4];
        int overflow = 0;
        rc = nestor_fault_log_drain(target, in.ConsumeBool() ? recs : nullptr,
                                    in.ConsumeIntegralInRange<size_t>(0, 4),
                                    in.ConsumeBool() ? &overflow : nullptr);
        if (in.ConsumeBool()) check_rc(nestor_fault_log_clear_overflow(target), call);
        break;
      }
      case 9: {
        nestor_stats st{};
        st.size = in.ConsumeIntegralInRange<uint32_t>(0, sizeof st);
        rc = nestor_get_stats(target, in.ConsumeBool() ? &st : nullptr);
        break;
      }
      case 10: {
        nestor_inv_op op{};
        op.cache = in.ConsumeIntegral<uint8_t>();
        op.scope = in.ConsumeIntegral<uint8_t>();
        op.did = in.ConsumeIntegral<uint16_t>();
        op.source_id = in.ConsumeIntegral<uint16_t>();
        op.pasid = in.ConsumeIntegral<uint32_t>();
        op.addr = in.ConsumeIntegral<uint64_t>();
        op.npages = in.ConsumeBool() ? in.ConsumeIntegral<uint64_t>()
                                     : in.ConsumeIntegralInRange<uint64_t>(0, 64);
        op.leaf = in.ConsumeIntegral<uint8_t>();
        rc = nestor_inv_submit(target, in.ConsumeIntegralInRange<int>(0, 7) ? &op : nullptr);
        break;
      }
      case 11:
        rc = nestor_inv_wait(target);
        break;
      case 12:
        rc = nestor_qi_configure(
            target,
            in.ConsumeBool() ? uint64_t(in.ConsumeIntegral<uint16_t>()) << 12
                             : in.ConsumeIntegral<uint64_t>(),
            in.ConsumeBool() ? uint64_t{1} << in.ConsumeIntegralInRange<int>(0, 20)
                             : in.ConsumeIntegral<uint64_t>(),
            in.ConsumeBool() ? (in.ConsumeBool() ? 128 : 256) : in.ConsumeIntegral<unsigned>());
        break;
      case 13:
        rc = nestor_qi_write_tail(target, in.ConsumeIntegralInRange<uint64_t>(0, 1u << 16));
        break;
      case 14: {
        uint64_t head = 0;
        int error = 0;
        rc = nestor_qi_state(target, in.ConsumeBool() ? &head : nullptr,
                             in.ConsumeBool() ? &error : nullptr);
        if (in.ConsumeBool()) check_rc(nestor_qi_clear_error(target), call);
        break;
      }
      case 15: {
        nestor_uapi_cache_inv inv{};
        inv.size =
            in.ConsumeBool() ? sizeof inv : in.ConsumeIntegralInRange<uint32_t>(0, sizeof inv);
        inv.cache = in.ConsumeIntegral<uint32_t>() & 0xF;
        inv.granularity = in.ConsumeIntegralInRange<uint32_t>(0, 4);
        inv.flags = in.ConsumeIntegralInRange<uint32_t>(0, 3);
        inv.did = in.ConsumeIntegral<uint16_t>();
        inv.source_id = in.ConsumeIntegral<uint16_t>();
        inv.pasid = in.ConsumeIntegral<uint32_t>();
        inv.addr = in.ConsumeIntegral<uint64_t>();
        inv.granule_size = uint64_t{1} << in.ConsumeIntegralInRange<int>(0, 63);
        inv.nb_granules = in.ConsumeBool() ? in.ConsumeIntegral<uint64_t>()
                                           : in.ConsumeIntegralInRange<uint64_t>(0, 8);
        rc = nestor_uapi_cache_invalidate(target,
                                          in.ConsumeIntegralInRange<int>(0, 7) ? &inv : nullptr);
        break;
      }
      case 16: {
        nestor_uapi_iotlb_entry ents[4]{};
        for (auto &x : ents) {
          x.addr = in.ConsumeIntegral<uint64_t>();
          x.npages = in.ConsumeBool() ? NESTOR_UAPI_ALL_PAGES : in.ConsumeIntegral<uint64_t>();
          x.flags = in.ConsumeIntegralInRange<uint32_t>(0, 3);
          x.reserved = in.ConsumeIntegralInRange<uint32_t>(0, 1);
        }
        int error = 0;
        const uint32_t count = in.ConsumeIntegralInRange<uint32_t>(0, 4);
        rc = nestor_uapi_iotlb_invalidate_array(
            target, in.ConsumeIntegral<uint16_t>(), in.ConsumeIntegral<uint32_t>(),
            count || in.ConsumeBool() ? ents : nullptr, count, in.ConsumeBool() ? &error : nullptr);
        break;
      }
      case 17: {
        nestor_inv_stats st{};
        st.size = in.ConsumeIntegralInRange<uint32_t>(0, sizeof st);
        rc = nestor_inv_get_stats(target, in.ConsumeBool() ? &st : nullptr);
        break;
      }
      case 18: {
        const int r = in.ConsumeIntegral<int>();
        FUZZ_CHECK(nestor_fault_name(r) != nullptr, "fault name NULL for %d", r);
        FUZZ_CHECK(nestor_strerror(r) != nullptr, "strerror NULL for %d", r);
        break;
      }
      case 19:
        io.fail = in.ConsumeBool();
        rc = nestor_mem_set_io(target, in.ConsumeBool() ? io_read : nullptr,
                               in.ConsumeBool() ? io_write : nullptr, &io);
        break;
      case 20:
        if (!handles.empty()) {
          const size_t i = in.ConsumeIntegralInRange<size_t>(0, handles.size() - 1);
          nestor_handle_close(handles[i]);
          handles.erase(handles.begin() + long(i));
        } else {
          nestor_handle_close(nullptr);
        }
        break;
      case 21: {  // bind layer create with a garbage config, then a few calls
        nestor_bind_config bc{};
        bc.size = in.ConsumeBool() ? sizeof bc : in.ConsumeIntegralInRange<uint32_t>(0, sizeof bc);
        bc.features = in.ConsumeIntegral<uint32_t>();
        bc.table_base = uint64_t(in.ConsumeIntegral<uint16_t>()) << 12;
        bc.table_size = uint64_t(in.ConsumeIntegralInRange<uint32_t>(0, 1024)) << 12;
        bc.max_domain_id = in.ConsumeIntegral<uint16_t>();
        int err = 0;
        nestor_bind *b = nestor_bind_create(target, in.ConsumeBool() ? &bc : nullptr,
                                            in.ConsumeBool() ? &err : nullptr);
        if (b) {
          uint32_t owner = 0;
          check_rc(nestor_owner_create(b, in.ConsumeIntegral<uint8_t>(),
                                       in.ConsumeBool() ? &owner : nullptr),
                   call);
          nestor_domain_config dc{};
          dc.size = in.ConsumeIntegralInRange<uint32_t>(0, sizeof dc);
          dc.levels = in.ConsumeIntegral<uint8_t>();
          dc.flags = in.ConsumeIntegral<uint32_t>();
          dc.owner = owner;
          uint16_t did = 0;
          check_rc(nestor_domain_create(b, in.ConsumeBool() ? &dc : nullptr,
                                        in.ConsumeBool() ? &did : nullptr),
                   call);
          nestor_nesting_info info{};
          check_rc(nestor_get_nesting_info(b, in.ConsumeBool() ? &info : nullptr,
                                           in.ConsumeIntegralInRange<uint32_t>(0, sizeof info)),
                   call);
          nestor_bind_destroy(b);
        }
        break;
      }
    }
    check_rc(rc, call);
  }
  for (nestor_handle *h : handles) nestor_handle_close(h);
  // Back to what nestor_engine_create gave, for the next input: the callbacks point at this
  // input's stack, and every region added must go (it also must be removable).
  FUZZ_CHECK(nestor_mem_set_io(e, nullptr, nullptr, nullptr) == 0, "clearing callbacks");
  for (auto [base, len] : ram)
    FUZZ_CHECK(nestor_mem_remove_ram(e, base, len) == 0, "region 0x%llx+0x%llx not removable",
               (unsigned long long)base, (unsigned long long)len);
  return 0;
}
