"""Threads and the GEMM of the fast CPU backend (pygan/ops/cpu.py): one policy, applied once.

Thread policy
    One number of threads, T, for numba's pool and for the BLAS (numpy's and scipy's OpenBLAS):
    PYGAN_NUM_THREADS when set, else OMP_NUM_THREADS when set, else the number of cores this
    process may run on (os.sched_getaffinity) divided among the processes an MPI or Slurm launch
    put on this node (at least 1 each), except that when the machine is already busy (the
    1-minute load average, taken when the backend is first used, is at least that number of
    cores) T is 1. NUMBA_NUM_THREADS caps numba's pool (numba reads it at import) and
    OPENBLAS_NUM_THREADS, when set, is the BLAS's count instead of T.
    Why: a training step calls numba kernels and BLAS GEMMs one after another from one Python
    thread, never at the same time, so with each pool at T <= cores the process itself never runs
    more threads than cores. Oversubscription then comes from other jobs, and there every barrier
    (OpenBLAS's workers, numba's OpenMP regions) waits for a thread the OS has descheduled, and
    idle workers of one pool spin while the other pool runs: on a shared 2-core machine a 1x32x32
    DCGAN step took 2.5 s with 2 threads and 0.32 s with 1, in runs minutes apart
    (benchmarks/results/README.md). One thread gives up at most the second core's share when the
    machine is idle; hence the rule. It is decided once per process.
    numba's OpenMP threading layer shares libgomp with other OpenMP users in the process (PyTorch):
    starting numba's pool sets the process's OpenMP default to the pool's size, so such a library
    should set its own count after pygan's backend is set up (pygan/bench.py does for PyTorch).
    With T > 1 and the GEMMs on OpenBLAS, OMP_WAIT_POLICY is set to PASSIVE when the user has not
    set it (see _passive_openmp_waits: spinning OpenMP workers starved OpenBLAS's threads); pygan's
    own GEMM shares numba's OpenMP pool and keeps the default waits.

GEMM
    By default the convolutions' GEMMs run on pygan's own (csrc/cpu, module pygan._cpu): packed,
    AVX-512 or AVX2 micro-kernels picked at run time, with each convolution's patch matrix gathered
    while packing instead of written out by an im2col first; it runs the BLAS thread count T.
    PYGAN_CPU_GEMM=openblas selects the BLAS below instead, =numpy numpy's matmul; a build without
    pygan._cpu, or a CPU without AVX2, uses the BLAS.
    The BLAS path: the GEMMs go to the BLAS through scipy.linalg.blas (s/dgemm with transpose flags,
    so C-ordered operands are never copied), into outputs the caller owns; numpy's matmul when
    scipy's BLAS cannot be had, or with PYGAN_CPU_GEMM=numpy. scipy ships its own OpenBLAS,
    separate from numpy's; both threads counts are set by the policy above. OpenBLAS chooses its
    kernels when it loads, from the CPU or from OPENBLAS_CORETYPE when that is set, and pygan names
    the core it got (benchmarks print it). The GEMMs are most of a step, so a host whose environment
    pins an older core (OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU) runs them on AVX2 kernels at
    about 0.6x the speed (benchmarks/results/README.md). pygan does not overrule that variable on
    its own: PYGAN_OPENBLAS_CORE=native (the CPU's own core) or =<core name> (SkylakeX, Haswell,
    ...) is the explicit opt-in; it applies to scipy's OpenBLAS, pygan's GEMM, when pygan is the
    first to load it (numpy's BLAS and any other library are left alone), and
    gemm_core_hint() says when the environment's pin costs speed on this CPU.
"""

import ctypes
import os

import numpy as np


def cpu_flags():
    """The CPU's feature flags (Linux /proc/cpuinfo), an empty set elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def simd_level(flags=None):
    flags = cpu_flags() if flags is None else flags
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _env_int(name):
    value = os.environ.get(name, "").strip()
    try:
        return max(1, int(value)) if value else None
    except ValueError:
        return None


def machine_busy(cores):
    try:
        return os.getloadavg()[0] >= cores
    except (AttributeError, OSError):
        return False


# Processes on this node started by one launcher (Open MPI, MPICH/Hydra, Slurm): they share the cores.
_LOCAL_SIZE_ENV = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE")


def local_processes():
    """How many processes of this launch share this node (1 outside an MPI or Slurm launch)."""
    for name in _LOCAL_SIZE_ENV:
        n = _env_int(name)
        if n is not None:
            return n
    return 1


def thread_counts():
    """(numba threads, BLAS threads, reason) under the policy above."""
    t = _env_int("PYGAN_NUM_THREADS") or _env_int("OMP_NUM_THREADS")
    if t is not None:
        reason = "PYGAN_NUM_THREADS" if _env_int("PYGAN_NUM_THREADS") else "OMP_NUM_THREADS"
    else:
        cores = available_cores()
        busy = cores > 1 and machine_busy(cores)
        t, reason = (1, "machine busy (load average >= cores)") if busy else (cores, "cores")
        ranks = local_processes()
        if ranks > 1 and not busy:
            t, reason = max(1, cores // ranks), f"cores / {ranks} processes on this node"
    blas = _env_int("OPENBLAS_NUM_THREADS") if _env_int("PYGAN_NUM_THREADS") is None else None
    return t, blas or t, reason


_policy = None


def apply_thread_policy(with_numba, openblas_gemm=True):
    """Set the BLAS threads (numpy's and scipy's OpenBLAS) and, with_numba, numba's; once per
    process (later calls only add numba's). openblas_gemm: whether the GEMMs run on OpenBLAS's own
    thread pool (then numba's OpenMP workers must not spin; pygan's GEMM shares their pool).
    Returns {"numba_threads", "blas_threads", "why"}."""
    global _policy
    if _policy is None:
        t, blas, why = thread_counts()
        _set_threads(numpy_blas(), blas)
        _policy = {"numba_threads": None, "blas_threads": blas, "why": why, "_t": t, "_scipy": False}
    if not _policy["_scipy"] and scipy_blas_handle() is not None:  # loaded since the last call
        _set_threads(scipy_blas_handle(), _policy["blas_threads"])
        _policy["_scipy"] = True
    if with_numba and _policy["numba_threads"] is None:
        if _policy["_t"] > 1 and openblas_gemm:
            _passive_openmp_waits()  # before numba's OpenMP pool starts: its libgomp reads it then
        import numba

        n = min(_policy["_t"], numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(n)
        _policy["numba_threads"] = n
    return {k: v for k, v in _policy.items() if not k.startswith("_")}


def _passive_openmp_waits():
    """OMP_WAIT_POLICY=PASSIVE unless the user set it, when the GEMMs run on OpenBLAS. numba's kernels
    and OpenBLAS's GEMMs take turns on the same cores; by default an OpenMP worker spins for a
    while after each parallel region, so numba's idle threads kept the cores OpenBLAS's own
    threads needed: with 2 threads on 2 quiet cores a 1x32x32 step took 398 ms against 191 ms with
    one thread, and 134 ms with passive waits (benchmarks/results/README.md). pygan's own GEMM
    (pygan._cpu) runs on the same OpenMP pool as numba, so there nothing is starved and passive
    waits only add a wake-up to every parallel region: the D+G step at 2 threads took 155 ms with
    them and 113 ms without. Read once, when an OpenMP runtime loads: a library that loaded libgomp
    earlier in the process (PyTorch imported first) keeps its own setting."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# -- OpenBLAS libraries loaded in this process ------------------------------------------------------


def _loaded_libraries(fragment):
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if fragment in line and line.rstrip().endswith(".so")}
    except OSError:
        return []
    return sorted(paths)


def _openblas_handle(path_fragment, exclude=None):
    """(ctypes handle, symbol suffix) of a loaded OpenBLAS whose path contains path_fragment."""
    for path in _loaded_libraries(path_fragment):
        if exclude and exclude in os.path.basename(path):
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                if hasattr(lib, f"{prefix}get_corename{suffix}"):
                    return lib, prefix, suffix
    return None


def _corename(handle):
    if handle is None:
        return None
    lib, prefix, suffix = handle
    fn = getattr(lib, f"{prefix}get_corename{suffix}")
    fn.restype = ctypes.c_char_p
    return fn().decode()


def _set_threads(handle, n):
    if handle is None:
        return
    lib, prefix, suffix = handle
    fn = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int]
        fn(int(n))


_handles = {}


def numpy_blas():
    if "numpy" not in _handles:
        _handles["numpy"] = _openblas_handle("openblas64_") or _openblas_handle("openblas", exclude="scipy_openblas-")
    return _handles["numpy"]


def scipy_blas_handle():
    """scipy's OpenBLAS (libscipy_openblas-<hash>.so, 32-bit ints; numpy's is ...openblas64_...),
    or None while it is not loaded."""
    if _handles.get("scipy") is None:
        for path in _loaded_libraries("openblas"):
            if "openblas64" in os.path.basename(path):
                continue
            handle = _openblas_handle(os.path.basename(path))
            if handle is not None:
                _handles["scipy"] = handle
                break
    return _handles.get("scipy")


GEMM_CHOICES = ("pygan", "openblas", "numpy")


ISA_CHOICES = ("avx512", "avx2", "generic")


def _native_gemm_module():
    """(pygan._cpu, isa, "") when it is built and has a SIMD micro-kernel for this CPU (or
    PYGAN_CPU_ISA names one it supports), else (None, None, why)."""
    try:
        from .. import _cpu
    except ImportError as exc:
        return None, None, f"pygan._cpu is not built ({exc})"
    isa = os.environ.get("PYGAN_CPU_ISA", "").strip().lower()
    if isa:
        if isa not in ISA_CHOICES:
            raise ValueError(f"PYGAN_CPU_ISA must be one of {', '.join(ISA_CHOICES)} (or unset), got {isa!r}")
        if isa not in _cpu.supported_isas():
            raise ValueError(f"PYGAN_CPU_ISA={isa}: this CPU runs only {', '.join(_cpu.supported_isas())}")
        return _cpu, isa, ""
    if _cpu.best_isa() == "generic":
        return None, None, "pygan._cpu has no AVX2/AVX-512 micro-kernel for this CPU"
    return _cpu, _cpu.best_isa(), ""


class Gemm:
    """out = op(a) @ op(b) for C-ordered 2-D float arrays (op: transpose when the flag is set), and
    the convolutions' GEMMs with the im2col done while packing (conv_forward, conv_weight_grad)
    and the input gradient without col2im (conv_backward_data); those only where `implicit` is.

    PYGAN_CPU_GEMM picks the library: pygan (csrc/cpu, the default where it is built and the CPU
    has AVX2 or AVX-512), openblas (scipy's), numpy (matmul). PYGAN_CPU_ISA=avx512|avx2|generic
    picks pygan's micro-kernel (default: the widest the CPU runs), to measure or test another."""

    def __init__(self):
        self.fblas = None
        self.native = None
        self.isa = None
        self.threads = 1
        self.note = ""
        choice = os.environ.get("PYGAN_CPU_GEMM", "").strip().lower()
        if choice and choice not in GEMM_CHOICES:
            raise ValueError(f"PYGAN_CPU_GEMM must be one of {', '.join(GEMM_CHOICES)} (or unset), got {choice!r}")
        if choice == "numpy":
            self.note = "PYGAN_CPU_GEMM=numpy"
            return
        if choice in ("", "pygan"):
            self.native, self.isa, why = _native_gemm_module()
            if self.native is not None:
                return
            if choice == "pygan":
                self.note = f"PYGAN_CPU_GEMM=pygan not applied: {why}"
        try:
            with _openblas_core_for_loading(os.environ.get("PYGAN_OPENBLAS_CORE", "")) as note:
                from scipy.linalg import blas as fblas
            self.note = "; ".join(n for n in (self.note, note) if n)
        except ImportError as exc:  # pragma: no cover - scipy is a dependency
            self.note = f"scipy.linalg.blas unavailable ({exc})"
            return
        self.fblas = fblas

    @property
    def implicit(self):
        """Whether conv_forward / conv_weight_grad exist (the native GEMM gathers the patches)."""
        return self.native is not None

    @property
    def name(self):
        if self.native is not None:
            return f"pygan GEMM (csrc/cpu, {self.isa} micro-kernel)"
        pinned = " (OPENBLAS_CORETYPE set)" if os.environ.get("OPENBLAS_CORETYPE") else ""
        if self.fblas is None:
            core = _corename(numpy_blas())
            return f"numpy matmul ({core or 'unknown BLAS'}{pinned})" + (f"; {self.note}" if self.note else "")
        if self.note:
            pinned = f" ({self.note})"
        return f"scipy OpenBLAS sgemm, core {_corename(scipy_blas_handle()) or 'unknown'}{pinned}"

    def __call__(self, a, b, trans_a=False, trans_b=False, out=None):
        m = a.shape[1] if trans_a else a.shape[0]
        n = b.shape[0] if trans_b else b.shape[1]
        if out is None:
            out = np.empty((m, n), a.dtype)
        if (self.native is not None and a.dtype == b.dtype == out.dtype == np.float32
                and a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous):
            self.native.gemm(a, b, out, trans_a, trans_b, threads=self.threads, isa=self.isa)
            return out
        if self.fblas is None or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
            np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
            return out
        gemm = self.fblas.sgemm if a.dtype == np.float32 else self.fblas.dgemm
        # C-ordered out = op(a) op(b) is, read as Fortran arrays, out.T = op(b).T op(a).T; a C-ordered
        # array's memory is its transpose in Fortran order, so no operand is copied.
        r = gemm(1.0, b.T, a.T, beta=0.0, c=out.T, trans_a=int(trans_b), trans_b=int(trans_a), overwrite_c=1)
        if r.ctypes.data != out.ctypes.data:  # pragma: no cover - f2py copied instead of writing in place
            out[...] = r.T
        return out

    def conv_forward(self, xpad, wk, out, kernel, stride, out_hw):
        """out (N*OH*OW, O) = cols(xpad) wk^T: xpad an (N, Hp, Wp, C) padded NHWC image."""
        self.native.conv_forward(xpad, wk, out, kernel, stride, out_hw, threads=self.threads, isa=self.isa)
        return out

    def conv_backward_data(self, dy, w, out, stride, padding):
        """out (N, C, H, W) = conv2d_backward_data(dy, w) by parity classes (no col2im)."""
        self.native.conv_backward_data(dy, w, out, stride, padding, threads=self.threads, isa=self.isa)
        return out

    def conv_weight_grad(self, dym, xpad, out, kernel, stride, out_hw):
        """out (O, kh*kw*C) = dym^T cols(xpad)."""
        self.native.conv_weight_grad(dym, xpad, out, kernel, stride, out_hw, threads=self.threads, isa=self.isa)
        return out


# OpenBLAS cores whose sgemm kernels need AVX-512 (F, CD, BW, DQ, VL), and the AVX2-only ones
_AVX512_FLAGS = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
_AVX512_CORES = ("skylakex", "cooperlake", "sapphirerapids")


class _openblas_core_for_loading:
    """Context manager around the first load of scipy's OpenBLAS: with PYGAN_OPENBLAS_CORE set,
    OPENBLAS_CORETYPE is what it asks for while the library loads (OpenBLAS reads it once, then),
    and is restored afterwards. Yields the note Gemm.name shows ("" when nothing was asked)."""

    def __init__(self, request):
        self.request = request.strip()
        self.saved = None
        self.active = False

    def __enter__(self):
        if not self.request:
            return ""
        if scipy_blas_handle() is not None:
            return f"PYGAN_OPENBLAS_CORE={self.request} not applied: scipy's OpenBLAS was already loaded"
        self.saved = os.environ.get("OPENBLAS_CORETYPE")
        if self.request.lower() == "native":
            os.environ.pop("OPENBLAS_CORETYPE", None)  # OpenBLAS then detects the CPU itself
        else:
            os.environ["OPENBLAS_CORETYPE"] = self.request
        self.active = True
        return f"PYGAN_OPENBLAS_CORE={self.request}"

    def __exit__(self, *exc):
        if self.active:
            if self.saved is None:
                os.environ.pop("OPENBLAS_CORETYPE", None)
            else:
                os.environ["OPENBLAS_CORETYPE"] = self.saved
        return False


def gemm_core_hint(core, flags=None, env=None):
    """One line when OPENBLAS_CORETYPE pins an AVX2 core for pygan's GEMM on a CPU with AVX-512,
    else None."""
    env = os.environ if env is None else env
    flags = cpu_flags() if flags is None else flags
    pinned = env.get("OPENBLAS_CORETYPE", "").strip()
    if not pinned or env.get("PYGAN_OPENBLAS_CORE", "").strip() or not core:
        return None
    if all(f in flags for f in _AVX512_FLAGS) and not core.lower().startswith(_AVX512_CORES):
        return (f"OPENBLAS_CORETYPE={pinned} gives pygan's GEMMs OpenBLAS's {core} (AVX2) kernels on this AVX-512 "
                f"CPU; PYGAN_OPENBLAS_CORE=native lets OpenBLAS pick the CPU's own (about 1.7x faster GEMMs measured "
                f"on an AVX-512 AMD EPYC)")
    return None


def numba_threading_layer():
    try:
        import numba

        return numba.threading_layer()
    except Exception:  # noqa: BLE001 - only known after the first parallel kernel ran
        return "not started"


def describe():
    """One line for benchmark output: CPU, SIMD level, threads, GEMM."""
    return f"{cpu_model()} ({simd_level()}), {available_cores()} cores"

