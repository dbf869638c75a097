"""Data-parallel training (pygan.distributed): launch detection, the global batch's split, the
sharded random draws, bucketing and sync-BN on one rank without MPI, the NCCL communicator's
plumbing (a recording stand-in for cupy.cuda.nccl: no GPU here), and, where mpi4py and mpirun are
installed (`make setup`), real 2-rank runs: the collectives against numpy (tests/mpi_checks.py),
2 ranks with --sync-bn equal to one process, rank 0 alone writing, resume, a killed rank and a
hung rank ending the job. Every MPI run has a timeout, so a hang fails the test."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pygan import checkpoint as ckpt
from pygan import distributed
from pygan.ops import reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset", "fake", "--fake-size", "64", "--imageSize", "32", "--nz", "16", "--ngf", "8", "--ndf", "8",
        "--batchSize", "16", "--manualSeed", "5", "--device", "cpu", "--no-progress"]


# -- without MPI -----------------------------------------------------------------------------------
@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"OMPI_COMM_WORLD_SIZE": "1", "OMPI_COMM_WORLD_RANK": "0"}, None),  # one rank: a plain process
    ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "0"}, ("Open MPI", 4, 2, 0)),
    ({"PMI_SIZE": "2", "PMI_RANK": "1", "MPI_LOCALRANKID": "1"}, ("MPICH/Hydra", 2, 1, 1)),
    ({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}, ("Slurm", 8, 5, 1)),
    ({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}, None),  # inside an sbatch job but not started by srun
])
def test_detect_launch(env, expected):
    assert distributed.detect_launch(env) == expected


def test_global_batch_must_split_evenly():
    assert distributed.local_batch_size(64, 4) == 16
    with pytest.raises(distributed.DistributedError, match=r"--batchSize 30 is the global batch.*4 ranks"):
        distributed.local_batch_size(30, 4)


def test_one_process_imports_no_mpi(tmp_path):
    """A plain `pygan train` takes the single-process path: mpi4py is never imported."""
    code = ("import sys; from pygan.cli import main; "
            f"rc = main(['train', *{TINY!r}, '--max-steps', '1', '--outf', {str(tmp_path / 'out')!r}]); "
            "print('mpi4py' in sys.modules, rc)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI_", "PMIX_", "SLURM_"))}
    env["PYTHONPATH"] = ROOT
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False 0", out.stdout + out.stderr


def test_sharded_generator_draws_the_global_batch(rng):
    seed = int(rng.integers(1 << 30))
    whole = np.random.default_rng(seed)
    parts = [np.random.default_rng(seed) for _ in range(3)]
    want = whole.standard_normal((12, 2))
    for r, g in enumerate(parts):
        got = distributed.ShardedGenerator(g, r, 3).standard_normal((4, 2))
        np.testing.assert_array_equal(got, want[4 * r: 4 * r + 4])
        assert g.bit_generator.state == whole.bit_generator.state  # the same numbers consumed
    ints = distributed.ShardedGenerator(np.random.default_rng(seed), 1, 2).integers(0, 10, 5)
    np.testing.assert_array_equal(ints, np.random.default_rng(seed).integers(0, 10, 10)[5:])


def test_buckets_respect_the_limit_and_dtype(rng):
    arrays = [rng.standard_normal(n).astype(np.float32) for n in (10, 10, 30, 5)] + [rng.standard_normal(3)]
    buckets = list(distributed._buckets(arrays, limit=80))  # 80 bytes: 20 float32
    assert [[a.size for a in b] for b in buckets] == [[10, 10], [30], [5], [3]]


def test_sync_batch_norm_on_one_rank_is_batch_norm(rng):
    """With one rank (SelfComm) sync-BN must be exactly the reference batch norm, forward and backward."""
    comm = distributed.SelfComm()
    x = rng.standard_normal((6, 4, 3, 3)) * 2 - 1
    gamma, beta, dy = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(x.shape)
    rm, rv = np.zeros(4), np.ones(4)
    rm2, rv2 = rm.copy(), rv.copy()
    y_ref, mean_ref, rstd_ref = reference.batch_norm_forward(x, gamma, beta, rm, rv, True, 0.1, 1e-5)
    y, mean, rstd, count = distributed.sync_batch_norm_forward(x, gamma, beta, rm2, rv2, 0.1, 1e-5, comm)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rv2, rv, rtol=1e-10)
    dx_ref, dg_ref, db_ref = reference.batch_norm_backward(x, gamma, dy, mean_ref, rstd_ref, True)
    dx, dg, db = distributed.sync_batch_norm_backward(x, gamma, dy, mean, rstd, count, comm)
    for got, want in ((dx, dx_ref), (dg, dg_ref), (db, db_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)


class _FakeNccl:
    """Records what NCCLComm asks of cupy.cuda.nccl, and sums over `peers` extra ranks' copies."""
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = "f32", "f64", "sum"

    def __init__(self, arrays_by_ptr):
        self.calls, self.arrays = [], arrays_by_ptr

    def get_unique_id(self):
        return (1, 2, 3)

    def NcclCommunicator(self, size, uid, rank):  # noqa: N802 -- cupy's name
        self.calls.append(("init", size, uid, rank))
        return self

    def allReduce(self, send, recv, count, dtype, op, stream):  # noqa: N802
        self.calls.append(("allReduce", send, recv, count, dtype, op, stream))
        self.arrays[recv].host *= 2  # as if a second rank held the same values


class _FakeDeviceArray:
    """Just enough of a CuPy array for NCCLComm: data.ptr, size, dtype, flags."""

    def __init__(self, host, ptr):
        self.host, self.size, self.dtype = host, host.size, host.dtype
        self.data = type("Mem", (), {"ptr": ptr})()
        self.flags = type("Flags", (), {"c_contiguous": True})()


def test_nccl_communicator_plumbing():
    """NCCLComm without a GPU: the unique id goes through the host communicator, an all-reduce
    passes the buffer's pointer, count, NCCL type and CuPy's current stream; host arrays go to MPI."""
    arr = _FakeDeviceArray(np.arange(4, dtype=np.float32), ptr=0xABC)
    nccl = _FakeNccl({0xABC: arr})
    cupy = type("cupy", (), {})()
    cupy.cuda = type("cuda", (), {"get_current_stream": staticmethod(lambda: type("S", (), {"ptr": 77})())})()
    comm = distributed.NCCLComm(distributed.SelfComm(), nccl=nccl, cupy=cupy)
    assert nccl.calls == [("init", 1, (1, 2, 3), 0)]
    comm.allreduce_(arr, "test")
    assert nccl.calls[-1] == ("allReduce", 0xABC, 0xABC, 4, "f32", "sum", 77)
    np.testing.assert_array_equal(arr.host, [0, 2, 4, 6])
    with pytest.raises(TypeError, match="int32"):
        comm.allreduce_(_FakeDeviceArray(np.zeros(2, dtype=np.int32), 1), "test")
    host = np.ones(3)
    assert comm.allreduce_(host) is host  # numpy arrays: the host communicator (identity on one rank)


# -- with MPI --------------------------------------------------------------------------------------
def _mpirun():
    beside = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return beside if os.access(beside, os.X_OK) else shutil.which("mpirun")


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM", "PMI_", "PMIX_", "SLURM_"))}
    env.update(PYTHONPATH=ROOT, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def mpirun():
    """The mpirun command prefix for 2 ranks, or a skip saying why there is none."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (make setup installs it: scripts/setup_mpi.sh)")
    exe = _mpirun()
    if exe is None:
        pytest.skip("no mpirun (make setup installs Open MPI: scripts/setup_mpi.sh)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, env=_env(), timeout=60).stdout
    cmd = [exe] + (["--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else [])
    probe = subprocess.run(cmd + ["-np", "2", sys.executable, "-c", "from mpi4py import MPI; print(MPI.COMM_WORLD.size)"],
                           capture_output=True, text=True, env=_env(), timeout=120)
    if probe.returncode != 0 or probe.stdout.split() != ["2", "2"]:
        pytest.skip(f"mpirun -np 2 does not start two MPI ranks here: {(probe.stdout + probe.stderr)[-300:]}")
    return cmd + ["-np", "2"]


def _train(prefix, *args, timeout=120):
    cmd = list(prefix) + [sys.executable, "-m", "pygan", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout, cwd=ROOT)


def _weights(path):
    tensors, meta = ckpt.load(path)
    return {k: v for k, v in tensors.items() if k.startswith(("G.", "D."))}, meta


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) if a[k].size else 0.0 for k in a)


def test_collectives_against_numpy(mpirun):
    out = subprocess.run(mpirun + [sys.executable, os.path.join(ROOT, "tests", "mpi_checks.py")],
                         capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0 and "mpi checks passed on 2 ranks" in out.stdout, out.stdout + out.stderr


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """One process, --batchSize 16, 3 and 5 steps: the runs 2 ranks must equal."""
    root = tmp_path_factory.mktemp("one")
    for steps in (3, 5):
        out = _train([], *TINY, "--max-steps", str(steps), "--outf", str(root / str(steps)))
        assert out.returncode == 0, out.stderr
    return root


def test_two_ranks_sync_bn_equal_one_process_and_resume(mpirun, one_process, tmp_path):
    """mpirun -np 2 --batchSize 16 --sync-bn: the same G and D as one process with --batchSize 16
    (float32 tolerance), the same log; then --resume to step 5 with 2 ranks equals 5 steps of one
    process, and one process refuses to resume the 2-rank checkpoint."""
    outf = str(tmp_path / "two")
    out = _train(mpirun, *TINY, "--sync-bn", "--max-steps", "3", "--outf", outf)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "global batch 16 = 2 x 8" in out.stdout
    two, meta = _weights(os.path.join(outf, "checkpoint.safetensors"))
    one, _ = _weights(str(one_process / "3" / "checkpoint.safetensors"))
    assert meta["world_size"] == 2 and meta["step"] == 3
    assert _max_diff(two, one) < 2e-5  # float32: sums reduced in another order
    rows = [np.genfromtxt(os.path.join(d, "log.csv"), delimiter=",", names=True) for d in (outf, one_process / "3")]
    for field in ("loss_D", "loss_G", "D_x", "D_G_z1", "D_G_z2"):  # the log holds the global batch's values
        np.testing.assert_allclose(rows[0][field], rows[1][field], rtol=1e-5, atol=1e-6)

    out = _train(mpirun, *TINY, "--sync-bn", "--max-steps", "5", "--outf", outf, "--resume")
    assert out.returncode == 0, out.stdout + out.stderr
    resumed, _ = _weights(os.path.join(outf, "checkpoint.safetensors"))
    straight, _ = _weights(str(one_process / "5" / "checkpoint.safetensors"))
    # 5 steps: Adam's normalised steps turn float32 rounding differences in near-zero gradients (one
    # process runs batch norm + leaky ReLU fused, sync-BN does not) into weight differences of a
    # fraction of lr (2e-4): 5.7e-5 measured. Per-rank statistics (no --sync-bn) differ by 3e-3 here.
    assert _max_diff(resumed, straight) < 4e-4

    out = _train([], *TINY, "--max-steps", "7", "--outf", outf, "--resume")
    assert out.returncode == 2
    assert "written by a data-parallel run of 2 rank(s), this run has 1" in out.stderr


def test_two_ranks_without_sync_bn_only_rank0_writes(mpirun, one_process, tmp_path):
    """Without --sync-bn each rank normalises its own 8 images: it trains, differs from one process,
    and only rank 0 writes. Rank 1 is given its own --outf (mpirun's MPMD form): it must never be created."""
    out0, out1 = tmp_path / "rank0", tmp_path / "rank1"
    cmd = mpirun[:-2] + ["-np", "1", sys.executable, "-m", "pygan", "train", *TINY, "--max-steps", "3", "--outf", str(out0),
                         ":", "-np", "1", sys.executable, "-m", "pygan", "train", *TINY, "--max-steps", "3", "--outf", str(out1)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not out1.exists()
    assert sorted(os.listdir(out0)) == [".lock", "checkpoint.safetensors", "fake_samples_epoch_001.png", "log.csv",
                                        "losses.png", "real_samples.png"]
    assert out.stdout.count("done: 3 steps") == 1 and out.stdout.count("options:") == 1
    with open(out0 / "log.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()] == ["step", "1", "2", "3"]
    two, _ = _weights(str(out0 / "checkpoint.safetensors"))
    one, _ = _weights(str(one_process / "3" / "checkpoint.safetensors"))
    assert _max_diff(two, one) > 1e-4  # per-rank statistics: not the global batch's


def _rank_pid(launcher_pid, rank, deadline):
    """The PID of MPI rank `rank` among the descendants of `launcher_pid` (from /proc)."""
    while time.time() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read().split(b"\0")
                pid, parents = int(entry), set()
                while pid > 1 and pid not in parents:
                    parents.add(pid)
                    with open(f"/proc/{pid}/stat") as f:
                        pid = int(f.read().rsplit(")", 1)[1].split()[1])
                    if pid == launcher_pid:
                        break
            except (OSError, ValueError, IndexError):
                continue
            if pid == launcher_pid and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
                return int(entry)
        time.sleep(0.2)
    return None


def _start_long_run(mpirun, outf, *extra):
    cmd = mpirun + [sys.executable, "-m", "pygan", "train", *TINY, "--niter", "100000", "--outf", outf, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    checkpoint = os.path.join(outf, "checkpoint.safetensors")
    deadline = time.time() + 60
    while not os.path.exists(checkpoint) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    if not os.path.exists(checkpoint):
        proc.kill()
        pytest.fail(f"no checkpoint within 60 s: {proc.communicate(timeout=30)}")
    return proc


def _check_last_good_checkpoint(outf):
    tensors, meta = ckpt.load(os.path.join(outf, "checkpoint.safetensors"))
    assert meta["step"] > 0 and meta["step"] % 4 == 0  # an epoch's end (4 steps per epoch)
    assert all(np.isfinite(a).all() for a in tensors.values() if a.dtype.kind == "f")


def test_killed_rank_ends_the_job(mpirun, tmp_path):
    """kill -9 of rank 1 mid-training: the job ends within seconds with an error naming the rank,
    and rank 0's checkpoint is the last good one."""
    outf = str(tmp_path / "run")
    proc = _start_long_run(mpirun, outf)
    try:
        pid = _rank_pid(proc.pid, 1, time.time() + 20)
        assert pid is not None, "rank 1 not found"
        os.kill(pid, signal.SIGKILL)
        killed = time.time()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert time.time() - killed < 30
    assert "rank 1" in err and ("signal 9" in err or "Killed" in err), err[-2000:]
    _check_last_good_checkpoint(outf)


def test_hung_rank_times_out(mpirun, tmp_path):
    """A rank that stops answering (SIGSTOP: alive, so the launcher sees nothing) makes rank 0's
    next collective time out after --dist-timeout: status 4 and a message naming what was stuck."""
    outf = str(tmp_path / "run")
    proc = _start_long_run(mpirun, outf, "--dist-timeout", "3")
    pid = None
    try:
        pid = _rank_pid(proc.pid, 1, time.time() + 20)
        assert pid is not None, "rank 1 not found"
        os.kill(pid, signal.SIGSTOP)
        stopped = time.time()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode == distributed.TIMEOUT_STATUS, err[-2000:]
    assert time.time() - stopped < 30
    assert "did not finish within 3 s (--dist-timeout): another rank died or hangs" in err
    _check_last_good_checkpoint(outf)
