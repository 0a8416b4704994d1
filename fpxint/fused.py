"""Fused fast path for the greedy residual series: the same terms as `fpxint.series`, far fewer passes.

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
    >>> from fpxint.fused import expand_weights
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

from .config import check_bits, check_terms
from .quant import contraction, group_view, mse_scale, term_dtype
from .series import TensorSeries, _check_options, check_tensor, expand_tensor, expanded_sum

BACKENDS = ("auto", "c", "torch")
_GRID_CODE = {"symmetric": 0, "full": 1, "asymmetric": 2}
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


class _Untrusted(OSError):
    """The cache folder or a library in it could have been written by someone else."""


def _private_folder(folder: Path, uid: int) -> Path:
    """Creates `folder` (mode 0700) if needed and checks it is a real folder of `uid` that nobody
    else can write: a library another user could plant there would run as this user."""
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    for path, private in ((folder.parent, False), (folder, True)):
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise _Untrusted(f"{path} is not a folder (a link or a file)")
        if st.st_uid not in ((uid,) if private else (uid, 0)):
            raise _Untrusted(f"{path} belongs to uid {st.st_uid}, not {uid}")
        bad = st.st_mode & (0o077 if private else 0o022)
        if bad and not (not private and st.st_mode & stat.S_ISVTX):  # a sticky parent (like /tmp) is fine
            raise _Untrusted(f"{path} has mode {stat.S_IMODE(st.st_mode):o}; group / others must not "
                             f"{'access' if private else 'write'} it")
    return folder


def _open_library(path: Path, uid: int) -> ctypes.CDLL:
    """Loads the library through a descriptor opened without following links and checked with
    fstat, so the file checked is the file loaded (no swap between the check and dlopen)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _Untrusted(f"{path} is a link, not the library built here") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
            raise _Untrusted(f"{path} is not a regular file of uid {uid} writable only by it "
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
    info: dict = _fallback({}, "")
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None, _fallback(info, "no C compiler (gcc / cc) on PATH")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256("\0".join([_SOURCE.read_text(), " ".join(_FLAGS), version, _cpu_signature(),
                                        platform.machine()]).encode()).hexdigest()[:16]
        _private_folder(folder, uid)
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
            except _Untrusted:
                raise
            except (OSError, subprocess.SubprocessError) as e:
                err = getattr(e, "stderr", b"") or str(e)
                err = err.decode(errors="replace") if isinstance(err, bytes) else err
        if lib is None:
            return None, _fallback(info, f"kernel did not build: {err.strip()[:300]}")
    except _Untrusted as e:
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


def _use_kernel(backend: str) -> ctypes.CDLL | None:
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


# ----- the fused series --------------------------------------------------------------------------
def _run(lib: ctypes.CDLL, views: list[torch.Tensor], bits: int, terms: int, grid: str, scale_rule: str,
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
    rc = lib.fpx_series(arr, len(views), _GRID_CODE[grid], bits, terms, int(scale_rule == "fixed"),
                        int(_load()[1]["fma"]), 1, int(check),  # always clamp, as series._series_steps
                        contraction(bits, grid), _ptr(cbuf), nthreads)
    if rc == -2:
        raise MemoryError("the fused series kernel ran out of memory for its scratch rows")
    return results, rc


def _fusable(t: torch.Tensor, dtypes=(torch.float32, torch.float16, torch.bfloat16)) -> bool:
    """CPU, a dtype the kernel takes, and no autograd wanted (the kernel builds no graph)."""
    return (t.device.type == "cpu" and t.dtype in dtypes and t.numel() > 0
            and not (t.requires_grad and torch.is_grad_enabled()))


def expand_weights(weights: Sequence[torch.Tensor], bits: int = 4, terms: int = 2, granularity: str = "per_channel",
                   grid: str = "symmetric", scale_rule: str = "max", backend: str = "auto") -> list[TensorSeries]:
    """Expands many tensors at once; the same `TensorSeries` as `series.expand_tensor` on each, bit for bit.

    Args:
        weights: float tensors (dim 0 is the output channel for per_channel); any mix of shapes.
        bits, terms, granularity, grid, scale_rule: as in `series.expand_tensor`, shared by all.
        backend: "auto" (the C kernel when it builds, else eager), "c" (kernel or RuntimeError),
            "torch" (the eager `expand_tensor` loop).

    Float64, non-CPU, and (with autograd on) grad-requiring tensors take the eager path.

    Example:
        >>> ws = [p.detach() for p in torchvision.models.resnet18().parameters() if p.dim() > 1]
        >>> series = expand_weights(ws, bits=4, terms=4, granularity="per_channel")
    """
    check_bits(bits)
    check_terms(terms)
    _check_options(grid, scale_rule)
    weights = list(weights)
    lib = _use_kernel(backend)
    out: list[TensorSeries | None] = [None] * len(weights)
    idx, views, sources = [], [], []
    for i, w in enumerate(weights):
        if not isinstance(w, torch.Tensor) or w.numel() == 0:
            check_tensor(w)  # raises the eager message
        if lib is None or not _fusable(w) or grid not in _GRID_CODE:
            out[i] = expand_tensor(w, bits, terms, granularity, grid, scale_rule, backend="torch")
            continue
        work = w.detach().float() if w.dtype != torch.float32 else w.detach()
        idx.append(i)
        views.append(group_view(work, granularity).contiguous())
        sources.append(w)
    if views:
        results, rc = _run(lib, views, bits, terms, grid, scale_rule, want_q=True)
        if rc >= 0:
            check_tensor(sources[rc])  # non-finite values: raises the eager message
        for i, src, (q, s, z) in zip(idx, sources, results):
            out[i] = TensorSeries(q=q.reshape(terms, *src.shape), scales=s,
                                  zero_points=z.to(torch.int32) if z is not None else None,
                                  bits=bits, grid=grid, granularity=granularity, scale_rule=scale_rule, source=src)
    return out


def expand_tensor_fused(t: torch.Tensor, bits: int = 4, terms: int = 2, granularity: str = "per_tensor",
                        grid: str = "symmetric", scale_rule: str = "max", backend: str = "auto") -> TensorSeries:
    """Drop-in for `series.expand_tensor` (same arguments and defaults, same result) on the fused path."""
    return expand_weights([t], bits, terms, granularity, grid, scale_rule, backend)[0]


def expanded_sum_fused(x: torch.Tensor, bits: int, terms: int, granularity: str = "per_sample",
                       grid: str = "symmetric", scale_rule: str = "max", coeffs: Sequence[float] | None = None,
                       backend: str = "auto", accumulate: bool = False) -> torch.Tensor:
    """Drop-in for `series.expanded_sum`: sum_j coeffs[j] t_j Qx_j (default x - R_n), bit-identical.

    One pass over the input per term plus one, the integer terms never materialized. Inputs that are
    not float32 CPU tensors, hold NaN / Inf, or require grad with autograd on take the eager path.

    accumulate=True sums the dequantized terms even when every coefficient is 1, as the multi-group
    path of `ExpandedLayer._simulate_forward` does (`sum(c * xj ...)`), instead of the x - R_n
    shortcut of `expanded_sum`: the two differ in the last bit.
    """
    if accumulate and coeffs is None:
        coeffs = (1,) * terms
    lib = _use_kernel(backend)
    if lib is None or not _fusable(x, (torch.float32,)) or grid not in _GRID_CODE:  # the kernel lacks "auto"
        return expanded_sum(x, bits, terms, granularity, grid, scale_rule, coeffs, accumulate)
    check_bits(bits)
    check_terms(terms)
    _check_options(grid, scale_rule)
    n, cs = terms, None
    if coeffs is not None and (accumulate or not all(c == 1 for c in coeffs[:terms])):  # else x - R_n
        cs = list(coeffs[:terms])  # eager zips the coefficients with the terms
        while cs and cs[-1] == 0:  # trailing zero terms add nothing: do not compute them
            cs.pop()
        if not cs:
            return torch.zeros_like(x)
        n = len(cs)
    view = group_view(x.detach(), granularity).contiguous()
    out = torch.empty_like(view)
    _, rc = _run(lib, [view], bits, n, grid, scale_rule, want_q=False, outs=[out], coeffs=cs)
    if rc >= 0:  # NaN / Inf: the eager code defines what comes out
        return expanded_sum(x, bits, terms, granularity, grid, scale_rule, coeffs, accumulate)
    return out.reshape(x.shape)
