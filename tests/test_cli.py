"""`pygan train|sample|bench` as a user runs them."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from pygan.cli import main

TINY = ["--dataset", "fake", "--fake-size", "32", "--nc", "1", "--batchSize", "16", "--nz", "8", "--ngf", "4",
        "--ndf", "4", "--manualSeed", "3", "--device", "cpu", "--no-progress"]


def test_train_prints_options_and_writes_outputs(tmp_path, capsys):
    assert main(["train", *TINY, "--niter", "1", "--outf", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "options:" in out and '"batch_size": 16' in out and "steps per epoch" in out
    assert "epoch 1/1 done: step 2" in out and "done: 2 steps; 1 of 1 epochs complete; checkpoint" in out
    assert (tmp_path / "fake_samples_epoch_001.png").exists() and (tmp_path / "checkpoint.safetensors").exists()


def test_dry_run_takes_one_step(tmp_path, capsys):
    assert main(["train", *TINY, "--dry-run", "--outf", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "stopped in epoch 1/25 after batch 1 of 2: step 1" in out
    assert "done: 1 steps; 0 of 25 epochs complete and 1 of 2 batches of epoch 1;" in out
    assert (tmp_path / "fake_samples_epoch_001.png").exists()
    lines = (tmp_path / "log.csv").read_text().strip().splitlines()
    assert len(lines) == 2  # header + one step


def test_sample_and_interpolation_grids(tmp_path):
    main(["train", *TINY, "--niter", "1", "--outf", str(tmp_path)])
    ck = str(tmp_path / "checkpoint.safetensors")
    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", ck, "--n", "16", "--nrow", "4", "--out", str(out), "--device", "cpu"]) == 0
    img = Image.open(out)
    assert img.mode == "L" and img.size == (4 * 34 + 2, 4 * 34 + 2)
    inter = tmp_path / "interp.png"
    assert main(["sample", "--checkpoint", ck, "--n", "3", "--steps", "5", "--interpolate", "--out", str(inter),
                 "--device", "cpu"]) == 0
    assert Image.open(inter).size == (5 * 34 + 2, 3 * 34 + 2)


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--batchSize", "0"])
    assert exc.value.code == 2 and "batchSize" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--dataset", "nope", "--outf", str(tmp_path)]) == 2
    assert "dataset" in capsys.readouterr().err


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, capsys):
    assert main(["train", "--dataroot", str(tmp_path / "empty"), "--outf", str(tmp_path / "out")]) == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err


def test_python_dash_m_and_bench():
    out = subprocess.run([sys.executable, "-m", "pygan", "--help"], capture_output=True, text=True, check=True).stdout
    assert "train" in out and "sample" in out and "bench" in out
    out = subprocess.run([sys.executable, "-m", "pygan", "bench", "--repeats", "1", "--batchSize", "8"],
                         capture_output=True, text=True, check=True).stdout
    assert "D+G step 1x32x32 batch 8 on cpu: pygan" in out


def test_ctrl_c_writes_a_checkpoint_that_resumes(tmp_path):
    cmd = [sys.executable, "-m", "pygan", "train", *TINY, "--fake-size", "4096", "--niter", "1", "--outf", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in out + err
    from pygan import checkpoint as ckpt

    _, meta = ckpt.load(str(tmp_path / "checkpoint.safetensors"))
    assert 3 <= meta["step"] < 256 and meta["batch"] == meta["step"]
    rows = len(log.read_text().splitlines()) - 1
    assert rows >= meta["step"]
    assert main(["train", *TINY, "--fake-size", "4096", "--niter", "1", "--max-steps", str(meta["step"] + 2),
                 "--resume", "--outf", str(tmp_path)]) == 0
    assert len(log.read_text().splitlines()) - 1 == meta["step"] + 2
