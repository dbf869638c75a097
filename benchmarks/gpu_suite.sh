#!/usr/bin/env bash
# GPU suite: build, test and benchmark everything on a GPU machine in one call, offline, and write
# OUTDIR/report.md (device, driver, versions, pass/fail per section, timings).
#
#   benchmarks/gpu_suite.sh OUTDIR
#
# Needs: nvcc, CMake, a C++ compiler, Python with numpy, CuPy, pybind11, setuptools>=64, pytest and
# hypothesis already installed (no downloads: the build uses --no-build-isolation --no-deps). Every
# section's failure is recorded in the report, never fatal.
#
# The default run (issue 13, section 3), in this order, inside about 12 minutes:
#   build                 pip install -e . with nvcc -lineinfo (sanitizer reports name source lines),
#                         for the GPU's own arch only (PYGAN_CUDA_ARCH overrides)
#   cuda_available        the module sees the GPU; the variant lists
#   memcheck, racecheck, synccheck
#                         compute-sanitizer on benchmarks/gpu_checks.py small: every variant of every
#                         kernel family once at a small shape (outputs poisoned, float64 reference)
#   correctness_dcgan     benchmarks/gpu_checks.py dcgan: every variant at the DCGAN 64x64 shapes
#                         (batch 128), outputs poisoned, against the float64 reference
#   stream                benchmarks/gpu_checks.py stream: ops run on a non-default stream, queued
#                         behind its earlier work (not on the legacy default stream)
#   bench_conv, bench_conv_transpose, bench_batchnorm
#                         timings against PyTorch/cuDNN (conv: TF32 off and on), JSON in OUTDIR
#   end_to_end            a short DCGAN training run on the GPU (+ `pygan eval` with Fashion-MNIST)
# Environment knobs:
#   SUITE_FULL=1         afterwards also: the CUDA and emulation pytest suites, memcheck over every
#                        CUDA test, the NCCL smoke test and every other benchmark script (long)
#   SUITE_FULL_TESTS=1   also run the whole CPU test suite (-m "not cuda and not slow")
#   SUITE_SANITIZER=0    skip the compute-sanitizer runs
#   SUITE_BENCH_BUDGET   seconds of timed runs per benchmark case (default 0.2)
#   SUITE_BENCH_TIMEOUT  seconds per benchmark script (default 120; 600 with SUITE_FULL=1)
#   SUITE_SECTIONS       comma-separated section names to run (default: all), e.g. under a
#                        10-minute limit per call: "build,cuda_available,memcheck,racecheck,synccheck,
#                        correctness_dcgan,stream" then "build,bench_conv,bench_conv_transpose,
#                        bench_batchnorm,end_to_end" on the still-warm machine (incremental build)
#   SUITE_DEADLINE       seconds from the start after which no new section begins (default 690),
#                        so a call with a hard time limit still returns a complete report
set -u
SUITE_START=$(date +%s)
if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
export OUT
LOGS="$OUT/logs"
mkdir -p "$LOGS"
cd "$ROOT" || exit 2
PY="${PYTHON:-python3}"
export PY
REPORT="$OUT/report.md"
SUMMARY="$OUT/.summary"
: >"$SUMMARY"
have() { command -v "$1" >/dev/null 2>&1; }
TIMEOUT=""
have timeout && TIMEOUT="timeout"

# section NAME SECONDS CMD...: run CMD with a time limit, log to logs/NAME.log, record the outcome.
section() {
  local name="$1" limit="$2"
  shift 2
  if [ -n "${SUITE_SECTIONS:-}" ] && [[ ",$SUITE_SECTIONS," != *",$name,"* ]]; then
    return 0
  fi
  if [ -n "${SUITE_DEADLINE:-}" ] && [ $(($(date +%s) - SUITE_START)) -ge "$SUITE_DEADLINE" ]; then
    skip "$name" "SUITE_DEADLINE ${SUITE_DEADLINE}s reached"
    return 0
  fi
  if [ -n "${SUITE_DEADLINE:-}" ]; then  # never run past the deadline
    local left=$((SUITE_DEADLINE - ($(date +%s) - SUITE_START)))
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  local log="$LOGS/$name.log" start end rc status
  echo "== $name: $*" | tee "$log"
  start=$(date +%s%N)
  if [ -n "$TIMEOUT" ] && declare -F "$1" >/dev/null; then  # a function of this script: via bash
    $TIMEOUT --kill-after=30 "$limit" bash -c "$(declare -f "$1"); $1" >>"$log" 2>&1
  elif [ -n "$TIMEOUT" ]; then
    $TIMEOUT --kill-after=30 "$limit" "$@" >>"$log" 2>&1
  else
    "$@" >>"$log" 2>&1
  fi
  rc=$?
  end=$(date +%s%N)
  case $rc in
    0) status=PASS ;;
    124 | 137) status="FAIL (timed out after ${limit}s)" ;;
    *) status="FAIL (exit $rc)" ;;
  esac
  local tenths=$(((end - start) / 100000000))
  printf '%s\t%s\t%d.%d\n' "$name" "$status" $((tenths / 10)) $((tenths % 10)) >>"$SUMMARY"
  echo "== $name: $status"
  write_report
  return 0
}

# skip NAME WHY: record a section that could not run here.
skip() {
  if [ -n "${SUITE_SECTIONS:-}" ] && [[ ",$SUITE_SECTIONS," != *",$1,"* ]]; then
    return 0
  fi
  printf '%s\t%s\t-\n' "$1" "SKIP ($2)" >>"$SUMMARY"
  echo "== $1: SKIP ($2)"
  write_report
}

env_facts() {
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- host: $(uname -srm)"
  if have nvidia-smi; then
    echo "- device: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | sed -n 1p)"
    echo "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | sed -n 1p)"
  else
    echo "- device: (nvidia-smi not found)"
  fi
  echo "- nvcc: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'not found')"
  "$PY" - <<'PYEOF' 2>/dev/null || echo "- python: (failed to query versions)"
import importlib, platform
print(f"- python: {platform.python_version()}")
for name in ("numpy", "cupy", "torch", "pybind11", "pytest", "hypothesis"):
    try:
        print(f"- {name}: {importlib.import_module(name).__version__}")
    except Exception as exc:
        print(f"- {name}: not available ({type(exc).__name__})")
try:
    import cupy
    print(f"- CUDA runtime (CuPy): {cupy.cuda.runtime.runtimeGetVersion()}, "
          f"device: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
except Exception as exc:
    print(f"- CUDA via CuPy: unavailable ({type(exc).__name__}: {exc})")
try:
    from pygan import _C
    print(f"- pygan._C build_info: {_C.build_info()}")
except Exception as exc:
    print(f"- pygan._C: not importable ({type(exc).__name__})")
PYEOF
}

write_report() {
  {
    echo "# pygan GPU suite report"
    echo
    env_facts
    echo
    echo "| section | result | seconds |"
    echo "| --- | --- | --- |"
    while IFS=$'\t' read -r name status secs; do
      echo "| $name | $status | $secs |"
    done <"$SUMMARY"
    echo
    echo "Logs: \`logs/<section>.log\`. Outputs (tails for tests, in full for benchmarks):"
    for log in "$LOGS"/*.log; do
      [ -e "$log" ] || continue
      local name
      name="$(basename "$log" .log)"
      echo
      echo "## $name"
      echo
      echo '```'
      case "$name" in
        bench_*) tail -c 20000 "$log" ;;
        *) tail -n 40 "$log" ;;
      esac
      echo '```'
    done
  } >"$REPORT.tmp" && mv "$REPORT.tmp" "$REPORT"
}

build() {
  export PYGAN_REQUIRE_CUDA=1
  # -lineinfo: compute-sanitizer and profilers name the source line (no effect on the code made)
  export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_CUDA_FLAGS=-lineinfo"
  # (this function runs in a fresh bash, where this script's helpers such as `have` do not exist)
  if [ -z "${PYGAN_CUDA_ARCH:-}" ] && command -v nvidia-smi >/dev/null 2>&1; then  # this GPU's arch only
    PYGAN_CUDA_ARCH="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | sed -n 1p | tr -d '. ')"
    [ -n "$PYGAN_CUDA_ARCH" ] && export PYGAN_CUDA_ARCH
  fi
  echo "CMAKE_ARGS=$CMAKE_ARGS PYGAN_CUDA_ARCH=${PYGAN_CUDA_ARCH:-default}"
  if "$PY" -m pip install --no-build-isolation --no-deps -e .; then
    return 0
  fi
  echo "pip install failed; trying setup.py build_ext --inplace"
  "$PY" setup.py build_ext --inplace
}

check_cuda() {
  "$PY" - <<'PYEOF'
from pygan import _C, backend
print(_C.build_info(), "devices:", _C.cuda_device_count())
assert _C.cuda_compiled, "pygan._C was built without CUDA"
assert backend.cuda_available(), backend._problem()
print("variants:", _C.variants())
PYEOF
}

# A short DCGAN run on the GPU with evaluation on (our kernels end to end: training, checkpoints, the
# eval classifier's forward pass), then `pygan eval` of its checkpoint on the GPU. Fashion-MNIST from
# the system or SUITE_DATAROOT; without it, a run on procedural images and no evaluation.
end_to_end() {
  local run="$OUT/e2e_run" root=()
  [ -n "${SUITE_DATAROOT:-}" ] && root=(--dataroot "$SUITE_DATAROOT")
  if "$PY" -c "import sys; from pygan import data; data.load_dataset('fashion-mnist', sys.argv[1] if len(sys.argv) > 1 else None, train=False)" ${root[@]+"${root[1]}"}; then
    "$PY" -m pygan train --dataset fashion-mnist ${root[@]+"${root[@]}"} --niter 1 --max-steps 200 --device cuda \
      --manualSeed 1 --eval-every 100 --eval-n 2000 --no-progress --overwrite --outf "$run" &&
      cat "$run/eval.csv" &&
      "$PY" -m pygan eval --checkpoint "$run/checkpoint.safetensors" ${root[@]+"${root[@]}"} --device cuda \
        --out "$run/eval.json"
  else
    echo "Fashion-MNIST not found (set SUITE_DATAROOT): training on procedural images, no evaluation"
    "$PY" -m pygan train --dataset fake --nc 1 --fake-size 12800 --niter 1 --max-steps 200 --device cuda \
      --manualSeed 1 --no-progress --overwrite --outf "$run"
  fi
}

# Data parallelism through NCCL with the one GPU at hand: `--distributed` makes one rank whose
# gradients and sync-BN statistics go through cupy.cuda.nccl (all-reduce over one GPU, on CuPy's
# stream); its weights must equal a plain run's (float32 tolerance). Needs NCCL in CuPy (the
# nvidia-nccl-cu* wheel); when it is missing this section fails with that message and the suite goes on.
nccl_smoke() {
  local args=(--dataset fake --nc 1 --fake-size 256 --batchSize 32 --ngf 16 --ndf 16 --max-steps 6 --device cuda
              --manualSeed 3 --no-progress)
  "$PY" -c "from cupy.cuda import nccl; print('NCCL available:', getattr(nccl, 'available', '?'), nccl.get_version())" &&
  "$PY" -m pygan train "${args[@]}" --overwrite --outf "$OUT/nccl_plain" &&
  "$PY" -m pygan train "${args[@]}" --distributed --sync-bn --overwrite --outf "$OUT/nccl_one_rank" &&
  "$PY" - "$OUT/nccl_plain/checkpoint.safetensors" "$OUT/nccl_one_rank/checkpoint.safetensors" <<'PY'
import sys
import numpy as np
from pygan import checkpoint
a, _ = checkpoint.load(sys.argv[1])
b, meta = checkpoint.load(sys.argv[2])
worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a if k.startswith(("G.", "D.")) and a[k].size)
print(f"1-rank NCCL run vs plain run: max |difference| of G and D weights {worst:.3g} (world_size {meta['world_size']})")
sys.exit(0 if worst < 1e-4 else 1)
PY
}

# --cuda-graph against eager for the same seed (pygan.cuda_graph): after warm-up the graph run
# replays captured D and G steps; its weights must equal the eager run's within float32 tolerance,
# and it must not have fallen back (no "training eagerly" line).
cuda_graph_check() {
  local args=(--dataset fake --nc 1 --fake-size 1024 --batchSize 64 --max-steps 12 --device cuda --manualSeed 5
              --eval-every 0 --no-progress --overwrite)
  "$PY" -m pygan train "${args[@]}" --outf "$OUT/graph_eager" &&
  "$PY" -m pygan train "${args[@]}" --cuda-graph --outf "$OUT/graph_replayed" 2>"$OUT/graph_replayed.stderr" &&
  cat "$OUT/graph_replayed.stderr" &&
  ! grep -q "training eagerly" "$OUT/graph_replayed.stderr" &&
  "$PY" - "$OUT/graph_eager" "$OUT/graph_replayed" <<'PY'
import csv, sys
import numpy as np
from pygan import checkpoint
a, _ = checkpoint.load(sys.argv[1] + "/checkpoint.safetensors")
b, _ = checkpoint.load(sys.argv[2] + "/checkpoint.safetensors")
worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a if a[k].dtype.kind == "f" and a[k].size)
rows = [list(csv.DictReader(open(d + "/log.csv"))) for d in sys.argv[1:]]
loss = max(abs(float(x[c]) - float(y[c])) for x, y in zip(*rows) for c in ("loss_D", "loss_G"))
print(f"--cuda-graph vs eager after 12 steps: max |weight/state difference| {worst:.3g}, max |loss difference| {loss:.3g}")
sys.exit(0 if worst < 1e-4 and loss < 1e-4 else 1)
PY
}

SUITE_DEADLINE="${SUITE_DEADLINE:-690}"
FULL="${SUITE_FULL:-0}"
BENCH_TIMEOUT="${SUITE_BENCH_TIMEOUT:-$([ "$FULL" = 1 ] && echo 600 || echo 120)}"
BENCH_BUDGET="${SUITE_BENCH_BUDGET:-0.2}"
SANITIZER="$(command -v compute-sanitizer || true)"
if [ -z "$SANITIZER" ] && have nvcc; then  # often in the toolkit's bin/ without being on PATH
  for cand in "$(dirname "$(command -v nvcc)")/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer; do
    [ -x "$cand" ] && SANITIZER="$cand" && break
  done
fi

write_report
section build 420 build
section cuda_available 60 check_cuda
# compute-sanitizer on one small shape per kernel family (every variant): memcheck, then racecheck
# (shared-memory hazards) and synccheck (barriers); its exit status and the checks' both count.
for tool in memcheck racecheck synccheck; do
  if [ "${SUITE_SANITIZER:-1}" = 0 ]; then
    skip "$tool" "SUITE_SANITIZER=0"
  elif [ -n "$SANITIZER" ]; then
    section "$tool" 150 "$SANITIZER" --tool "$tool" --error-exitcode 99 --print-limit 50 \
      "$PY" benchmarks/gpu_checks.py small
  else
    skip "$tool" "compute-sanitizer not found"
  fi
done
section correctness_dcgan 150 "$PY" benchmarks/gpu_checks.py dcgan
section stream 60 "$PY" benchmarks/gpu_checks.py stream
# timings against cuDNN (bench_conv: TF32 off and on), each implementation checked first
# bench_conv: the default variant 3 against the wmma and stride-aware ones (5-7) and the pipelined
# FP32 / mma.sync TF32 ones (8, 9); 1, 2 and 4 (direct port, 16x16 tiles, 3 + float4) stay out of the budget
for name in bench_conv bench_conv_transpose bench_batchnorm; do
  variants=()
  [ "$name" = bench_conv ] && variants=(--variants 3 5 6 7 8 9)
  section "$name" "$BENCH_TIMEOUT" "$PY" "benchmarks/$name.py" --device cuda --budget "$BENCH_BUDGET" \
    ${variants[@]+"${variants[@]}"} --out "$OUT/$name.json"
done
section end_to_end 180 end_to_end
section cuda_graph_check 120 cuda_graph_check
# the D+G step: pygan eager and --cuda-graph against PyTorch eager and PyTorch with a CUDA graph
section bench_train_step "$BENCH_TIMEOUT" "$PY" benchmarks/bench_train_step.py --device cuda --repeats 5 \
  --out "$OUT/bench_train_step.json"

if [ "$FULL" = 1 ]; then
  section pytest_cuda 1200 "$PY" -m pytest -q -rfEs -m cuda tests
  EMU_TESTS=$(ls tests/test_emulated*.py tests/test_ops_parity.py 2>/dev/null | tr '\n' ' ')
  # shellcheck disable=SC2086
  # (not the `slow` ones: variant 9's real-channel DCGAN layers emulate mma.sync for minutes each)
  section pytest_emulation 900 "$PY" -m pytest -q -rfEs -m "not slow" $EMU_TESTS
  section nccl_smoke 300 nccl_smoke
  if [ "${SUITE_SANITIZER:-1}" != 0 ] && [ -n "$SANITIZER" ]; then
    CUDA_TESTS=$(ls tests/test_cuda*.py 2>/dev/null | tr '\n' ' ')
    # CuPy's memory pool hides little from memcheck (its blocks are real allocations). All CUDA tests.
    # shellcheck disable=SC2086
    section memcheck_cuda_tests 1800 "$SANITIZER" --tool memcheck --error-exitcode 99 --print-limit 50 \
      "$PY" -m pytest -q -x -m cuda -p no:cacheprovider $CUDA_TESTS
  fi
  for script in benchmarks/bench_*.py; do
    [ -e "$script" ] || continue
    name="$(basename "$script" .py)"
    case "$name" in bench_conv | bench_conv_transpose | bench_batchnorm | bench_train_step) continue ;; esac
    args=()
    if "$PY" "$script" --help 2>/dev/null | grep -q -- "--device"; then
      args=(--device cuda)
    fi
    section "$name" "$BENCH_TIMEOUT" "$PY" "$script" ${args[@]+"${args[@]}"}
  done
fi
if [ "${SUITE_FULL_TESTS:-0}" = 1 ]; then
  section pytest_full 2400 "$PY" -m pytest -q -rfEs -m "not cuda and not slow" tests
fi
write_report
echo "report: $REPORT"
