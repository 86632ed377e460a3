// The C handle behind `nestor_engine *`, shared by every C ABI translation unit (c_api.cpp,
// c_api_invalidation.cpp, bind_c_api.cpp, c_api_events.cpp): one definition instead of copies
// that could drift.
#pragma once

#include <array>
#include <mutex>

#include "nestor.h"
#include "nestor/engine.h"

// Records the reason for the calling thread's last failed create call (nestor_last_error).
void nestor_set_last_error(const char *reason);

namespace nestor::capi {

// A C event hook. The C++ hook carries one user pointer, the C one a function and a user
// pointer: the C++ hook's user pointer is this slot, which lives as long as the engine handle.
struct EventHookSlot {
  nestor_event_fn fn = nullptr;  // nullptr: slot free
  void *user = nullptr;
  int id = -1;  // the engine's hook id
};

// nestor_result from a C++ result: nestor_translate's answer, and the translate events'.
inline void to_c_result(const Result &out, nestor_result *res) {
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
}

}  // namespace nestor::capi

struct nestor_engine {
  explicit nestor_engine(const nestor::EngineConfig &cfg) : engine(cfg) {}
  nestor::Engine engine;
  // nestor_event_hook_add/remove: the slots, indexed by the C hook id, and what serialises them.
  std::mutex hook_mu;
  std::array<nestor::capi::EventHookSlot, nestor::EventHooks::kMaxHooks> hooks{};
};
