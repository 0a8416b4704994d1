"""The C kernel of the greedy residual series: the same terms as the eager loop of `fpxint.series`, far
fewer passes. This module builds, loads and runs the kernel on 2-D views (`use_kernel`, `run_kernel`);
the series' entry points on it (`series.expand_tensor` / `expand_weights` with backend "auto" or "c",
`series.expanded_sum_fused`) live in `fpxint.series`, which builds on this module, never the reverse.

The eager series (`series._series_steps`) costs several full passes over the tensor per term (a
min / max reduction, a division, a rounding, a clamp, a fused multiply-add for the residual, a cast).
Here a small C kernel (`_fused_kernel.c`, compiled on first use with the system C compiler and
called through ctypes) walks the 2-D view [G, K] one row at a time: one min / max pass, then ONE pass
per term that quantizes, stores the integer term, updates the residual in a scratch row and reduces
min / max for the next scale. A per-channel weight row (a few KB) stays in L1 / L2, so the weights
are read from memory once; per-tensor views (one long row) are split over the threads, one parallel
pass per term.

Every float operation mirrors the eager code in the same order and rounding, so the results are
bit-identical (`torch.equal`) to `series.expand_tensor` / `series.expanded_sum`. Whether torch's
`addcmul` (the residual update r - q s) rounds once (fused multiply-add) or twice depends on how
torch was built; it is probed once at load time and the kernel follows it.

What each scale rule costs (n terms, K elements per row):
- max: one reduction per term; fused into the previous term's pass, so n + 1 passes in all, from
  cache when a row fits (per channel), from memory for a per-tensor view (n + 1 reads of the weights
  and n residual writes).
- fixed: one reduction for the first term; s_k = s_1 f^(k-1) needs no more (same passes, less work).
- mse: the first scale is searched over 16 clip ratios by the eager `quant.mse_scale` (~100 passes,
  float32 sums whose order the kernel cannot reproduce); terms 2..n then run fused.

Fallbacks: float64 tensors, tensors off the CPU, inputs that need autograd, or no working C compiler
run the eager code (identical results by definition); `kernel_info()` says which path is active and
why. Nothing is compiled at import time: the first call builds the kernel in about a second and
caches it in `<cache_dir()>/kernels`, keyed by source, compiler and CPU. That folder is private: created
0700, and it and each library are checked (owner = this user, no group / other write, no links) before
anything is loaded, through a descriptor so the file checked is the file loaded; a failed check, like
a missing compiler, means the eager path (with one warning), never an error.

One known difference: a row whose range overflows float32 (asymmetric grid, max - min > 3.4e38)
gets an infinite scale and NaN residuals in the eager code; the kernel's later terms there differ.

Example:
    >>> from fpxint.series import expand_weights
    >>> series = expand_weights([torch.randn(64, 3, 3, 3), torch.randn(10, 64)], bits=4, terms=3)
    >>> series[0].q.shape
    torch.Size([3, 64, 3, 3, 3])
"""
from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from .quant import contraction, mse_scale, term_dtype

BACKENDS = ("auto", "c", "torch")
GRID_CODE = {"symmetric": 0, "full": 1, "asymmetric": 2}
_SPLIT_MIN_K = 1 << 16  # rows longer than this (256 KB) are split over the threads when rows are few
_SOURCE = Path(__file__).with_name("_fused_kernel.c")
_FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared")


class _Tensor(ctypes.Structure):  # mirrors `Tensor` in _fused_kernel.c
    _fields_ = [("x", ctypes.c_void_p), ("q", ctypes.c_void_p), ("s", ctypes.c_void_p), ("zp", ctypes.c_void_p),
                ("out", ctypes.c_void_p), ("given_s", ctypes.c_void_p), ("given_z", ctypes.c_void_p),
                ("G", ctypes.c_int64), ("K", ctypes.c_int64), ("split", ctypes.c_int64)]


# ----- building and loading the kernel -------------------------------------------------------------
def _cpu_signature() -> str:
    """What -march=native depends on: a cached library must not move to a CPU with fewer features."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compile(cc: str, out: Path, openmp: bool) -> None:
    """Builds to a unique temporary name beside `out`, then renames: a concurrent process or thread
    sees no file or the whole library, never a half-written one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        cmd = [cc, *_FLAGS, *(["-fopenmp"] if openmp else []), str(_SOURCE), "-o", tmp, "-lm"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        os.chmod(tmp, 0o700)  # the linker creates it by the umask; nobody else needs to read it
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _open_library(path: Path, uid: int) -> ctypes.CDLL:
    """Loads the library through a descriptor opened without following links and checked with
    fstat, so the file checked is the file loaded (no swap between the check and dlopen)."""
    from .zoo.paths import UntrustedFolder  # zoo's package imports the engine: deferred, like cache_dir

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UntrustedFolder(f"{path} is a link, not the library built here") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
            raise UntrustedFolder(f"{path} is not a regular file of uid {uid} writable only by it "
                             f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")
        proc = Path(f"/proc/self/fd/{fd}")
        return ctypes.CDLL(str(proc) if proc.exists() else str(path))
    finally:
        os.close(fd)


_LOCK = threading.Lock()


def _load() -> tuple[ctypes.CDLL | None, dict]:
    """The kernel and what `kernel_info` reports; built on the first call of the process."""
    with _LOCK:
        return _load_once()


@functools.lru_cache(maxsize=1)
def _load_once() -> tuple[ctypes.CDLL | None, dict]:
    """Loads the kernel from the per-user cache folder; never raises (the eager path is the fallback).

    The folder is the project's cache folder (`fpxint.zoo.paths.cache_dir()`, the one place that
    reads $FPXINT_CACHE / $HOME) plus "kernels": a location this process chooses once, not a setting.
    """
    from .zoo.paths import cache_dir

    try:
        folder = cache_dir() / "kernels"
    except (RuntimeError, KeyError) as e:  # no home folder
        return None, _fallback({}, f"no cache folder for the kernel: {e}")
    lib, info = _load_from(folder, os.getuid() if hasattr(os, "getuid") else -1)
    if lib is None:
        warnings.warn(f"fpxint: the fused C kernel is off, the eager path runs instead (same results, slower): "
                      f"{info['reason']}", RuntimeWarning, stacklevel=4)
    return lib, info


def _fallback(info: dict, reason: str) -> dict:
    base = {"backend": "torch", "reason": "", "compile_s": 0.0, "cached": False, "path": None,
            "openmp": False, "fma": None}
    return {**base, **info, "backend": "torch", "reason": reason}


def _load_from(folder: Path, uid: int) -> tuple[ctypes.CDLL | None, dict]:
    """Compiles (once per machine and user) into `folder` and loads the kernel; never raises."""
    from .zoo.paths import UntrustedFolder, private_folder

    info: dict = _fallback({}, "")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None, _fallback(info, "no C compiler (gcc / cc) on PATH")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256("\0".join([_SOURCE.read_text(), " ".join(_FLAGS), version, _cpu_signature(),
                                        platform.machine()]).encode()).hexdigest()[:16]
        private_folder(folder, uid)
        lib, err = None, ""
        for openmp in (True, False):  # without OpenMP the kernel runs on one thread, same results
            path = folder / f"kernel-{key}{'-omp' if openmp else ''}.so"
            try:
                if os.path.lexists(path):
                    info["cached"] = True
                else:
                    t0 = time.perf_counter()
                    _compile(cc, path, openmp)
                    info["compile_s"] = time.perf_counter() - t0
                lib = _open_library(path, uid)
                info.update(path=str(path), openmp=openmp)
                break
            except UntrustedFolder:
                raise
            except (OSError, subprocess.SubprocessError) as e:
                err = getattr(e, "stderr", b"") or str(e)
                err = err.decode(errors="replace") if isinstance(err, bytes) else err
        if lib is None:
            return None, _fallback(info, f"kernel did not build: {err.strip()[:300]}")
    except UntrustedFolder as e:
        return None, _fallback(info, f"kernel cache refused: {e}")
    except (OSError, subprocess.SubprocessError) as e:
        return None, _fallback(info, f"kernel did not build: {e}")
    lib.fpx_series.restype = ctypes.c_int
    lib.fpx_series.argtypes = [ctypes.POINTER(_Tensor), ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_float,
                               ctypes.c_void_p, ctypes.c_int]
    fma = _torch_fuses("addcmul")
    if fma is None or _torch_fuses("add_alpha") != fma:
        return None, _fallback(info, "torch's residual update rounds in a way the kernel does not mirror")
    info.update(backend="c", fma=fma)
    return lib, info


def _torch_fuses(op: str) -> bool | None:
    """Whether torch's CPU addcmul / add(alpha=) round once (FMA) or twice; None if neither matches.

    Values are chosen so that the float64 result is exact: rounding it once to float32 IS the FMA.
    """
    g = torch.Generator().manual_seed(0)
    r = 1 + torch.rand(64, 64, generator=g)
    q = torch.randint(1, 8, (64, 64), generator=g).float()
    s = 1 + torch.rand(64, 1, generator=g)
    if op == "addcmul":
        got = torch.addcmul(r, q, s, value=-1)
        once, twice = (r.double() - q.double() * s.double()).float(), r - q * s
    else:
        d = q * s
        got = r.clone().add_(d, alpha=3)
        once, twice = (r.double() + 3 * d.double()).float(), r + 3 * d
    if torch.equal(got, once):
        return True
    return False if torch.equal(got, twice) else None


def kernel_info() -> dict:
    """Which path `backend="auto"` takes: {"backend": "c" | "torch", "reason", "compile_s", "cached",
    "path", "openmp", "fma"}. The first call builds the kernel (about a second; cached per machine)."""
    return dict(_load()[1])


def use_kernel(backend: str) -> ctypes.CDLL | None:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not allowed; choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return None
    lib, info = _load()
    if lib is None and backend == "c":
        raise RuntimeError(f"the fused C kernel is not available: {info['reason']}")
    return lib


def _ptr(t: torch.Tensor | None) -> int | None:
    return t.data_ptr() if t is not None else None


# ----- running it (the series' fused entry points are in fpxint.series) -----------------------------------
def run_kernel(lib: ctypes.CDLL, views: list[torch.Tensor], bits: int, terms: int, grid: str, scale_rule: str,
         want_q: bool, outs: list[torch.Tensor] | None = None, coeffs: Sequence[float] | None = None,
         check: bool = True) -> tuple[list, int]:
    """Runs the kernel on contiguous float32 CPU views [G, K]; returns per view (q, scales, zeros)."""
    nthreads = max(1, torch.get_num_threads())
    arr = (_Tensor * len(views))()
    results, keep = [], []
    for b, v in enumerate(views):
        G, K = v.shape
        q = torch.empty((terms, G, K), dtype=term_dtype(grid)) if want_q else None
        s = torch.empty((terms, G), dtype=torch.float32)
        z = torch.empty((terms, G), dtype=torch.float32) if grid == "asymmetric" else None
        gs = gz = None
        if scale_rule == "mse":  # first scale searched eagerly; later terms follow the max rule
            gs, gz = mse_scale(v, bits, grid)
            gs = gs.reshape(-1).contiguous()
            gz = gz.reshape(-1).contiguous() if gz is not None else None
            keep += [gs, gz]
        split = int(K > _SPLIT_MIN_K and G < 4 * nthreads)
        arr[b] = _Tensor(v.data_ptr(), _ptr(q), s.data_ptr(), _ptr(z), _ptr(outs[b]) if outs else None,
                         _ptr(gs), _ptr(gz), G, K, split)
        results.append((q, s, z))
    cbuf = None
    if coeffs is not None:
        cbuf = torch.tensor([float(c) for c in coeffs], dtype=torch.float32)
        keep.append(cbuf)
    rc = lib.fpx_series(arr, len(views), GRID_CODE[grid], bits, terms, int(scale_rule == "fixed"),
                        int(_load()[1]["fma"]), 1, int(check),  # always clamp, as series._series_steps
                        contraction(bits, grid), _ptr(cbuf), nthreads)
    if rc == -2:
        raise MemoryError("the fused series kernel ran out of memory for its scratch rows")
    return results, rc


def fusable(t: torch.Tensor, dtypes=(torch.float32, torch.float16, torch.bfloat16)) -> bool:
    """CPU, a dtype the kernel takes, and no autograd wanted (the kernel builds no graph)."""
    return (t.device.type == "cpu" and t.dtype in dtypes and t.numel() > 0
            and not (t.requires_grad and torch.is_grad_enabled()))
