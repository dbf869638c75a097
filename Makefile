# `make demo` and `make test` each set everything up first (idempotent), then do their job.
# Build options (PYGAN_CPU_ONLY, PYGAN_CUDA_ARCH, ...) pass through to the build from the
# environment or the make command line (make exports both), e.g.  make test PYGAN_CPU_ONLY=1
PYTHON ?= python3

.PHONY: setup test demo clean

setup:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	    && ! dpkg-query -W -f='$${Status}' dataset-fashion-mnist 2>/dev/null | grep -q 'ok installed'; then \
	  echo "installing Fashion-MNIST (apt: dataset-fashion-mnist)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "warning: could not install dataset-fashion-mnist; continuing"; \
	fi
	$(PYTHON) -m pip install -e ".[dev]"

test: setup
	$(PYTHON) -m pytest -q

# The main job: DCGAN on Fashion-MNIST, 5 epochs at 32x32, on the GPU when there is one.
demo: setup
	$(PYTHON) -m pygan train --dataset fashion-mnist --niter 5 --imageSize 32 --device auto \
	  --manualSeed 1 --outf runs/fashion-mnist

clean:
	rm -rf build *.egg-info .pytest_cache .hypothesis
	find pygan tests -name '__pycache__' -type d -prune -exec rm -rf {} +
	find pygan \( -name '_C*.so' -o -name '_emu*.so' \) -delete
