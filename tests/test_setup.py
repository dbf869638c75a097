"""`make setup`: a second set-up with nothing changed is a no-op, and scripts/setup_cupy.sh picks
the CuPy wheel from what nvidia-smi reports (a stand-in nvidia-smi here: there is no GPU)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "setup_cupy.sh"


def fake_smi(tmp_path, text, status=0):
    path = tmp_path / "nvidia-smi"
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{text}\nEOF\nexit {status}\n")
    path.chmod(0o755)
    return path


def run_script(smi, **env):
    full = dict(os.environ, PYGAN_NVIDIA_SMI=str(smi), PYGAN_CUPY_DRY_RUN="1", PYTHON=sys.executable)
    full.pop("PYGAN_NO_CUPY", None)
    full.update(env)
    proc = subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr  # the script never fails the set-up
    return proc.stdout.strip()


SMI_HEADER = "| NVIDIA-SMI 580.65.06   Driver Version: 580.65.06   CUDA Version: {} |"


@pytest.mark.parametrize("version, package", [("13.0", "cupy-cuda13x"), ("12.4", "cupy-cuda12x"),
                                              ("11.8", "cupy-cuda11x")])
def test_the_cupy_wheel_follows_the_drivers_cuda_major_version(tmp_path, version, package):
    assert run_script(fake_smi(tmp_path, SMI_HEADER.format(version))) == f"cupy: {package}"


def test_no_nvidia_smi_means_nothing_to_do_and_nothing_said(tmp_path):
    assert run_script(tmp_path / "absent") == ""


@pytest.mark.parametrize("text, status, says", [
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", 9, "finds no usable GPU"),
    ("| NVIDIA-SMI 300.1   Driver Version: 300.1 |", 0, "does not report a CUDA version"),
    (SMI_HEADER.format("10.2"), 0, "no CuPy wheel for the driver's CUDA 10"),
])
def test_a_gpu_cupy_cannot_serve_gets_one_line_saying_why(tmp_path, text, status, says):
    out = run_script(fake_smi(tmp_path, text, status))
    assert len(out.splitlines()) == 1 and says in out and "training runs on the CPU" in out


def test_pygan_no_cupy_skips_it(tmp_path):
    out = run_script(fake_smi(tmp_path, SMI_HEADER.format("13.0")), PYGAN_NO_CUPY="1")
    assert "PYGAN_NO_CUPY is set" in out


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_a_second_make_setup_with_nothing_changed_is_quick():
    check = subprocess.run(["make", "-s", "--no-print-directory", "setup-check"], cwd=ROOT, capture_output=True)
    if check.returncode != 0:
        pytest.skip("this checkout was not set up by `make setup` with the current build options")
    started = time.perf_counter()
    proc = subprocess.run(["make", "setup"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYGAN_NVIDIA_SMI="/nonexistent"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing the build reads changed" in proc.stdout
    assert "pip install" not in proc.stdout
    assert time.perf_counter() - started < 60
