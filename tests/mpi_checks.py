"""Run under `mpirun -np 2` by tests/test_distributed.py: pygan.distributed's collectives on real
MPI ranks against a numpy computation of the global result. Every rank draws the same global
data from one seed, works on its slice, and checks; any mismatch raises (non-zero exit).
Prints "mpi checks passed on N ranks" from rank 0 at the end."""

import sys

import numpy as np

from pygan import distributed
from pygan.autograd import Tensor
from pygan.ops import reference


def close(name, got, want, rtol, atol):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    bad = np.abs(got - want) > atol + rtol * np.abs(want)
    if bad.any():
        raise AssertionError(f"{name}: {bad.sum()} of {bad.size} values differ, worst {np.abs(got - want).max():.3g}")


def main():
    comm = distributed.init("cpu", force=True, timeout=60)
    rank, size = comm.rank, comm.size
    assert size >= 2, f"run with mpirun -np 2 or more (got {size} rank)"
    rng = np.random.default_rng(1234)  # the same numbers on every rank

    # 1. gradient all-reduce over flat buckets: the mean of every rank's arrays, with several
    #    buckets (a tiny bucket limit) and mixed dtypes, in place
    shapes = [(3, 4), (7,), (2, 3, 5), (1,), (16, 8)]
    per_rank = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(size)]
    extra = [rng.standard_normal(5) * (r + 1) for r in range(size)]  # float64: a bucket of its own
    mine = [a.copy() for a in per_rank[rank]] + [extra[rank].copy()]
    distributed.allreduce_mean_(comm, mine, limit=64)
    for i, s in enumerate(shapes):
        close(f"mean of array {i} {s}", mine[i], np.mean([per_rank[r][i] for r in range(size)], axis=0), 1e-6, 1e-6)
    close("float64 bucket", mine[-1], np.mean(extra, axis=0), 1e-12, 1e-12)
    assert mine[0].dtype == np.float32 and mine[-1].dtype == np.float64

    # 2. sync-BN forward and backward: each rank holds a slice of one global batch; the result must
    #    be the reference batch norm's on the whole batch (float64: tight; float32: float tolerance)
    for dtype, rtol, atol in ((np.float64, 1e-10, 1e-10), (np.float32, 2e-4, 2e-5)):
        n, c, h, w = 4 * size, 3, 5, 5
        x = (rng.standard_normal((n, c, h, w)) * 3 + 2).astype(dtype)
        gamma = rng.standard_normal(c).astype(dtype)
        beta = rng.standard_normal(c).astype(dtype)
        dy = rng.standard_normal((n, c, h, w)).astype(dtype)
        rm, rv = rng.standard_normal(c).astype(dtype), rng.random(c).astype(dtype) + 0.5
        rm_ref, rv_ref = rm.copy(), rv.copy()
        y_ref, mean_ref, rstd_ref = reference.batch_norm_forward(x, gamma, beta, rm_ref, rv_ref, True, 0.1, 1e-5)
        dx_ref, dgamma_ref, dbeta_ref = reference.batch_norm_backward(x, gamma, dy, mean_ref, rstd_ref, True)
        part = slice(rank * 4, rank * 4 + 4)
        rm_mine, rv_mine = rm.copy(), rv.copy()
        y, mean, rstd, count = distributed.sync_batch_norm_forward(x[part], gamma, beta, rm_mine, rv_mine, 0.1, 1e-5, comm)
        assert count == n * h * w
        close(f"sync-BN y ({np.dtype(dtype).name})", y, y_ref[part], rtol, atol)
        close("sync-BN mean", mean, mean_ref, rtol, atol)
        close("sync-BN rstd", rstd, rstd_ref, rtol, atol)
        close("sync-BN running_mean", rm_mine, rm_ref, rtol, atol)
        close("sync-BN running_var", rv_mine, rv_ref, rtol, atol)
        # backward of the sum of every rank's loss: dx is the global dx of this rank's slice;
        # dgamma/dbeta are this rank's shares, which sum (the gradient all-reduce) to the global ones
        dx, dgamma, dbeta = distributed.sync_batch_norm_backward(x[part], gamma, dy[part], mean, rstd, count, comm)
        close(f"sync-BN dx ({np.dtype(dtype).name})", dx, dx_ref[part], rtol, atol)
        sums = [dgamma.astype(np.float64), dbeta.astype(np.float64)]
        comm.allreduce_(sums[0]), comm.allreduce_(sums[1])
        close("sync-BN dgamma summed over ranks", sums[0], dgamma_ref, rtol, atol)
        close("sync-BN dbeta summed over ranks", sums[1], dbeta_ref, rtol, atol)

    # 3. the autograd path (SyncBatchNormFunction via BatchNorm2d.process_group) agrees too
    from pygan import nn

    bn = nn.BatchNorm2d(3)
    distributed.convert_sync_batchnorm(bn, comm)
    x = rng.standard_normal((2 * size, 3, 4, 4)).astype(np.float32)
    xt = Tensor(x[rank * 2: rank * 2 + 2].copy(), requires_grad=True)
    bn(xt).sum().backward()
    y_ref, mean_ref, rstd_ref = reference.batch_norm_forward(x, bn.weight.data, bn.bias.data, None, None, True, 0.1, 1e-5)
    dx_ref, _, _ = reference.batch_norm_backward(x, bn.weight.data, np.ones_like(x), mean_ref, rstd_ref, True)
    close("BatchNorm2d(sync) dx", xt.grad.data, dx_ref[rank * 2: rank * 2 + 2], 1e-4, 1e-5)

    # 4. broadcast from rank 0 and the replica checksum
    a = np.full(10, float(rank), dtype=np.float32)
    comm.bcast_(a)
    assert (a == 0).all(), a
    distributed.check_replicas(comm, [("a", a)], "check 4")  # equal: no error
    b = a + (rank == size - 1)
    try:
        distributed.check_replicas(comm, [("b", b)], "check 4b")
    except distributed.DistributedError as exc:
        assert f"rank(s) [{size - 1}]" in str(exc), str(exc)
    else:
        raise AssertionError("check_replicas did not notice a rank whose parameters differ")

    # 5. the sharded generator: rank r's draw is its slice of the global draw
    from numpy.random import Generator, PCG64

    g, ref = Generator(PCG64(7)), Generator(PCG64(7))
    got = distributed.ShardedGenerator(g, rank, size).standard_normal((3, 2))
    close("sharded draw", got, ref.standard_normal((3 * size, 2))[rank * 3: rank * 3 + 3], 0, 0)
    assert g.bit_generator.state == ref.bit_generator.state

    if rank == 0:
        print(f"mpi checks passed on {size} ranks", flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        from mpi4py import MPI

        MPI.COMM_WORLD.Abort(1)
