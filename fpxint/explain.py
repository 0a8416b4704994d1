"""The Explain page's five steps as plain functions (no Streamlit; notebook-friendly).

A talk on FP=xINT in five screens: (1) a weight tensor becomes integer terms, (2) its residual
shrinks geometrically under the proven bound, (3) one layer on one real image, (4) the whole
model, top-1 against terms and the images that flip back to FP's answer, (5) the cost and the
equal-budget comparison. Each function computes everything its step's sliders can reach, once per
model + config, so that moving a slider only indexes stored arrays (the app caches the results).
Sweeps over "k terms" use `cfg.with_terms(k)`: k terms on both the weights and the activations.

    from fpxint import ExpansionConfig, explain
    from fpxint.zoo import load_model
    lm = load_model("digits_cnn")
    t = explain.tensor_terms(lm.model, ExpansionConfig(), "features.0.0")
    t["norms"]  # max |residual| per term beside the bound
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from . import analysis, cost, metrics
from .config import MAX_BITS, ExpansionConfig
from .model import expand, expandable_layers, fold_batchnorm, layer_plan, layer_position
from .progress import Progress, quiet
from .quant import contraction
from .series import expand_tensor

STEPS = ("A tensor becomes integers", "The error shrinks geometrically", "A layer", "The model", "What it costs")
SHORT = ("Tensor", "Residual", "Layer", "Model", "Cost")  # the step buttons' labels
CROP_OUT, CROP_IN, CROP_LINEAR = 32, 16, (64, 128)  # the part of a weight the maps show (norms use all of it)
N_IMAGES = 8        # candidate images of step 3, expanded together so that picking one costs nothing
N_FLIPS = 6         # images of step 4 whose prediction comes back to FP's
OUT_CHANNELS = 8    # feature maps shown per layer output (large enough to see on a projector)


def depth(cfg: ExpansionConfig) -> int:
    """How many terms the steps precompute: the config's own, and at least four (the first three and one more)."""
    return max(4, cfg.w_terms, cfg.a_terms)


def _reference(model: nn.Module, cfg: ExpansionConfig) -> nn.Module:
    """The FP model the expansion starts from (BatchNorm folded when the config folds it)."""
    return fold_batchnorm(model) if cfg.fold_bn else copy.deepcopy(model).eval()


def layer_names(model: nn.Module, cfg: ExpansionConfig) -> list[str]:
    """The layers this config expands (FP layers of the first/last policy left out), in order."""
    ref = _reference(model, cfg)
    layers = expandable_layers(ref)
    return [name for _, name, _, spec in layer_plan(layers, cfg) if not spec.fp]


def default_layer(model: nn.Module, cfg: ExpansionConfig) -> str:
    """The first expanded convolution with a spatial kernel (its filters read as small images), else the first layer."""
    names = layer_names(model, cfg)
    if not names:
        raise ValueError("this configuration keeps every layer in FP: nothing to explain")
    mods = dict(model.named_modules())
    for n in names:
        w = getattr(mods.get(n), "weight", None)
        if w is not None and w.dim() >= 3 and w[0, 0].numel() > 1:
            return n
    return names[0]


def mosaic(a: np.ndarray, aspect: float = 1.3) -> np.ndarray:
    """A weight (or any [out, in, *kernel] array) as one 2-D map for a heatmap; NaN separates the pieces.

    [out, in] matrices and 1x1 convolutions stay matrices. Otherwise each output filter is one block,
    its input channels' kernels side by side (one NaN apart), and the blocks fill a grid (two NaN
    apart) whose width / height is closest to `aspect`, so that square pixels fill a slide's panel.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 4 and a.shape[2] * a.shape[3] == 1:
        return a[:, :, 0, 0]
    if a.ndim == 3:  # conv1d: a block is one row of kernels
        a = a[:, :, None, :]
    if a.ndim <= 2:
        return a.reshape(a.shape[0], -1) if a.ndim == 2 else a.reshape(1, -1)
    o, i, kh, kw = a.shape
    bh, bw = kh, i * (kw + 1) - 1
    cols = min(range(1, o + 1), key=lambda c: abs(math.log((c * (bw + 2) - 2) / (math.ceil(o / c) * (bh + 2) - 2))
                                                   - math.log(aspect)))
    rows = math.ceil(o / cols)
    out = np.full((rows * (bh + 2) - 2, cols * (bw + 2) - 2), np.nan)
    for f in range(o):
        r, c = divmod(f, cols)
        for j in range(i):
            x = c * (bw + 2) + j * (kw + 1)
            out[r * (bh + 2): r * (bh + 2) + kh, x: x + kw] = a[f, j]
    return out


def _crop(w: torch.Tensor) -> torch.Tensor:
    if w.dim() == 2:
        return w[: CROP_LINEAR[0], : CROP_LINEAR[1]]
    return w[:CROP_OUT, :CROP_IN]


def contraction_text(bits: int, grid: str) -> str:
    """The factor each term guarantees under the max rule, written out, e.g. 'f = 1/(2^4 - 2) = 1/14 ≈ 0.0714'."""
    f = contraction(bits, grid)
    if grid == "symmetric" and bits == 1:
        return "f = 1/2 = 0.5"
    d = 2**bits - (2 if grid == "symmetric" else 1)
    return f"f = 1/(2^{bits} − {2 if grid == 'symmetric' else 1}) = 1/{d} ≈ {f:.3g}"


@torch.no_grad()
def tensor_terms(model: nn.Module, cfg: ExpansionConfig, layer: str, n: int | None = None) -> dict:
    """Step 1 and 2: one layer's weight, its first n integer terms, partial sums and residuals.

    The series runs on the whole (BatchNorm-folded) weight with the layer's own bits; the maps keep
    at most 32 output x 16 input channels (64 x 128 of a matrix). `norms` (max |residual|, relative
    L2, SQNR, proven bound per term) are over the whole tensor.

    Returns:
        dict with layer, shape, bits, grid, granularity, scale_rule, contraction, contraction_text,
        weight (cropped numpy), terms (signed integers, cropped), scales ([n] arrays, one per
        group), partials and residuals (cropped, one per number of terms 1..n), norms (DataFrame),
        cropped (bool).
    """
    n = n or depth(cfg)
    ref = _reference(model, cfg)
    layers = expandable_layers(ref)
    names = [nm for nm, _ in layers]
    if layer not in names:
        raise ValueError(f"layer {layer!r} is not an expandable layer of this model; choose one of {names[:8]}")
    idx = names.index(layer)
    spec = cfg.layer_spec(layer, layer_position(idx, len(names)))
    if spec.fp:
        raise ValueError(f"layer {layer!r} stays in FP in this configuration (first/last policy or override)")
    w = layers[idx][1].weight.detach().float().cpu()
    s = expand_tensor(w, spec.w_bits, n, cfg.w_granularity, cfg.w_grid, cfg.scale_rule)
    crop = _crop(w)
    sl = tuple(slice(0, d) for d in crop.shape)
    partials = [s.partial(k)[sl] for k in range(1, n + 1)]
    return {
        "layer": layer, "shape": tuple(w.shape), "bits": spec.w_bits, "grid": cfg.w_grid,
        "granularity": cfg.w_granularity, "scale_rule": cfg.scale_rule,
        "contraction": contraction(spec.w_bits, cfg.w_grid),
        "contraction_text": contraction_text(spec.w_bits, cfg.w_grid),
        "weight": crop.numpy(), "terms": [s.centered(k)[sl].numpy().astype(np.int16) for k in range(n)],
        "scales": [s.scales[k].numpy() for k in range(n)],
        "partials": [p.numpy() for p in partials], "residuals": [(crop - p).numpy() for p in partials],
        "norms": s.residual_norms(), "cropped": tuple(crop.shape) != tuple(w.shape),
    }


def all_layer_residuals(model: nn.Module, cfg: ExpansionConfig, n: int | None = None) -> pd.DataFrame:
    """Step 2: max |residual| and bound per term for every expanded layer (`analysis.weight_residuals`)."""
    return analysis.weight_residuals(model, cfg, terms=n or depth(cfg))


def display_image(x: torch.Tensor, spec) -> np.ndarray:
    """A normalized [C, H, W] image back to uint8 [H, W, 3] for display (grey images are repeated)."""
    mean = torch.tensor(spec.mean, dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).reshape(-1, 1, 1)
    img = (x.float().cpu() * std + mean).clamp(0, 1)
    if img.shape[0] == 1:
        img = img.repeat(3, 1, 1)
    return (img[:3].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _pick(n_images: int, k: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, n_images - 1, min(k, n_images))})


def _crop_out(y: torch.Tensor) -> np.ndarray:
    """One sample's layer output, cropped for display: [C<=8, H<=64, W<=64] maps or a vector."""
    y = y.detach().float().cpu()
    if y.dim() == 3:
        return y[:OUT_CHANNELS, :64, :64].numpy()
    return y.reshape(-1)[:256].numpy()


def _errors(ref: torch.Tensor, out: torch.Tensor) -> dict:
    d = (out.double() - ref.double())
    sig = ref.double().square().sum().item()
    return {"max_abs": d.abs().max().item(), "rel_l2": math.sqrt(d.square().sum().item() / sig) if sig > 0 else math.nan}


@torch.no_grad()
def layer_story(model: nn.Module, data, spec, cfg: ExpansionConfig, layer: str, device: str = "cpu",
                n: int | None = None, progress: Progress | None = None) -> dict:
    """Step 3: one layer on a few real images, FP against expanded, for 1..n terms.

    "isolated": the expanded layer alone on the FP layer's own input (the layer's expansion error);
    "end to end": the layer's output inside the expanded model (earlier layers' errors included).

    Returns:
        dict with layer, indices (dataset indices of the candidate images), images (uint8), labels,
        fp (cropped FP outputs per image), expanded ([k-1][image] cropped isolated outputs),
        errors (DataFrame: image, terms, kind, max_abs, rel_l2), n.
    """
    n, p = n or depth(cfg), progress or quiet
    idx = _pick(len(data.images), N_IMAGES)
    x = data.images[idx].to(device)
    ref = _reference(model, cfg).to(device)
    mods = dict(ref.named_modules())
    if layer not in mods:
        raise ValueError(f"layer {layer!r} is not in this model")
    seen: dict = {}
    h = mods[layer].register_forward_hook(lambda m, i, o: seen.update(x=i[0].detach(), y=o.detach()))
    try:
        ref(x)
    finally:
        h.remove()
    x_in, y_fp = seen["x"], seen["y"]
    rows, maps = [], []
    for k in range(1, n + 1):
        p((k - 1) / n, f"{k} of {n} terms")
        q = expand(model, cfg.with_terms(k), device=device)
        qmods = dict(q.named_modules())
        if layer not in q.fpxint_layers:
            raise ValueError(f"layer {layer!r} stays in FP in this configuration")
        y_iso = qmods[layer](x_in)
        got: dict = {}
        h = qmods[layer].register_forward_hook(lambda m, i, o: got.update(y=o.detach()))
        try:
            q(x)
        finally:
            h.remove()
        maps.append([_crop_out(y_iso[b]) for b in range(len(idx))])
        for b in range(len(idx)):
            rows.append({"image": b, "terms": k, "kind": "isolated", **_errors(y_fp[b], y_iso[b])})
            rows.append({"image": b, "terms": k, "kind": "end to end", **_errors(y_fp[b], got["y"][b])})
    p(1.0, "done")
    labels = data.labels[idx].tolist() if data.labels is not None else None
    return {"layer": layer, "indices": idx, "images": [display_image(data.images[i], spec) for i in idx],
            "labels": labels, "classes": data.classes, "fp": [_crop_out(y_fp[b]) for b in range(len(idx))],
            "expanded": maps, "errors": pd.DataFrame(rows), "n": n}


def equal_budget_config(cfg: ExpansionConfig, k: int) -> ExpansionConfig | None:
    """One term that stores what k terms of the config store (k*b bits per side), None past 8 bits."""
    wb = cfg.w_bits * k
    if k < 2 or wb > MAX_BITS:
        return None
    return cfg.replace(w_bits=wb, a_bits=min(MAX_BITS, cfg.a_bits * k)).with_terms(1)


def budget_terms(cfg: ExpansionConfig) -> int | None:
    """The number of terms of the equal-budget pair: the config's own when it fits in 8 bits, else the most that do."""
    k = min(cfg.w_terms, MAX_BITS // cfg.w_bits)
    return k if k >= 2 else (2 if 2 * cfg.w_bits <= MAX_BITS else None)


@torch.no_grad()
def model_story(model: nn.Module, data, spec, cfg: ExpansionConfig, device: str = "cpu", n: int | None = None,
                batch_size: int = 256, progress: Progress | None = None) -> dict:
    """Step 4 (and the accuracy half of step 5): predictions for 1..n terms and the equal-budget single term.

    Returns:
        dict with grid (DataFrame: terms, top1, agreement, kl, w_bits, bits_per_weight, bops),
        fp_top1, labeled, flips (up to 6 images that 1 term gets wrong against FP and that agree with
        FP from some number of terms on: index, image, label, fp, preds per term, settles_at),
        budget (DataFrame for plots.equal_budget, empty when there is no pair), budget_cfg, budget_k.
    """
    n, p = n or depth(cfg), progress or quiet
    k_b = budget_terms(cfg)
    eq = equal_budget_config(cfg, k_b) if k_b else None
    steps = n + 1 + (eq is not None)
    xy = (data.images, data.labels)
    fp_logits, labels = analysis.logits_of(model, xy, batch_size, device,
                                           lambda f, t="": p(f / steps, f"FP model {t}"))
    preds, rows = [], []
    for k in range(1, n + 1):
        ck = cfg.with_terms(k)
        logits, _ = analysis.logits_of(expand(model, ck, device=device), xy, batch_size, device,
                                       lambda f, t="", k=k: p((k + f) / steps, f"{k} of {n} terms {t}"))
        preds.append(logits.argmax(1))
        rows.append(_row(ck, k, logits, fp_logits, labels, model, spec))
    grid = pd.DataFrame(rows)
    fp_pred = fp_logits.argmax(1)
    fp_top1 = metrics.top1(fp_logits, labels)
    budget, eq_row = pd.DataFrame(), None
    if eq is not None:
        logits, _ = analysis.logits_of(expand(model, eq, device=device), xy, batch_size, device,
                                       lambda f, t="": p((n + 1 + f) / steps, f"{eq.label()} {t}"))
        eq_row = _row(eq, 1, logits, fp_logits, labels, model, spec)
        s_row = grid[grid.terms == k_b].iloc[0].to_dict()
        budget = pd.DataFrame([
            {"pair": f"{s_row['label']} vs {eq_row['label']}", "label": s_row["label"], "kind": "series",
             "w_bits": cfg.w_bits, **{c: s_row[c] for c in ("top1", "agreement", "kl", "bits_per_weight", "bops",
                                                             "int_gemms")}},
            {"pair": f"{s_row['label']} vs {eq_row['label']}", "label": eq_row["label"], "kind": "single term",
             "w_bits": eq.w_bits, **{c: eq_row[c] for c in ("top1", "agreement", "kl", "bits_per_weight", "bops",
                                                             "int_gemms")}}])
    p(1.0, "done")
    return {"grid": grid, "fp_top1": fp_top1, "labeled": labels is not None, "budget": budget, "budget_k": k_b,
            "budget_cfg": eq.to_json() if eq is not None else None,
            "flips": _flips(torch.stack(preds, 1), fp_pred, labels, data, spec), "n": n}


def _row(ck: ExpansionConfig, k: int, logits, fp_logits, labels, model, spec) -> dict:
    c = cost.cost_summary(model, ck, spec.input_size)
    return {"terms": k, "label": ck.label().rsplit(" ", 1)[0] if ck.truncation == "full" else ck.label(),
            "w_bits": ck.w_bits, "top1": metrics.top1(logits, labels),
            "agreement": 100 * metrics.agreement(fp_logits, logits), "kl": metrics.kl(fp_logits, logits),
            "bits_per_weight": c["effective_bits"], "bops": c["bops"], "bops_vs_fp": c["bops_vs_fp"],
            "int_gemms": c["int_gemms"], "config": ck.to_json()}


def _flips(preds: torch.Tensor, fp_pred: torch.Tensor, labels, data, spec) -> list[dict]:
    """Images that one term gets wrong against FP and that agree with FP from some number of terms on."""
    agree = preds == fp_pred.unsqueeze(1)  # [N, n]
    n = agree.shape[1]
    # settles_at: the smallest k such that every count of terms from k on agrees with FP
    tail = torch.flip(torch.cummin(torch.flip(agree.int(), [1]), 1).values, [1]).bool()
    settles = torch.where(tail.any(1), n - tail.sum(1) + 1, torch.full_like(fp_pred, n + 1))
    cand = torch.nonzero(~agree[:, 0] & (settles <= n)).flatten().tolist()
    cand.sort(key=lambda i: (int(settles[i]), i))
    if len(cand) > N_FLIPS:  # spread over the dataset rather than the first few of one class
        cand = [cand[int(j)] for j in np.linspace(0, len(cand) - 1, N_FLIPS)]
    return [{"index": i, "image": display_image(data.images[i], spec),
             "label": int(labels[i]) if labels is not None else None, "fp": int(fp_pred[i]),
             "preds": [int(v) for v in preds[i]], "settles_at": int(settles[i])} for i in cand]


def cost_story(model: nn.Module, spec, cfg: ExpansionConfig, n: int | None = None) -> pd.DataFrame:
    """Step 5: bits per weight, integer GEMMs and BOPs (vs FP) for 1..n terms (`cost.cost_summary`)."""
    rows = []
    for k in range(1, (n or depth(cfg)) + 1):
        c = cost.cost_summary(model, cfg.with_terms(k), spec.input_size)
        rows.append({"terms": k, "bits_per_weight": c["effective_bits"], "int_gemms": c["int_gemms"],
                     "bops": c["bops"], "bops_vs_fp": c["bops_vs_fp"], "memory_vs_fp": c["memory_vs_fp"]})
    return pd.DataFrame(rows)


def budget_sentence(story: dict, cfg: ExpansionConfig) -> str:
    """The equal-budget comparison of `model_story` in one sentence (markdown)."""
    b = story["budget"]
    if cfg.w_bits * 2 > MAX_BITS:
        return (f"With {cfg.w_bits}-bit terms, two terms already need more than {MAX_BITS} bits, the widest single "
                "term stored here: there is no equal-budget single term to compare with. Choose 4 bits or fewer.")
    if b.empty:
        return "No equal-budget pair for this configuration."
    s, o = b.iloc[0], b.iloc[1]
    y, unit = ("top1", "top-1") if story["labeled"] else ("agreement", "agreement with FP")
    fp = f" (FP: {story['fp_top1']:.2f} %)" if story["labeled"] else ""
    better = "more" if s[y] > o[y] else "less" if s[y] < o[y] else "the same"
    ops = (f"runs {s['int_gemms']} integer GEMMs of {cfg.w_bits}×{cfg.a_bits}-bit operands instead of "
           f"{o['int_gemms']} wider ones" if cfg.expands_activations else "keeps its activations in FP")
    return (f"**{s['label']}** stores {s['bits_per_weight']:.2f} bits per weight, as much as **{o['label']}** "
            f"({o['bits_per_weight']:.2f}): {unit} {s[y]:.2f} % against {o[y]:.2f} %{fp}, {better} for the series, "
            f"which {ops} ({s['bops'] / o['bops']:.2f}× the bit operations).")


PARTS = ("layers", "tensor", "residuals", "layer", "model", "cost")
NEEDS_DATA = ("layer", "model")  # the other parts depend on the model and config only


def compute(part: str, lm, data, cfg: ExpansionConfig, device: str = "cpu", layer: str | None = None,
            batch_size: int = 256, progress: Progress | None = None):
    """One part of the page by name (what the app caches): layers -> (names, default), tensor, residuals,
    layer (step 3), model (step 4 and the equal budget), cost."""
    if part not in PARTS:
        raise ValueError(f"part={part!r} is not allowed; choose one of {', '.join(PARTS)}")
    if part in NEEDS_DATA and data is None:
        raise ValueError(f"the {part} step needs images: choose a data source in the sidebar")
    if part == "layers":
        return layer_names(lm.model, cfg), default_layer(lm.model, cfg)
    if part == "tensor":
        return tensor_terms(lm.model, cfg, layer or default_layer(lm.model, cfg))
    if part == "residuals":
        return all_layer_residuals(lm.model, cfg)
    if part == "cost":
        return cost_story(lm.model, lm.spec, cfg)
    if part == "layer":
        return layer_story(lm.model, data, lm.spec, cfg, layer or default_layer(lm.model, cfg), device,
                           progress=progress)
    return model_story(lm.model, data, lm.spec, cfg, device, batch_size=batch_size, progress=progress)
