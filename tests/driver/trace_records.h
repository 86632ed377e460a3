// Helpers the trace tests share: a finished trace's translate records, and its replay.
#pragma once

#include <cstdint>
#include <vector>

#include "trace.h"

namespace nestor::trace {

// The translate records of a finished trace, in order.
inline std::vector<TranslateRecord> translations(const std::vector<uint8_t> &bytes) {
  std::vector<TranslateRecord> out;
  Reader r(bytes);
  Record rec;
  while (r.next(&rec))
    if (rec.tag == Tag::kTranslate) out.push_back(rec.translate);
  return out;
}

// replay() on a fresh engine, cached or not, with the default options otherwise.
inline ReplayResult replay_bytes(const std::vector<uint8_t> &bytes, bool caching) {
  Reader r(bytes);
  ReplayOptions o;
  o.caching = caching;
  return replay(r, o);
}

}  // namespace nestor::trace
