#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for moe-actors, idempotently:
#   1. system packages: MPICH (+dev files), OpenBLAS (+dev files), pkg-config, a C++ toolchain, Chromium
#      (browser tests of the HTML timeline). Installed only when missing, and only as root; otherwise we say
#      exactly what to install.
#   2. `npm ci`, which also builds the native addons (native/kernels always, native/mpi where MPICH is found).
# Options: --with-torch  also install Debian's python3-torch (only needed to regenerate test fixtures).
#          --no-browser  skip Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

with_torch=0
with_browser=1
for a in "$@"; do
  case "$a" in
    --with-torch) with_torch=1 ;;
    --no-browser) with_browser=0 ;;
    *) echo "setup.sh: unknown option $a (use --with-torch, --no-browser)" >&2; exit 2 ;;
  esac
done

pkgs=(mpich libmpich-dev libopenblas-dev libdnnl-dev pkg-config g++ make python3)
[ "$with_browser" = 1 ] && pkgs+=(chromium)
[ "$with_torch" = 1 ] && pkgs+=(python3-torch python3-numpy)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
else
  echo "setup.sh: not a Debian/Ubuntu system; make sure these are installed: ${pkgs[*]}" >&2
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "setup.sh: missing system packages: ${missing[*]}" >&2
    echo "  install them with: sudo apt-get install ${missing[*]}" >&2
    echo "  (without MPICH the mpi transport is unavailable; without OpenBLAS the native kernels do not build)" >&2
    exit 1
  fi
fi

# Debian may install OpenMPI beside MPICH (python3-mpi4py pulls it in), and then plain `mpiexec` is OpenMPI.
# moe-actors always calls mpiexec.mpich; say so if the default points elsewhere.
if command -v mpiexec >/dev/null 2>&1 && ! mpiexec --version 2>&1 | grep -qi -E 'hydra|mpich'; then
  echo "setup.sh: note: plain 'mpiexec' is not MPICH here; moe-actors launches with 'mpiexec.mpich'."
fi

npm ci --no-audit --no-fund
echo "setup.sh: done. Run 'npm start' for the debug job, 'npm test' for the tests."
