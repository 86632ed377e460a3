// Export control for the C++ API of libnestor.so.
//
// The shared library is built with hidden visibility (and a version script, engine/nestor.map)
// so that only the C ABI (NESTOR_API in nestor.h) and the public C++ classes and functions
// marked NESTOR_CXX_API are visible to embedders: internal helpers can change without breaking
// anyone, the dynamic symbol table stays small, and calls inside the library need no PLT.
// In the static library the attribute is harmless (visibility only matters when linking a
// shared object), so one header serves both.
#pragma once

#if defined(__GNUC__)
#define NESTOR_CXX_API __attribute__((visibility("default")))
#else
#define NESTOR_CXX_API
#endif
