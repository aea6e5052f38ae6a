#!/usr/bin/env bash
# Installs the AMDGPU toolchain that compiles our HIP kernels, from Debian's own archive
# (no other downloads): clang/lld/llvm 19, the HIP headers (libamdhip64-dev), the ROCm
# device libraries and clang's runtime libraries (the emulator's AddressSanitizer build).
# Debian 12 (bookworm) and 13 (trixie); run as root. Idempotent: when everything is
# installed it only checks and exits.
set -euo pipefail

LLVM_VERSION=19
COMMON_PACKAGES=(
    "clang-${LLVM_VERSION}" "lld-${LLVM_VERSION}" "llvm-${LLVM_VERSION}"
    "libclang-rt-${LLVM_VERSION}-dev" libamdhip64-dev
)
# The device libraries changed name: bookworm ships rocm-device-libs (for clang 15),
# trixie rocm-device-libs-17, later releases amd-device-libs. Any of them works: bitcode
# reads forward, and the build generates the gfx11 files an old set lacks.
DEVICE_LIB_PACKAGES=(rocm-device-libs rocm-device-libs-17 amd-device-libs)

die() { echo "install-toolchain: $*" >&2; exit 1; }
is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
is_available() { [ -n "$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '(none)')" ]; }

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get install)"
command -v apt-get >/dev/null || die "needs apt-get (Debian 12 or 13)"
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")"
case "$codename" in
    bookworm|trixie) ;;
    *) echo "install-toolchain: untested release '$codename' (made for bookworm and trixie); trying anyway" >&2 ;;
esac

installed_device_libs=""
for package in "${DEVICE_LIB_PACKAGES[@]}"; do
    if is_installed "$package"; then installed_device_libs="$package"; break; fi
done
missing=()
for package in "${COMMON_PACKAGES[@]}"; do
    is_installed "$package" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ] && [ -n "$installed_device_libs" ]; then
    echo "install-toolchain: already installed (${COMMON_PACKAGES[*]} $installed_device_libs)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
for package in "${missing[@]}"; do
    is_available "$package" || die "package $package is not in the apt sources of '$codename'" \
        "(clang-${LLVM_VERSION} is in bookworm and trixie main; check /etc/apt/sources.list*)"
done
if [ -z "$installed_device_libs" ]; then
    for package in "${DEVICE_LIB_PACKAGES[@]}"; do
        if is_available "$package"; then missing+=("$package"); installed_device_libs="$package"; break; fi
    done
    [ -n "$installed_device_libs" ] || die "no ROCm device-library package (${DEVICE_LIB_PACKAGES[*]}) in the apt sources of '$codename'"
fi
echo "install-toolchain: installing ${missing[*]}"
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
"clang++-${LLVM_VERSION}" --version | head -n 1
echo "install-toolchain: done"
