// Engine internals shared by its source files.
#pragma once

#include "nestor/engine.h"

namespace nestor {

// The VT-d personality's view of an engine configuration: what its structure decoders and
// capability registers depend on.
VtdPersonality::Config vtd_personality_config(const EngineConfig &cfg);

}  // namespace nestor
