# Sourced by scripts/test and scripts/demo: installs the Debian packages that are missing,
# with apt-get as root or through sudo, or stops with one line naming them.
ntk_ensure_packages() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local run=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      run=(sudo)
    else
      echo "$(basename "$0"): missing packages: ${missing[*]} (install them with: sudo apt-get install ${missing[*]})" >&2
      exit 1
    fi
  fi
  echo "$(basename "$0"): installing ${missing[*]}" >&2
  "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

NTK_BASE_PACKAGES=(cmake g++ make libeigen3-dev catch2 libbenchmark-dev libcli11-dev liblapacke-dev libopenblas-dev
                   libspectra-dev)
# The Python package (python/): pybind11 for Debian's python3, its tests and the offline pip install.
NTK_PYTHON_PACKAGES=(git pybind11-dev python3-dev python3-pybind11 python3-numpy python3-scipy python3-sklearn
                     python3-pytest python3-pip python3-setuptools python3-wheel)
NTK_MPI_PACKAGES=(openmpi-bin libopenmpi-dev libscalapack-openmpi-dev)  # NTK_MPI=ON

# Configures (once) and builds build/ with the "default" preset (Release, -Werror, native).
ntk_build() {
  if [ ! -f build/CMakeCache.txt ] || [ $# -gt 0 ]; then
    cmake --preset default "$@" >/dev/null
  fi
  cmake --build --preset default
}
