"""Fault injection for `pygan train`: kill -9 at random points, divergence, a second run on one
folder, a folder that holds a run, double Ctrl-C, unwritable outputs, hostile checkpoint metadata.

Every run is tiny (the `fake` data set, a few steps); the processes that must be killed or
interrupted run as subprocesses, the rest in-process through cli.main.
"""

import errno
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pygan import checkpoint as ckpt
from pygan.cli import main
from pygan.train import (Config, Trainer, TrainingDiverged, _discriminator_shapes, _generator_shapes,
                         load_generator)

# 16 images, batch 8: two steps per epoch, so a checkpoint (and a grid and a plot) every two steps.
TINY = ["--dataset", "fake", "--fake-size", "16", "--batchSize", "8", "--ngf", "8", "--ndf", "8", "--nz", "16",
        "--manualSeed", "3", "--device", "cpu"]
# The reproducers: one step per epoch.
NAN_RUN = ["--dataset", "fake", "--fake-size", "8", "--batchSize", "8", "--ngf", "8", "--ndf", "8", "--nz", "16",
           "--manualSeed", "3", "--device", "cpu", "--no-progress"]
TEMP_RE = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")


def spawn(*args):
    return subprocess.Popen([sys.executable, "-m", "pygan", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc=None, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the training process exited ({proc.returncode}) early:\n{out}\n{err}")
        time.sleep(0.02)
    raise AssertionError("timed out")


def log_rows(outf):
    path = outf / "log.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def kill9(proc):
    proc.kill()
    proc.communicate(timeout=60)  # reaped: its PID is free, its flock released
    assert proc.returncode == -signal.SIGKILL


def assert_finite_checkpoint(path):
    tensors, meta = ckpt.load(str(path))
    for name, a in tensors.items():
        assert a.dtype.kind not in "fc" or np.isfinite(a).all(), name
    load_generator(str(path))
    return meta


def temp_files(outf):
    return sorted(p for p in os.listdir(outf) if TEMP_RE.match(p) or p in ("log.csv.tmp", "eval.csv.tmp"))


# -- kill -9 -----------------------------------------------------------------------------------------


def test_kill_9_at_random_points_then_resume(tmp_path):
    """A run killed at random moments (mostly inside the end-of-epoch grid/plot/checkpoint writes,
    which dominate a tiny run) always leaves a loadable, finite checkpoint; the next run is not
    blocked by the dead run's lock, clears the temporary files a killed writer leaves, and resumes."""
    rng = np.random.default_rng(20261130)
    outf = tmp_path / "run"
    args = [*TINY, "--niter", "1000", "--outf", str(outf)]
    for attempt in range(2):
        proc = spawn(*args, *(["--resume"] if attempt else []))
        start = log_rows(outf) if attempt else 0
        wait_for(lambda: (outf / "checkpoint.safetensors").exists() and log_rows(outf) >= start + 2, proc)
        time.sleep(rng.uniform(0.0, 0.8))
        kill9(proc)
        assert (outf / ".lock").read_text().strip() == str(proc.pid)  # the lock file stays; its flock does not
        meta = assert_finite_checkpoint(outf / "checkpoint.safetensors")
        assert meta["step"] >= 2
    # What a writer killed mid-write leaves (planted, so the check does not depend on timing), and
    # files that merely look similar, which must survive.
    dead = proc.pid
    planted = [f".checkpoint.safetensors.{dead}.0badc0de.tmp", f".losses.png.{dead}.12345678.tmp", "log.csv.tmp"]
    for name in planted:
        (outf / name).write_bytes(b"partial")
    keep = ["notes.tmp", ".checkpoint.safetensors.tmp", f".x.{dead}.nothex!.tmp"]
    for name in keep:
        (outf / name).write_bytes(b"mine")
    step = ckpt.load(str(outf / "checkpoint.safetensors"))[1]["step"]
    proc = subprocess.run([sys.executable, "-m", "pygan", "train", *args, "--resume", "--max-steps", str(step + 3)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"removed \d+ temporary file\(s\)", proc.stdout)
    assert temp_files(outf) == []
    assert all((outf / name).exists() for name in keep)
    assert "\r" not in proc.stderr  # stderr is a pipe: no progress bar
    meta = assert_finite_checkpoint(outf / "checkpoint.safetensors")
    assert meta["step"] == step + 3
    steps = [int(line.split(",")[0]) for line in (outf / "log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, step + 4))  # no row lost or repeated across the kills


# -- one run per folder --------------------------------------------------------------------------------


def test_a_second_run_on_the_same_folder_is_refused_and_a_dead_runs_lock_is_not(tmp_path, capsys):
    outf = tmp_path / "run"
    proc = spawn(*TINY, "--niter", "1000", "--no-progress", "--outf", str(outf))
    try:
        wait_for(lambda: (outf / "checkpoint.safetensors").exists(), proc)
        assert main(["train", *TINY, "--niter", "1000", "--resume", "--outf", str(outf)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("pygan: error:") and str(outf) in err and f"process {proc.pid}" in err
        assert main(["train", *TINY, "--overwrite", "--outf", str(outf)]) == 2  # --overwrite does not break a lock
        assert str(outf) in capsys.readouterr().err
    finally:
        kill9(proc)
    step = assert_finite_checkpoint(outf / "checkpoint.safetensors")["step"]
    assert main(["train", *TINY, "--niter", "1000", "--no-progress", "--resume", "--max-steps", str(step + 1),
                 "--outf", str(outf)]) == 0


# -- a folder that holds a run -------------------------------------------------------------------------


def test_a_folder_with_a_checkpoint_needs_resume_or_overwrite(tmp_path, capsys):
    outf = tmp_path / "run"
    assert main(["train", *NAN_RUN, "--niter", "2", "--outf", str(outf)]) == 0
    before = (outf / "checkpoint.safetensors").read_bytes()
    (outf / "fake_samples_epoch_007.png").write_bytes(b"from an older, longer run")
    capsys.readouterr()
    assert main(["train", *NAN_RUN, "--niter", "1", "--outf", str(outf)]) == 2
    err = capsys.readouterr().err
    assert "already holds" in err and "--resume" in err and "--overwrite" in err and str(outf) in err
    assert (outf / "checkpoint.safetensors").read_bytes() == before
    assert main(["train", *NAN_RUN, "--niter", "1", "--resume", "--overwrite", "--outf", str(outf)]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main(["train", *NAN_RUN, "--niter", "1", "--overwrite", "--dataset", "nope", "--outf", str(outf)]) == 2
    assert (outf / "checkpoint.safetensors").read_bytes() == before  # a command that fails deletes nothing
    assert main(["train", *NAN_RUN, "--niter", "1", "--manualSeed", "4", "--overwrite", "--outf", str(outf)]) == 0
    assert "--overwrite: removed" in capsys.readouterr().out
    assert (outf / "checkpoint.safetensors").read_bytes() != before
    assert not (outf / "fake_samples_epoch_007.png").exists() and not (outf / "fake_samples_epoch_002.png").exists()
    assert ckpt.load(str(outf / "checkpoint.safetensors"))[1]["step"] == 1
    assert len((outf / "log.csv").read_text().splitlines()) == 2


# -- divergence ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr, niter", [("1e15", "30"), ("1e9", "50")])
def test_a_diverging_run_exits_3_and_writes_no_non_finite_checkpoint(tmp_path, capsys, lr, niter):
    outf = tmp_path / "run"
    assert main(["train", *NAN_RUN, "--niter", niter, "--lr", lr, "--outf", str(outf)]) == 3
    out, err = capsys.readouterr()
    assert "done" not in out
    # A BatchNorm running variance or an Adam second moment overflows in the first step, long before
    # a loss is NaN (which first depends on the backend's accumulation precision).
    assert re.search(r"pygan: training diverged: ([DG]\.main\.\d+\.running_(var|mean)|opt[DG]\.\d+\.exp_avg_sq) "
                     r"holds (inf|NaN) at step 1 \(epoch 1\).*no checkpoint was written", err), err
    assert not (outf / "checkpoint.safetensors").exists()
    assert temp_files(outf) == []


def test_divergence_after_good_checkpoints_keeps_the_last_finite_one(tmp_path, capsys):
    outf = tmp_path / "run"
    assert main(["train", *NAN_RUN, "--niter", "2", "--outf", str(outf)]) == 0
    before = (outf / "checkpoint.safetensors").read_bytes()
    assert main(["train", *NAN_RUN, "--niter", "30", "--lr", "1e15", "--resume", "--outf", str(outf)]) == 3
    out, err = capsys.readouterr()
    assert "resume: lr 0.0002 -> 1000000000000000.0" in out and "resume: niter 2 -> 30" in out
    assert "at step 3 (epoch 3)" in err and f"the last finite checkpoint, {outf / 'checkpoint.safetensors'} (step 2)" in err
    assert (outf / "checkpoint.safetensors").read_bytes() == before
    assert_finite_checkpoint(outf / "checkpoint.safetensors")


def test_no_checkpoint_is_written_with_a_non_finite_tensor(tmp_path):
    """Adam's state is not checked every step; the write is refused all the same, and the message
    names the tensor."""
    config = Config(dataset="fake", fake_size=16, batch_size=8, nz=16, ngf=8, ndf=8, niter=1, outf=str(tmp_path),
                    manual_seed=3, device="cpu", progress=False)
    t = Trainer(config, log=lambda *a: None).fit()
    before = (tmp_path / "checkpoint.safetensors").read_bytes()
    t.optD.state[id(t.D.main[0].weight)]["exp_avg_sq"][0, 0, 0, 0] = np.inf
    for path in (None, t.best_path):
        with pytest.raises(TrainingDiverged, match=r"optD\.0\.exp_avg_sq holds inf at step 2 \(epoch 1\): .* was not written.*"
                                                   r"last finite checkpoint.*\(step 2\)"):
            t.save_checkpoint(path)
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before
    assert not os.path.exists(t.best_path) and temp_files(tmp_path) == []


def test_sample_eval_and_resume_refuse_a_non_finite_checkpoint(tmp_path, capsys):
    outf = tmp_path / "run"
    assert main(["train", *NAN_RUN, "--niter", "1", "--outf", str(outf)]) == 0
    path = outf / "checkpoint.safetensors"
    tensors, meta = ckpt.load(str(path))
    tensors["G.main.1.running_var"][3] = np.inf
    ckpt.save(str(path), tensors, meta)
    capsys.readouterr()
    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(path), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pygan: error:") and "inf in G.main.1.running_var" in err and not out.exists()
    assert main(["eval", "--checkpoint", str(path), "--n", "20", "--no-floor", "--device", "cpu",
                 "--out", str(tmp_path / "e.json")]) == 2
    assert "G.main.1.running_var" in capsys.readouterr().err
    assert main(["train", *NAN_RUN, "--niter", "2", "--resume", "--outf", str(outf)]) == 2
    assert "cannot be resumed" in capsys.readouterr().err


# -- Ctrl-C ------------------------------------------------------------------------------------------

# After the first (warm-up) step, a step of this size takes over a second on one CPU core (64x64
# images; at 32x32 it is about 0.2 s): room for Ctrl-C 0.3 s apart inside one step.
SLOW = ["--dataset", "fake", "--fake-size", "256", "--batchSize", "64", "--imageSize", "64", "--nz", "100",
        "--ngf", "64", "--ndf", "64", "--manualSeed", "3", "--device", "cpu", "--niter", "1"]


def _interrupt(outf, times):
    proc = spawn(*SLOW, "--outf", str(outf))
    wait_for(lambda: log_rows(outf) >= 1, proc, timeout=120)  # step 2 is under way
    for i in range(times):
        if i:
            time.sleep(0.3)
        if proc.poll() is not None:
            out, err = proc.communicate()
            assert proc.returncode == 130 and "interrupted at step" in out, err
            pytest.skip("this machine finished the step and the save before the next Ctrl-C; nothing to test")
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc, out, err


def test_two_quick_ctrl_c_still_save_the_checkpoint(tmp_path):
    outf = tmp_path / "run"
    proc, out, err = _interrupt(outf, 2)
    assert proc.returncode == 130, err
    step = int(re.search(r"Ctrl-C: finishing step (\d+), then saving a checkpoint and stopping", err)[1])
    assert step >= 2  # step 1 was done before the first Ctrl-C
    assert f"still finishing step {step}, then saving the checkpoint; press Ctrl-C once more to abort" in err \
        or f"still saving the checkpoint of step {step}; press Ctrl-C once more to abort" in err
    assert f"interrupted at step {step}: checkpoint written" in out
    assert assert_finite_checkpoint(outf / "checkpoint.safetensors")["step"] == step
    assert temp_files(outf) == []


@pytest.mark.slow
def test_a_third_ctrl_c_aborts_and_says_what_is_lost(tmp_path):
    outf = tmp_path / "run"
    proc, out, err = _interrupt(outf, 3)
    assert proc.returncode == 130, err
    # Most likely mid-step (a step takes about a second); on a fast machine, possibly mid-save.
    m = re.search(r"aborted while (finishing step|saving the checkpoint of step) (\d+): no checkpoint was written: "
                  r"the (\d+) finished step\(s\) of this run are lost", err)
    assert m and int(m[3]) == int(m[2]) - (m[1] == "finishing step"), err
    assert not (outf / "checkpoint.safetensors").exists() and temp_files(outf) == []


# -- outputs that cannot be written --------------------------------------------------------------------


def test_outf_that_is_a_file_or_under_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["train", *NAN_RUN, "--outf", str(f)]) == 2
    assert capsys.readouterr().err == f"pygan: error: --outf is a file, not a folder ({f})\n"
    assert main(["train", *NAN_RUN, "--outf", str(f / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pygan: error: cannot create the --outf folder: Not a directory") and str(f) in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_outf(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["train", *NAN_RUN, "--outf", str(ro)]) == 2
        assert main(["train", *NAN_RUN, "--outf", str(ro / "sub")]) == 2
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err
    assert err.count("pygan: error:") == 2 and "Permission denied" in err and "Traceback" not in err


def test_an_unwritable_outf_is_a_clear_error_even_as_root(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("pygan.train.os.access", lambda path, mode: False)  # as a read-only folder answers
    assert main(["train", *NAN_RUN, "--outf", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"pygan: error: cannot write to the --outf folder: permission denied ({tmp_path})\n"


@pytest.mark.parametrize("failing_write, name", [(1, "real_samples.png"), (4, "checkpoint.safetensors")])
def test_a_full_disk_is_an_error_naming_the_file(tmp_path, capsys, monkeypatch, failing_write, name):
    """Every file goes through checkpoint.atomic_write, which fsyncs it: writes 1-4 of a one-step
    run are real_samples.png, the epoch's grid, losses.png and the checkpoint."""
    calls = []
    fsync = os.fsync

    def disk_fills_up(fd):
        calls.append(fd)
        if len(calls) >= failing_write:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_fills_up)
    assert main(["train", *NAN_RUN, "--niter", "1", "--outf", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"pygan: error: No space left on device ({tmp_path / name})\n"
    assert temp_files(tmp_path) == [] and not (tmp_path / "checkpoint.safetensors").exists()


# -- checkpoint metadata ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    outf = tmp_path_factory.mktemp("good")
    config = Config(dataset="fake", fake_size=8, batch_size=8, nz=16, ngf=8, ndf=8, niter=1, outf=str(outf),
                    manual_seed=3, device="cpu", progress=False)
    Trainer(config, log=lambda *a: None).fit()
    return ckpt.load(str(outf / "checkpoint.safetensors"))


GOOD_MODEL = {"kind": "dcgan", "nz": 16, "ngf": 8, "ndf": 8, "nc": 3, "image_size": 32}


@pytest.mark.parametrize("model, message", [
    (None, "no DCGAN model description"),
    ([1, 2], r"no DCGAN model description \(its 'model' is \[1, 2\]\)"),
    ({"kind": "dcgan"}, "lacks 'nz'"),
    (dict(GOOD_MODEL, ngf="8"), r"model ngf is '8', not an integer"),
    (dict(GOOD_MODEL, ngf=1e9), r"model ngf is 1000000000.0, not an integer"),
    (dict(GOOD_MODEL, ngf=True), r"model ngf is True, not an integer"),
    (dict(GOOD_MODEL, ngf=10**9), r"model ngf=1000000000 is out of range"),
    (dict(GOOD_MODEL, ngf=4096), r"G\.main\.0\.weight has shape \(16, 32, 4, 4\).*needs \(16, 16384, 4, 4\)"),
    (dict(GOOD_MODEL, nz=17), r"G\.main\.0\.weight has shape \(16, 32, 4, 4\).*needs \(17, 32, 4, 4\)"),
    (dict(GOOD_MODEL, nc=1), r"G\.main\.9\.weight has shape \(8, 3, 4, 4\).*needs \(8, 1, 4, 4\)"),
    (dict(GOOD_MODEL, image_size=64), r"G\.main\.0\.weight has shape \(16, 32, 4, 4\).*needs \(16, 64, 4, 4\)"),
    (dict(GOOD_MODEL, image_size=48), "image_size=48 is out of range"),
])
def test_bad_model_metadata_is_refused_before_anything_is_built(tmp_path, good_checkpoint, model, message):
    tensors, meta = good_checkpoint
    path = tmp_path / "c.safetensors"
    ckpt.save(str(path), tensors, dict(meta, model=model))
    started = time.perf_counter()
    with pytest.raises(ckpt.CheckpointError, match=message):
        load_generator(str(path))
    assert time.perf_counter() - started < 2.0  # nothing of the claimed size was allocated


def test_a_missing_generator_tensor_is_named(tmp_path, good_checkpoint):
    tensors, meta = good_checkpoint
    path = tmp_path / "c.safetensors"
    ckpt.save(str(path), {k: v for k, v in tensors.items() if k != "G.main.4.running_mean"}, meta)
    with pytest.raises(ckpt.CheckpointError, match=r"lacks tensor G\.main\.4\.running_mean"):
        load_generator(str(path))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_the_shapes_checked_are_the_models_shapes(size):
    from pygan.models import Discriminator, Generator

    g = {k: tuple(v.shape) for k, v in Generator(5, 3, 2, size).state_dict().items()}
    d = {k: tuple(v.shape) for k, v in Discriminator(3, 2, size).state_dict().items()}
    assert _generator_shapes(5, 3, 2, size) == g
    assert _discriminator_shapes(3, 2, size) == d


def test_hostile_config_values_are_shown_with_their_type(tmp_path, good_checkpoint, capsys):
    tensors, meta = good_checkpoint
    outf = tmp_path / "run"
    outf.mkdir()
    ckpt.save(str(outf / "checkpoint.safetensors"), tensors, dict(meta, config=dict(meta["config"], batch_size="8")))
    assert main(["train", *NAN_RUN, "--resume", "--outf", str(outf)]) == 2
    err = capsys.readouterr().err
    assert "--batchSize: checkpoint '8' (a str), this run 8" in err


def test_sample_into_an_unwritable_path_is_an_error_not_a_traceback(tmp_path, good_checkpoint, capsys):
    path = tmp_path / "c.safetensors"
    ckpt.save(str(path), *good_checkpoint)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["sample", "--checkpoint", str(path), "--out", str(blocker / "grid.png"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pygan: error: ") and str(blocker) in err and "Errno" not in err
