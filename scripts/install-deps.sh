#!/usr/bin/env bash
# Installs what nestor needs from Debian 12's packages, only if something is missing.
# Idempotent and quiet; must run as root (or with sudo available).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libtbb-dev libjemalloc-dev libbenchmark-dev libgtest-dev libgmock-dev libcli11-dev libglib2.0-dev
  nlohmann-json3-dev  # nestor-bench --json (writing it; the driver tests read it back)
  gnuplot-nox  # nestor-bench --plot (SVG charts)
  libasan8 libubsan1 libtsan2
  clang-14 libclang-rt-14-dev  # libFuzzer (tests/fuzz)
  libsystemc-dev  # optional example: examples/systemc_iommu (SystemC TLM-2.0 IOMMU module)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
