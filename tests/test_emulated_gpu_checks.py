"""benchmarks/gpu_checks.py, the GPU suite's correctness checks (issue 13, section 3), run here on
the CPU through the emulation module so the script cannot rot between GPU runs: its `small` mode
(every variant of every kernel family once, outputs poisoned, against the float64 reference) must
pass, and must fail when no kernel runs (tests/test_cannot_be_fooled.py runs this file so)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygan._emu", reason="pygan._emu (host-emulation module) not built")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_checks  # noqa: E402


def test_small_mode_passes_under_emulation(capsys):
    assert gpu_checks.main(["small", "--backend", "emulated"]) == 0
    out = capsys.readouterr().out
    assert "0 failed (small, emulated)" in out
    # every family took part, batch norm's split variant included
    for family in ("conv2d v", "batch_norm v3", "activation v", "loss v", "adam v", "rmsprop v", "avg_pool2d v",
                   "embedding v", "group_norm v"):
        assert family in out, family


def test_stream_mode_needs_a_gpu(capsys):
    assert gpu_checks.main(["stream", "--backend", "emulated"]) == 0
    assert "skipped: needs CuPy and a GPU" in capsys.readouterr().out


def test_the_suite_script_parses():
    proc = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_suite.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = (ROOT / "benchmarks" / "gpu_suite.sh").read_text()
    for step in ("-lineinfo", "--tool \"$tool\"", "racecheck", "synccheck", "gpu_checks.py dcgan",
                 "gpu_checks.py stream", "bench_batchnorm", "end_to_end"):
        assert step in text, step
