"""Admission control: what a run will cost before it starts, and a fair queue for the heavy ones.

- `profile(spec_or_model)`: per expandable layer, the input / output / im2col sizes and weights of one
  image, from a forward on the meta device (no memory, no numbers, the caller's model untouched).
- `estimate(prof, cfg, n_images, batch)`: peak memory (bytes above the idle process) and time of a run
  that expands the model and evaluates it on `n_images`, repeated `passes` times (sweeps, grids).
- `Limits` and `check()`: refuse a run over the memory or time limit with one line saying what to
  reduce; `admit()` is both in one call. The app, the CLI and `fpxint.views` use the same ones.
  `check_model()`: the same memory limit (and an optional parameter cap) on a model before it is loaded.
- `RunGate`: first come first served slots for concurrent heavy runs (threads of one process: the
  Streamlit server), with the visitor's place in the queue, cancellation, and release on any exit.

How the estimate was calibrated: `python -m bench.admission` runs real cases in fresh subprocesses,
measures the peak resident memory above the loaded baseline (`ru_maxrss`) and the wall time, and
prints estimate / measured; the constants below come from those runs on this project's 2-core CPU
machine (the ratios are in docs/RESULTS.md, "Reliability"). Memory is conservative by design
(estimate >= measured on every case, within 3x); time is a rough guide (within 4x).
The engine reads no environment: `Limits.from_env(os.environ)` is called by the edges.
"""
from __future__ import annotations

import copy
import itertools
import os
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

from .config import ExpansionConfig
from .layers import pair_matrix

__all__ = ["LayerShape", "Profile", "Estimate", "Limits", "AdmissionError", "Cancelled", "profile", "estimate",
           "check", "check_model", "admit", "RunGate"]

MB = 1 << 20
# Calibration constants (see the module docstring; re-run bench.admission after changing the layers).
_RUN_OVERHEAD = 64 * MB        # allocator slack, the logits, one-off buffers of a run
_SIM_ACT_FACTOR = 3.0          # live float32 copies of the widest layer's input/output in simulate mode
_MACS_PER_SECOND_FP32 = 15e9   # one core here, float32 conv/linear through oneDNN
_MACS_PER_SECOND_INT8 = 30e9   # integer mode: oneDNN int8 convolutions / torch._int_mm (exact, faster than float32)
_EXPAND_BYTES_PER_SECOND = 150 * MB  # weight series: quantize + residual per term


class AdmissionError(ValueError):
    """A run would exceed a limit; the message says by how much and what to reduce."""


class Cancelled(RuntimeError):
    """A queued run was cancelled before it started."""


@dataclass(frozen=True)
class LayerShape:
    """One expandable layer for one image: weights, input, output and im2col elements."""

    name: str
    params: int
    inputs: int
    outputs: int
    cols: int        # reduction size x output positions (the operand a GEMM lowering would build)
    macs: int


@dataclass(frozen=True)
class Profile:
    """What a model costs per image, independent of the expansion."""

    params: int                  # all parameters (the FP model)
    image_elems: int             # C x H x W of one input
    layers: tuple[LayerShape, ...]
    widest: int                  # largest output of any module (expandable or not), elements per image

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


@dataclass(frozen=True)
class Estimate:
    """Predicted cost of a run: peak bytes above the idle process and wall seconds on one core."""

    bytes: int
    seconds: float
    detail: dict = field(default_factory=dict, compare=False)

    @property
    def mb(self) -> float:
        return self.bytes / MB

    def describe(self) -> str:
        return f"about {_size(self.bytes)} and {_duration(self.seconds)}"


def _size(n: float) -> str:
    return f"{n / (1 << 30):.1f} GB" if n >= 1 << 30 else f"{n / MB:.0f} MB"


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


@torch.no_grad()
def profile(model: nn.Module | object, input_size: tuple[int, ...] | None = None) -> Profile:
    """Shapes of one image's forward, measured on the meta device (no data, no real memory).

    Args:
        model: A `fpxint.zoo.ModelSpec` (built on the meta device: cheapest) or an `nn.Module`
            (deep-copied then moved to meta; the caller's module is never touched).
        input_size: (C, H, W); taken from the spec when a spec is given.

    Example:
        >>> profile(get_spec("resnet20")).macs   # 40.55 M multiply-accumulates per image
    """
    from .model import expandable_layers

    if isinstance(model, nn.Module):
        net = copy.deepcopy(model).to("meta")
    else:  # a ModelSpec
        input_size = input_size or model.input_size
        with torch.device("meta"):
            net = model.build()
    if input_size is None:
        raise ValueError("profile needs the input size (C, H, W) of the model")
    net.eval()
    expandable = {m: n for n, m in expandable_layers(net)}
    shapes: list[LayerShape] = []
    widest = [0]

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            widest[0] = max(widest[0], output.numel())
        name = expandable.get(module)
        if name is None or not isinstance(output, torch.Tensor):
            return
        w = module.weight
        per_out, cout = w[0].numel(), w.shape[0]
        macs = per_out * output.numel()
        shapes.append(LayerShape(name, w.numel(), inputs[0].numel(), output.numel(), macs // cout, macs))

    handles = [m.register_forward_hook(hook) for m in net.modules()]  # hooks on our private copy only
    try:
        net(torch.empty((1, *input_size), device="meta"))
    finally:
        for h in handles:
            h.remove()
    c_h_w = 1
    for d in input_size:
        c_h_w *= int(d)
    return Profile(sum(p.numel() for p in net.parameters()), c_h_w, tuple(shapes), widest[0])


def _layer_specs(prof: Profile, cfg: ExpansionConfig):
    from .model import layer_position  # deferred like profile's import: admission loads before the model code

    for idx, layer in enumerate(prof.layers):
        yield layer, cfg.layer_spec(layer.name, layer_position(idx, len(prof.layers)))


def estimate(prof: Profile, cfg: ExpansionConfig, n_images: int, batch: int = 256, passes: int = 1) -> Estimate:
    """Peak memory and time of expanding the model with `cfg` and evaluating `n_images`, `passes` times.

    Memory: the decoded images (uint8 + float32), the FP logits, the expanded weights (int8 terms, the
    float weights simulate mode caches, a folded FP copy) and, per image of a batch, the widest layer's
    live tensors: the activation terms (int8 in integer mode, float32 in simulate mode), one 32-bit
    accumulator per kept (weight term, activation term) pair (one batched op holds them all) and float32
    copies of the input and output; with FP activations, a few float32 copies of its input and output. Passes run one after another, so memory is
    the largest pass and time their sum. The caller passes the heaviest config of a sweep.

    Returns:
        Estimate(bytes above the idle process, seconds on one core, detail by part).
    """
    n_images, batch, passes = max(1, int(n_images)), max(1, int(batch)), max(1, int(passes))
    b = min(batch, n_images)
    integer = cfg.mode == "integer" and cfg.expands_activations
    weights, act, int_macs, fp32_macs = 4 * prof.params, 0, 0, 0
    for layer, spec in _layer_specs(prof, cfg):
        if spec.fp:
            act = max(act, 4 * _SIM_ACT_FACTOR * (layer.inputs + layer.outputs))
            fp32_macs += layer.macs
            continue
        a_terms = spec.a_terms if cfg.expands_activations else 1
        trunc = cfg.truncation if cfg.expands_activations else "full"
        pairs = int(pair_matrix(spec.w_terms, a_terms, trunc, cfg.total_order).sum())
        rows = len({tuple(r) for r in pair_matrix(spec.w_terms, a_terms, trunc, cfg.total_order).tolist() if any(r)})
        cached = 0 if integer else spec.w_terms if cfg.expands_activations or cfg.level == "model" else max(rows, 1)
        weights += layer.params * (spec.w_terms + 4 * cached) + 4 * layer.params  # int8 terms, float sums, folded
        if integer:
            act = max(act, 4 * pairs * layer.outputs + a_terms * (layer.inputs + layer.cols)
                      + 4 * (2 * layer.inputs + layer.outputs))
            int_macs += pairs * layer.macs
        elif cfg.expands_activations:  # simulate: the same per-pair accumulators, float ops on float32 terms
            act = max(act, 4 * (pairs * layer.outputs + a_terms * layer.inputs + 2 * layer.inputs + layer.outputs))
            fp32_macs += pairs * layer.macs
        else:  # activations in FP: one float op per distinct row of C
            act = max(act, 4 * _SIM_ACT_FACTOR * (layer.inputs * 2 + layer.outputs))
            fp32_macs += max(rows, 1) * layer.macs
    act = max(act, 4 * _SIM_ACT_FACTOR * prof.widest)  # non-expandable parts (attention, pooling, ...)
    data = n_images * prof.image_elems * 5 + n_images * 8 * 1000  # uint8 + float32 pixels, logits
    total = int(_RUN_OVERHEAD + data + weights + b * act)
    fp_macs = prof.macs * n_images
    seconds = passes * (fp32_macs * n_images / _MACS_PER_SECOND_FP32 + int_macs * n_images / _MACS_PER_SECOND_INT8
                        + weights / _EXPAND_BYTES_PER_SECOND) + fp_macs / _MACS_PER_SECOND_FP32
    return Estimate(total, seconds, {"data": data, "weights": int(weights), "activations": int(b * act),
                                     "batch": b, "integer": integer})


def _mem_total() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


@dataclass(frozen=True)
class Limits:
    """Server limits. Defaults are sized for the machine; None switches a limit off.

    max_run_mb: peak memory one run may add (default: half of physical memory shared by the runs
        allowed at once, so that all of them together leave the other half to the server).
    max_run_seconds: estimated time one run may take.
    max_concurrent: heavy runs at once (the app's queue; default one per two CPU cores).
    max_params: parameters of a model loaded by name (`check_model`; default: only the memory limit).
    """

    max_run_mb: float | None = None
    max_run_seconds: float | None = 120.0  # a demo: one visitor never holds a slot for minutes
    max_concurrent: int = 0
    max_params: float | None = None

    def __post_init__(self):
        if self.max_concurrent < 1:
            object.__setattr__(self, "max_concurrent", max(1, (os.cpu_count() or 2) // 2))
        if self.max_run_mb is None:
            object.__setattr__(self, "max_run_mb", _mem_total() / 2 / self.max_concurrent / MB)

    ENV = {"max_run_mb": "FPXINT_MAX_RUN_MB", "max_run_seconds": "FPXINT_MAX_RUN_SECONDS",
           "max_concurrent": "FPXINT_MAX_CONCURRENT", "max_params": "FPXINT_MAX_PARAMS"}

    @classmethod
    def from_env(cls, env: Mapping[str, object], **defaults) -> "Limits":
        """Limits from a mapping (os.environ or st.secrets): FPXINT_MAX_RUN_MB, FPXINT_MAX_RUN_SECONDS,
        FPXINT_MAX_PARAMS ("off" or 0 disables), FPXINT_MAX_CONCURRENT. Bad values raise ValueError naming
        the variable."""
        kw = dict(defaults)
        for name, var in cls.ENV.items():
            raw = env.get(var)
            if raw is None or str(raw).strip() == "":
                continue
            text = str(raw).strip().lower()
            if name != "max_concurrent" and text in ("off", "0", "none"):
                kw[name] = float("inf")
                continue
            try:
                value = int(text) if name == "max_concurrent" else float(text)
            except ValueError:
                raise ValueError(f"{var}={str(raw)[:40]!r} is not a number") from None
            if not value > 0 or len(text) > 20:
                raise ValueError(f"{var}={str(raw)[:40]!r} must be a positive number")
            kw[name] = value
        return cls(**kw)


def check(est: Estimate, limits: Limits, reduce: str = "images, terms or batch size") -> None:
    """Raises AdmissionError when `est` exceeds a limit; the message names the limit and what to reduce."""
    over = []
    if limits.max_run_mb is not None and est.bytes > limits.max_run_mb * MB:
        over.append(f"about {_size(est.bytes)} of memory (limit {_size(limits.max_run_mb * MB)})")
    if limits.max_run_seconds is not None and est.seconds > limits.max_run_seconds:
        over.append(f"about {_duration(est.seconds)} (limit {_duration(limits.max_run_seconds)})")
    if over:
        what = " and ".join(over)
        hint = " Each kept term pair holds one accumulator per output: fewer terms, or the total_order " \
               "truncation, need less memory."
        raise AdmissionError(f"this run would need {what}: reduce the {reduce}.{hint}")


def _count(n: float) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def check_model(name: str, params: int, nbytes: int, limits: Limits) -> None:
    """Refuses (AdmissionError, one line with the numbers) a model whose loading alone exceeds the memory
    of one run, or whose parameter count exceeds `limits.max_params`; called before it is loaded.

    Args:
        name: The model as the user typed it (shown in the message).
        params: Its parameter count; nbytes: the peak memory of loading it (`fpxint.zoo.hf_files.HFSize`).
    """
    over = []
    if limits.max_run_mb is not None and nbytes > limits.max_run_mb * MB:
        over.append(f"loading it needs about {_size(nbytes)} of memory (limit {_size(limits.max_run_mb * MB)} "
                    "per run, FPXINT_MAX_RUN_MB)")
    if limits.max_params is not None and params > limits.max_params:
        over.append(f"it is over this server's limit of {_count(limits.max_params)} parameters (FPXINT_MAX_PARAMS)")
    if over:
        raise AdmissionError(f"{name} has {_count(params)} parameters: {' and '.join(over)}; choose a smaller "
                             "model. No weights were downloaded or read.")


def admit(model, cfg: ExpansionConfig, n_images: int, batch: int = 256, *, passes: int = 1,
          limits: Limits | None = None, force: bool = False) -> Estimate:
    """Estimates a run and refuses it over `limits` (default `Limits()`), unless `force`."""
    est = estimate(profile(getattr(model, "spec", model)) if not isinstance(model, Profile) else model,
                   cfg, n_images, batch, passes)
    if not force:
        check(est, limits or Limits())
    return est


class RunGate:
    """First come, first served slots for heavy runs shared by the threads of one process.

    `with gate.slot(on_wait=..., cancelled=...)` waits for a free slot, calling `on_wait(ahead)` with
    the number of runs queued before this one (so the visitor sees "2 ahead"), and gives up with
    `Cancelled` when `cancelled()` turns true; the slot is released however the block exits.
    """

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"a RunGate needs at least one slot, got {slots}")
        self.slots = slots
        self._cv = threading.Condition()
        self._queue: deque[int] = deque()
        self._running: set[int] = set()
        self._ids = itertools.count()

    @property
    def running(self) -> int:
        with self._cv:
            return len(self._running)

    @property
    def waiting(self) -> int:
        with self._cv:
            return len(self._queue)

    def _enter(self) -> int:
        with self._cv:
            ticket = next(self._ids)
            self._queue.append(ticket)
            return ticket

    def _ahead(self, ticket: int) -> int:
        return self._queue.index(ticket)

    def _leave(self, ticket: int) -> None:
        with self._cv:
            if ticket in self._queue:
                self._queue.remove(ticket)
            self._running.discard(ticket)
            self._cv.notify_all()

    def _wait(self, ticket: int, on_wait, cancelled, poll: float) -> None:
        with self._cv:
            while True:
                ahead = self._ahead(ticket)
                if ahead == 0 and len(self._running) < self.slots:
                    self._queue.popleft()
                    self._running.add(ticket)
                    return
                if cancelled is not None and cancelled():
                    raise Cancelled("cancelled while waiting for a free slot")
                if on_wait is not None:  # every poll: Streamlit can only interrupt a script when it draws
                    self._cv.release()  # the callback may block (it draws in a browser): never hold the lock
                    try:
                        on_wait(ahead)
                    finally:
                        self._cv.acquire()
                    if self._ahead(ticket) == 0 and len(self._running) < self.slots:
                        continue
                self._cv.wait(poll)

    @contextmanager
    def slot(self, on_wait: Callable[[int], None] | None = None, cancelled: Callable[[], bool] | None = None,
             poll: float = 0.2) -> Iterator[None]:
        ticket = self._enter()
        try:
            self._wait(ticket, on_wait, cancelled, poll)
            yield
        finally:
            self._leave(ticket)
