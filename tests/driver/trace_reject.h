// Reads a whole trace and returns why the reader rejected it ("" if it was accepted).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "trace.h"

namespace nestor::trace {

inline std::string reject_reason(std::vector<uint8_t> bytes) {
  try {
    Reader r(std::move(bytes));
    Record rec;
    while (r.next(&rec)) {
    }
  } catch (const Error &e) {
    return e.what();
  }
  return "";
}

}  // namespace nestor::trace
