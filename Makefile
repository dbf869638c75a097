# `make demo` and `make test` each set everything up first (idempotent), then do their job.
# Build options (PYGAN_CPU_ONLY, PYGAN_CUDA_ARCH, ...) pass through to the build from the
# environment or the make command line (make exports both), e.g.  make test PYGAN_CPU_ONLY=1
#
# `make setup` installs pygan (pip install -e ".[dev]", which builds the native extension) only
# when something the build reads changed since the last successful set-up: the stamp file
# build/.setup-stamp records that set-up and the build options it used. Otherwise it checks that
# pygan._C (and pygan._emu) import, and is done in a second. `make clean` removes the stamp.
PYTHON ?= python3
SHELL := /bin/bash

STAMP := build/.setup-stamp
SETUP_LOG := build/setup.log
# Everything the build reads: a change to any of them makes the next `make setup` rebuild.
BUILD_INPUTS := setup.py pyproject.toml CMakeLists.txt $(wildcard csrc/* csrc/emu/* csrc/cpu/*)
# The build options, and the compilers the build would find: a change also means a rebuild.
BUILD_CONFIG = python=$$($(PYTHON) -c "import sys; print(sys.executable)" 2>/dev/null) nvcc=$$(command -v nvcc) \
  PYGAN_CPU_ONLY=$$PYGAN_CPU_ONLY PYGAN_CUDA_ARCH=$$PYGAN_CUDA_ARCH PYGAN_REQUIRE_CUDA=$$PYGAN_REQUIRE_CUDA \
  PYGAN_BUILD_JOBS=$$PYGAN_BUILD_JOBS PYGAN_NO_EMULATION=$$PYGAN_NO_EMULATION PYGAN_NO_CPU_GEMM=$$PYGAN_NO_CPU_GEMM \
  CUDACXX=$$CUDACXX \
  CMAKE_ARGS=$$CMAKE_ARGS DEBUG=$$DEBUG
comma := ,
_on = $(filter 1 on ON On true True TRUE yes Yes YES,$(strip $(1)))
IMPORT_CHECK = import pygan._C$(if $(call _on,$(PYGAN_NO_CPU_GEMM)),,$(comma) pygan._cpu)$(if $(call _on,$(PYGAN_NO_EMULATION)),,$(comma) pygan._emu)

.PHONY: setup setup-check setup-data setup-cupy setup-mpi test demo clean

setup: setup-data
	@if $(MAKE) -s --no-print-directory setup-check 2>/dev/null; then \
	  echo "pygan is set up: nothing the build reads changed since the last set-up (make clean forces a rebuild)"; \
	else \
	  mkdir -p build && rm -f $(STAMP) build/.pip-status && \
	  echo "installing pygan: pip install -e \".[dev]\" builds the native extension with CMake (a few minutes the first time; full log: $(SETUP_LOG))" && \
	  { { $(PYTHON) -m pip install -v -e ".[dev]" 2>&1; echo $$? > build/.pip-status; } | tee $(SETUP_LOG) \
	      | { grep --line-buffered -E '^\[ *[0-9]+%\]|^-- pygan:|CMake Error|error:|^ERROR|^Successfully installed' || true; }; } && \
	  if [ "$$(cat build/.pip-status)" != 0 ]; then \
	    echo "pygan: set-up failed (pip exit status $$(cat build/.pip-status)); the last lines of $(SETUP_LOG):"; \
	    tail -n 40 $(SETUP_LOG); exit 1; \
	  fi && \
	  $(PYTHON) -c "$(IMPORT_CHECK)" && echo "$(BUILD_CONFIG)" > $(STAMP) && echo "pygan installed"; \
	fi
	@$(MAKE) -s --no-print-directory setup-cupy
	@$(MAKE) -s --no-print-directory setup-mpi

# Exit 0 when the stamp is newer than every build input, records the same build options, and the
# native modules import; 1 otherwise.
setup-check:
	@test -f $(STAMP) \
	  && [ -z "$$(find $(BUILD_INPUTS) -newer $(STAMP) 2>/dev/null | head -n 1)" ] \
	  && [ "$$(cat $(STAMP))" = "$(BUILD_CONFIG)" ] \
	  && $(PYTHON) -c "$(IMPORT_CHECK)" 2>/dev/null

# The Fashion-MNIST data set from apt, when apt-get is there and we are root (skipped when installed).
setup-data:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	    && ! dpkg-query -W -f='$${Status}' dataset-fashion-mnist 2>/dev/null | grep -q 'ok installed'; then \
	  echo "installing Fashion-MNIST (apt: dataset-fashion-mnist)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "warning: could not install dataset-fashion-mnist; continuing"; \
	fi

# mpi4py and an MPI launcher for data-parallel training (a quick no-op when there): scripts/setup_mpi.sh.
setup-mpi:
	@PYTHON="$(PYTHON)" scripts/setup_mpi.sh

# CuPy, on a machine whose nvidia-smi sees a GPU (a no-op elsewhere): scripts/setup_cupy.sh.
setup-cupy:
	@PYTHON="$(PYTHON)" scripts/setup_cupy.sh

test: setup
	$(PYTHON) -m pytest -q

# The main job: DCGAN on Fashion-MNIST, 5 epochs at 32x32, on the GPU when there is one.
demo: setup
	$(PYTHON) -m pygan train --dataset fashion-mnist --niter 5 --imageSize 32 --device auto \
	  --manualSeed 1 --outf runs/fashion-mnist

clean:
	rm -rf build *.egg-info .pytest_cache .hypothesis
	find pygan tests -name '__pycache__' -type d -prune -exec rm -rf {} +
	find pygan \( -name '_C*.so' -o -name '_cpu*.so' -o -name '_emu*.so' \) -delete
