"""Measurement: tidy pandas DataFrames for the app, the CLI and notebooks.

- `weight_residuals`: per layer and term, the weight residual (relative L2, max-abs, SQNR) next to
  the proven max-abs bound.
- `layer_output_errors`: per layer, the output error against the (BatchNorm-folded) FP model on
  probe inputs, captured with forward hooks, for one or several numbers of terms.
- `model_output_error`: the network output against FP as the number of terms grows.
- `evaluate` / `accuracy_grid`: top-1 (with labels) and fidelity (top-1 agreement with FP, KL) over
  a grid of bits x terms, with a progress callback.

Every function takes the FP model and a config and never changes the model: not its training flag,
its BatchNorm statistics (a train-mode model runs as an eval-mode copy) or its device (`device=None`
means where the model is). Forward hooks go on private copies only, so threads sharing one model
(app sessions) do not see each other's hooks.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Sequence

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import metrics
from .config import ExpansionConfig
from .model import expand, expandable_layers, fold_batchnorm, layer_plan, model_device, target_device
from .progress import Progress
from .series import expand_tensor



_device = target_device  # None: where the model is


def _eval_on(model: nn.Module, dev: torch.device, private: bool = False) -> nn.Module:
    """The model in eval mode on `dev` without touching the caller's module: the module itself when it
    already is both (and `private` is not asked), else an eval-mode copy."""
    here = model_device(model)
    same = here.type == dev.type and (dev.index is None or dev.index == here.index)
    if same and not private and not any(m.training for m in model.modules()):
        return model
    return copy.deepcopy(model).eval().to(dev)


def _reference(model: nn.Module, cfg: ExpansionConfig, dev: torch.device, private: bool = False,
               folded: nn.Module | None = None) -> nn.Module:
    """What the expansion is compared with: the BatchNorm-folded copy (the caller's `folded` when
    given; `private` then makes a copy of it for hooks), or the model in eval mode."""
    if not cfg.fold_bn:
        return _eval_on(model, dev, private)
    if folded is not None:
        return _eval_on(folded, dev, private)
    return fold_batchnorm(model).to(dev)


def _source(model: nn.Module, cfg: ExpansionConfig, folded: nn.Module | None) -> nn.Module:
    """What to expand: the folded copy when there is one (expand finds no BatchNorm left to fold and
    makes the same layers, bit for bit), else the model."""
    return folded if folded is not None and cfg.fold_bn else model


def _metrics(ref: torch.Tensor, out: torch.Tensor) -> dict[str, float]:
    ref, out = ref.double().flatten(), out.double().flatten()
    sig, noise = ref.square().sum().item(), (out - ref).square().sum().item()
    cos = F.cosine_similarity(ref, out, dim=0).item() if ref.norm() > 0 and out.norm() > 0 else float("nan")
    return {"sqnr_db": metrics.sqnr_from_powers(sig, noise),
            "rel_l2": math.sqrt(noise / sig) if sig > 0 else math.nan,
            "cosine": cos}


@torch.no_grad()
def weight_residuals(model: nn.Module, cfg: ExpansionConfig, terms: int | None = None, *,
                     folded: nn.Module | None = None) -> pd.DataFrame:
    """Weight residual of every expanded layer after each term, beside the proven bound.

    Args:
        terms: expand to this many terms instead of each layer's own count (convergence curves).
        folded: `fold_batchnorm(model)` when the caller has it (sweeps fold once, not per call).

    Returns:
        Columns: layer, index, term, bits, max_abs, rel_l2, sqnr_db, bound, params.
    """
    fm = (folded if folded is not None else fold_batchnorm(model)) if cfg.fold_bn else model
    frames = []
    for idx, name, layer, spec in layer_plan(expandable_layers(fm), cfg):
        if spec.fp:
            continue
        s = expand_tensor(layer.weight.detach(), spec.w_bits, terms or spec.w_terms, cfg.w_granularity,
                          cfg.w_grid, cfg.scale_rule)
        df = s.residual_norms()
        df.insert(0, "layer", name)
        df.insert(1, "index", idx)
        df.insert(3, "bits", spec.w_bits)
        df["params"] = layer.weight.numel()
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _capture(model: nn.Module, names: Sequence[str], x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    outs: dict[str, torch.Tensor] = {}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o.detach().clone()))
             for n in names if n in mods]
    try:
        y = model(x)
    finally:
        for h in hooks:
            h.remove()
    return outs, y


@torch.no_grad()
def layer_output_errors(model: nn.Module, cfg: ExpansionConfig, probe: torch.Tensor,
                        terms: Sequence[int] | None = None, device: str | None = None,
                        progress: Progress | None = None, *, folded: nn.Module | None = None) -> pd.DataFrame:
    """Each expanded layer's output against the FP model's, both run end to end on `probe`.

    Args:
        terms: numbers of terms to sweep (both sides); None measures `cfg` as it is. The FP outputs
            are captured once for the whole sweep.
        folded: `fold_batchnorm(model)` when the caller has it (no re-folding per call).

    Returns:
        Columns: layer, index, terms, sqnr_db, rel_l2, cosine.
    """
    dev = _device(model, device)
    ref_model = _reference(model, cfg, dev, private=True, folded=folded)  # hooks go on it
    names = [n for n, _ in expandable_layers(ref_model)]
    probe = probe.to(dev)
    ref, _ = _capture(ref_model, names, probe)
    rows, ks = [], list(terms or [None])
    for i, k in enumerate(ks):
        if progress:
            progress(i / len(ks), f"{k or cfg.w_terms} terms")
        q = expand(_source(model, cfg, folded), cfg if k is None else cfg.with_terms(k), device=dev)
        got, _ = _capture(q, q.fpxint_layers, probe)
        for idx, n in enumerate(names):
            if n in got:
                rows.append({"layer": n, "index": idx, "terms": k or cfg.w_terms, **_metrics(ref[n], got[n])})
    return pd.DataFrame(rows)


def _fidelity(fp_logits: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
    return {"agreement": metrics.agreement(fp_logits, logits), "kl": metrics.kl(fp_logits, logits)}


@torch.no_grad()
def model_output_error(model: nn.Module, cfg: ExpansionConfig, probe: torch.Tensor,
                       terms: Sequence[int] = (1, 2, 3, 4), device: str | None = None,
                       progress: Progress | None = None, *, folded: nn.Module | None = None) -> pd.DataFrame:
    """Network output against FP for each number of terms (model-level convergence).

    The FP reference runs once for all `terms`; `folded`: `fold_batchnorm(model)` when the caller has it.

    Returns:
        Columns: terms, sqnr_db, rel_l2, cosine, agreement (top-1 agreement with FP), kl.
    """
    dev = _device(model, device)
    probe = probe.to(dev)
    ref = _reference(model, cfg, dev, folded=folded)(probe)
    rows = []
    for i, k in enumerate(terms):
        if progress:
            progress(i / len(terms), f"{k} terms")
        y = expand(_source(model, cfg, folded), cfg.with_terms(k), device=dev)(probe)
        row = {"terms": k, **_metrics(ref, y)}
        if y.dim() == 2:
            row.update(_fidelity(ref, y))
        rows.append(row)
    return pd.DataFrame(rows)


def _batches(data, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
    """(images, labels) tensors or an ImageData (`fpxint.data.batches`), or any iterable of (x, y) / x
    batches such as a DataLoader."""
    from .data import ImageData, batches  # data reads files (zoo, imagefiles): loaded when first needed

    if isinstance(data, ImageData) or (isinstance(data, (tuple, list)) and len(data) == 2
                                       and isinstance(data[0], torch.Tensor)):
        yield from batches(data, batch_size)
        return
    for b in data:
        yield (b[0], b[1]) if isinstance(b, (tuple, list)) else (b, None)


@torch.no_grad()
def logits_of(model: nn.Module, data, batch_size: int = 256, device: str | None = None,
              progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenated logits (on CPU) and labels (None when unlabeled) of a model over a dataset."""
    dev = _device(model, device)
    model = _eval_on(model, dev)
    outs, labels, n_seen = [], [], 0
    total = len(data[0]) if isinstance(data, (tuple, list)) and isinstance(data[0], torch.Tensor) else None
    for x, y in _batches(data, batch_size):
        outs.append(model(x.to(dev)).float().cpu())
        if y is not None:
            labels.append(y.cpu())
        n_seen += len(x)
        if progress and total:
            progress(n_seen / total, f"{n_seen}/{total} images")
    if not outs:
        raise ValueError("the dataset is empty: no images to evaluate")
    return torch.cat(outs), (torch.cat(labels) if labels else None)


def evaluate(model: nn.Module, cfg: ExpansionConfig | None, data, fp_logits: torch.Tensor | None = None,
             batch_size: int = 256, device: str | None = None, progress: Progress | None = None, *,
             folded: nn.Module | None = None) -> dict:
    """Top-1 (when labeled) and fidelity to FP of `model` expanded by `cfg` (None: the FP model).

    `folded`: `fold_batchnorm(model)` when the caller has it; the expansion starts from it (same layers).

    Returns:
        dict with n_images, top1 (% or None), agreement (%), kl, seconds.
    """
    t0 = time.perf_counter()
    net = expand(_source(model, cfg, folded), cfg, device=device) if cfg is not None else model
    logits, labels = logits_of(net, data, batch_size, device, progress)
    out = {"n_images": len(logits), "seconds": time.perf_counter() - t0, "top1": metrics.top1(logits, labels)}
    if fp_logits is not None:
        fid = _fidelity(fp_logits, logits)
        out.update(agreement=100 * fid["agreement"], kl=fid["kl"])
    return out


def accuracy_grid(model: nn.Module, data, base_cfg: ExpansionConfig, bits: Sequence[int] = (2, 3, 4),
                  terms: Sequence[int] = (1, 2, 3), a_bits: Sequence[int] | None = None,
                  batch_size: int = 256, device: str | None = None,
                  progress: Progress | None = None, *, fp: tuple[torch.Tensor, torch.Tensor | None] | None = None,
                  folded: nn.Module | None = None) -> pd.DataFrame:
    """Top-1 and fidelity over bits x terms (weights and activations share bits unless a_bits given).

    Args:
        fp: (FP logits, labels) from `logits_of(model, data, ...)` when the caller has them (several
            grids on the same data run the FP model once).
        folded: `fold_batchnorm(model)` when the caller has it (every config expands from it).

    Returns:
        Columns: w_bits, a_bits, terms, top1, fp_top1, agreement, kl, n_images, seconds, config.
    """
    grid = [(b, ab, k) for b in bits for ab in (a_bits or [None]) for k in terms]
    fp_logits, labels = fp if fp is not None else logits_of(model, data, batch_size, device)
    fp_top1 = metrics.top1(fp_logits, labels)
    rows = []
    for n, (b, ab, k) in enumerate(grid):
        cfg = base_cfg.replace(w_bits=b, a_bits=ab or b).with_terms(k)
        if progress:
            progress(n / len(grid), f"{cfg.label()} ({n + 1}/{len(grid)})")
        r = evaluate(model, cfg, data, fp_logits, batch_size, device, folded=folded)
        rows.append({"w_bits": b, "a_bits": ab or b, "terms": k, "top1": r["top1"], "fp_top1": fp_top1,
                     "agreement": r["agreement"], "kl": r["kl"], "n_images": r["n_images"],
                     "seconds": r["seconds"], "config": cfg.to_json()})
    if progress:
        progress(1.0, "done")
    return pd.DataFrame(rows)
