#!/usr/bin/env bash
# Installs a nestor build into a temporary prefix, checks the layout and the exported symbols,
# then builds and runs out-of-tree C and C++ consumers with find_package(nestor) and with
# pkg-config. Usage: run.sh BUILD_DIR PROJECT_DIR CMAKE GENERATOR SANITIZE CC CXX
set -euo pipefail
build="$1" project="$2" cmake="$3" generator="$4" sanitize="$5" cc="$6" cxx="$7"

if [ -n "$sanitize" ]; then
  echo "SKIP: consumer test needs an unsanitized build (NESTOR_SANITIZE=$sanitize): the installed"
  echo "      libraries would require every out-of-tree program to link the sanitizer runtime."
  exit 77
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
fail() { echo "consumer: FAIL: $*" >&2; exit 1; }

echo "== install into $prefix"
"$cmake" --install "$build" --prefix "$prefix" >/dev/null
libdir="$(dirname "$(find "$prefix" -name libnestor.so -print -quit)")"
[ -n "$libdir" ] && [ -d "$libdir" ] || fail "libnestor.so not installed"
for f in "$libdir/libnestor.a" "$libdir/libnestor_invq.a" "$libdir/pkgconfig/nestor.pc" \
         "$libdir/cmake/nestor/nestorConfig.cmake" "$libdir/cmake/nestor/nestorTargets.cmake" \
         "$libdir/cmake/nestor/nestorConfigVersion.cmake" \
         "$prefix/include/nestor.h" "$prefix/include/nestor/export.h" \
         "$prefix/include/nestor/engine.h" "$prefix/include/nestor/bind.h" \
         "$prefix/include/nestor/walkers/types.h" "$prefix/include/nestor/caches/iotlb.h" \
         "$prefix/include/nestor/invq/op.h" "$prefix/include/nestor/events.h"; do
  [ -e "$f" ] || fail "missing $f"
done

echo "== exported symbols of libnestor.so"
# Allowed: the C ABI (nestor_*) and C++ symbols of namespace nestor (functions, vtables,
# typeinfo, thunks). Anything else (std:: instantiations, internals) must stay hidden.
bad="$(nm -D --defined-only "$libdir/libnestor.so" | awk '{print $3}' | c++filt |
  grep -Ev '^nestor_[A-Za-z0-9_]+$' |
  grep -Ev '^((vtable|typeinfo|typeinfo name|VTT|guard variable) for |(non-)?virtual thunk to )?nestor::' || true)"
if [ -n "$bad" ]; then
  echo "$bad" | head -20 >&2
  fail "libnestor.so exports symbols outside nestor_* / nestor::"
fi
echo "   $(nm -D --defined-only "$libdir/libnestor.so" | grep -c ' nestor_') C symbols," \
     "$(nm -D --defined-only "$libdir/libnestor.so" | awk '{print $3}' | grep -c '^_Z') C++ symbols, nothing else"

export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== find_package(nestor)"
"$cmake" -S "$project" -B "$tmp/cmake-build" -G "$generator" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" >/dev/null
"$cmake" --build "$tmp/cmake-build" >/dev/null
for exe in consumer_c consumer_cpp consumer_c_static consumer_cpp_static; do
  "$tmp/cmake-build/$exe" || fail "$exe (find_package) failed"
done

echo "== pkg-config"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
pkg-config --exists nestor || fail "pkg-config does not find nestor"
read -r -a cflags <<<"$(pkg-config --cflags nestor)"
read -r -a libs <<<"$(pkg-config --libs nestor)"
# Static: Libs.private must be enough for a C program to link libnestor.a (C++ runtime, invq).
read -r -a static_libs <<<"$(pkg-config --static --libs nestor |
  sed -e 's/-lnestor_invq/-l:libnestor_invq.a/' -e 's/-lnestor\b/-l:libnestor.a/')"
warn=(-Wall -Wextra -Werror)
"$cc" -std=c99 "${warn[@]}" "${cflags[@]}" "$project/consumer.c" "${libs[@]}" -o "$tmp/pc_c"
"$cxx" -std=c++20 "${warn[@]}" "${cflags[@]}" "$project/consumer.cpp" "${libs[@]}" -o "$tmp/pc_cpp"
"$cc" -std=c99 "${warn[@]}" "${cflags[@]}" "$project/consumer.c" "${static_libs[@]}" \
  -o "$tmp/pc_c_static"
for exe in pc_c pc_cpp pc_c_static; do
  "$tmp/$exe" || fail "$exe (pkg-config) failed"
done
ldd "$tmp/pc_c_static" | grep -q libnestor && fail "pc_c_static should not need libnestor.so"
echo "consumer: all checks passed"
