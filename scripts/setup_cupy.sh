#!/usr/bin/env bash
# CuPy for pygan's GPU path, run by `make setup`. Where nvidia-smi sees a GPU, install the CuPy
# wheel that matches the driver's CUDA major version ("CUDA Version: 13.0" -> cupy-cuda13x) and say
# so; where there is no nvidia-smi, do nothing. When CuPy cannot be installed, print one line saying
# why (training then runs on the CPU) and carry on: this script always exits 0.
#
#   PYTHON              the interpreter to install into (default python3)
#   PYGAN_NVIDIA_SMI    the nvidia-smi to ask (default: nvidia-smi on PATH)
#   PYGAN_NO_CUPY=1     skip CuPy altogether
#   PYGAN_CUPY_DRY_RUN=1  print the package that would be installed ("cupy: <package>"), install nothing
set -u
PYTHON=${PYTHON:-python3}
SMI=${PYGAN_NVIDIA_SMI:-nvidia-smi}
is_set() { case "${1:-}" in 1|on|ON|On|true|True|TRUE|yes|Yes|YES) return 0 ;; *) return 1 ;; esac; }

command -v "$SMI" >/dev/null 2>&1 || exit 0  # no NVIDIA driver here: nothing to do, nothing to say
if is_set "${PYGAN_NO_CUPY:-}"; then
  echo "cupy: PYGAN_NO_CUPY is set; not installing CuPy (training runs on the CPU)"
  exit 0
fi
if ! out=$("$SMI" 2>&1); then
  echo "cupy: nvidia-smi finds no usable GPU ($(printf '%s' "$out" | sed -n 1p)); not installing CuPy, training runs on the CPU"
  exit 0
fi
major=$(printf '%s\n' "$out" | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\..*/\1/p' | sed -n 1p)
case "$major" in
  11|12|13) package="cupy-cuda${major}x" ;;
  "") echo "cupy: nvidia-smi does not report a CUDA version; not installing CuPy, training runs on the CPU"; exit 0 ;;
  *) echo "cupy: no CuPy wheel for the driver's CUDA $major (pygan knows cupy-cuda11x/12x/13x); training runs on the CPU"; exit 0 ;;
esac
if is_set "${PYGAN_CUPY_DRY_RUN:-}"; then
  echo "cupy: $package"
  exit 0
fi
# Any CuPy already there (this wheel or another): leave it; two CuPy wheels conflict.
installed=$("$PYTHON" -c "import cupy; print(cupy.__version__)" 2>/dev/null)
if [ -n "$installed" ]; then
  echo "cupy: CuPy $installed is already installed (the driver's CUDA is $major: $package); not installing"
  exit 0
fi
echo "cupy: the driver supports CUDA $major; installing $package"
if ! log=$("$PYTHON" -m pip install -q "$package" 2>&1); then
  echo "cupy: could not install $package ($(printf '%s' "$log" | grep -m 1 -i 'error' || printf '%s' "$log" | tail -n 1)); training runs on the CPU"
  exit 0
fi
echo "cupy: installed $package"
if ! "$PYTHON" -c "import pygan._C as C, sys; sys.exit(0 if C.cuda_compiled else 1)" 2>/dev/null; then
  echo "cupy: note: pygan._C was built without CUDA (no nvcc at build time); GPU training needs a CUDA build"
fi
exit 0
