"""The native extension builds, imports, and reports what it was built with."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pygan.backend as backend
from pygan import _C

ROOT = Path(__file__).resolve().parents[1]
BUILD_INFO_KEYS = {
    "cuda_compiled",
    "compiler",
    "build_type",
    "cuda_compiler",
    "cuda_arch",
    "cuda_runtime_version",
}


def test_extension_imports():
    assert isinstance(_C.cuda_compiled, bool)
    assert backend.cuda_compiled() is _C.cuda_compiled


def test_cuda_available_is_quick_bool():
    backend._cached_problem.cache_clear()
    start = time.perf_counter()
    answer = backend.cuda_available()
    elapsed = time.perf_counter() - start
    assert isinstance(answer, bool)
    assert elapsed < 2.0, f"cuda_available() took {elapsed:.2f} s"
    assert backend.cuda_available() is answer  # cached, same answer


def test_cuda_available_false_without_gpu():
    if _C.cuda_device_count() > 0:
        pytest.skip("a CUDA device is visible here")
    assert backend.cuda_available() is False
    with pytest.raises(RuntimeError):
        backend.require_cupy()


def test_build_info_keys():
    info = _C.build_info()
    assert set(info) == BUILD_INFO_KEYS
    assert info["cuda_compiled"] is _C.cuda_compiled
    assert isinstance(info["compiler"], str) and info["compiler"]
    if _C.cuda_compiled:
        assert info["cuda_arch"]
        assert info["cuda_runtime_version"].count(".") == 1
    else:
        assert info["cuda_arch"] is None
        assert info["cuda_runtime_version"] is None
        assert info["cuda_compiler"] is None


def test_device_count():
    count = _C.cuda_device_count()
    assert isinstance(count, int) and count >= 0
    if not _C.cuda_compiled:
        assert count == 0


@pytest.mark.slow
def test_cpu_only_build_in_temp_dir(tmp_path):
    """PYGAN_CPU_ONLY=1 builds a module with no CUDA, outside the source tree, that imports."""
    pytest.importorskip("pybind11")
    if shutil.which("cmake") is None:
        pytest.skip("cmake not on PATH")
    env = dict(os.environ, PYGAN_CPU_ONLY="1")
    build_lib, build_temp = tmp_path / "lib", tmp_path / "temp"
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext",
         "--build-lib", str(build_lib), "--build-temp", str(build_temp)],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (so,) = (build_lib / "pygan").glob("_C*")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pygan._C', {str(so)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert m.cuda_compiled is False and m.cuda_device_count() == 0\n"
        "assert m.build_info()['cuda_arch'] is None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True,
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ok"
