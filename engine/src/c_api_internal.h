// The C handle behind `nestor_engine *`, shared by every C ABI translation unit (c_api.cpp,
// c_api_invalidation.cpp, bind_c_api.cpp): one definition instead of copies that could drift.
#pragma once

#include "nestor.h"
#include "nestor/engine.h"

// Records the reason for the calling thread's last failed create call (nestor_last_error).
void nestor_set_last_error(const char *reason);

struct nestor_engine {
  explicit nestor_engine(const nestor::EngineConfig &cfg) : engine(cfg) {}
  nestor::Engine engine;
};
