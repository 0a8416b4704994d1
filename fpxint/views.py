"""What each page of the app computes, as plain functions (no Streamlit): usable from a notebook.

Each takes a loaded model (`fpxint.zoo.LoadedModel`), images (`fpxint.data.ImageData`), an
`ExpansionConfig` and an optional `progress(fraction, text)` callback, and returns dicts and tidy
DataFrames that `fpxint.plots` draws. `fpxint.app` wraps them in Streamlit's caches.

    from fpxint import ExpansionConfig, views
    from fpxint.data import load_data
    from fpxint.zoo import find_shared, load_model
    lm = load_model("resnet20", shared_dir=find_shared())
    imgs = load_data(find_shared() / "data" / "cifar10-test", lm.spec, limit=1000)
    views.accuracy(lm, imgs, ExpansionConfig(), bits=(2, 3, 4), max_terms=4)["budget"]
"""
from __future__ import annotations

import random
import time

import pandas as pd
import torch

from . import admission, analysis, config as C, cost
from .config import ExpansionConfig
from .progress import Progress, quiet, stage


def batch_size(spec) -> int:
    """Images per forward: up to 256, fewer for big inputs (2^22 input values per batch)."""
    return max(8, min(256, 2**22 // (spec.input_size[0] * spec.input_size[1] * spec.input_size[2])))


def probe(spec, data) -> torch.Tensor:
    """The probe batch for output-space errors: a few images, fewer for big inputs."""
    pixels = spec.input_size[0] * spec.input_size[1] * spec.input_size[2]
    return data.images[: max(4, min(64, 2**18 // pixels))]


def admit(lm, cfg: ExpansionConfig, n_images: int, passes: int = 1, limits: admission.Limits | None = None,
          force: bool = False) -> None:
    """Refuses a run whose estimated memory or time exceeds `limits` (default `admission.Limits()`)
    with `admission.AdmissionError`, unless `force`. Models without an input size are not estimated."""
    if force or lm.spec.input_size is None:
        return
    prof = admission.profile(lm.spec if lm.spec.builder is not None else lm.model, lm.spec.input_size)
    admission.admit(prof, cfg, n_images, batch_size(lm.spec), passes=passes, limits=limits)


def expansion_metrics(lm, data, cfg: ExpansionConfig, device: str, progress: Progress | None = None, *,
                      limits: admission.Limits | None = None, force: bool = False) -> dict:
    """FP and expanded top-1 / fidelity, timing and cost of one configuration.

    Refused with `admission.AdmissionError` when the run's estimate exceeds `limits`, unless `force`."""
    admit(lm, cfg, len(data), limits=limits, force=force)
    bs, xy = batch_size(lm.spec), (data.images, data.labels)
    t0 = time.perf_counter()
    fp_logits, labels = analysis.logits_of(lm.model, xy, bs, device, stage(progress, 0, 2, "FP model"))
    fp_seconds = time.perf_counter() - t0
    res = analysis.evaluate(lm.model, cfg, xy, fp_logits, bs, device, stage(progress, 1, 2, "expanded"))
    fp_top1 = 100 * (fp_logits.argmax(1) == labels).float().mean().item() if labels is not None else None
    return {**res, "fp_top1": fp_top1, "fp_seconds": fp_seconds, "labeled": labels is not None,
            "trained": lm.trained, "label": cfg.label(), "cost": cost.cost_summary(lm.model, cfg, lm.spec.input_size),
            "integer_timing": integer_timing(lm.model, cfg, data.images[:bs], device)}


def integer_timing(model, cfg: ExpansionConfig, x: torch.Tensor, device: str, repeat: int = 1) -> dict:
    """Integer mode's forward time beside the BatchNorm-folded FP forward on one batch (best of `repeat`).

    Returns {"int_ms", "fp_ms", "batch", "exact", "kernel"} or {"reason"} when integer mode does not
    apply. "exact": the int8 accumulators of the first expanded layer equal the float64 kernel's
    (both exact integer arithmetic, computed here, not assumed).
    """
    from .model import expand, expanded_layers, fold_batchnorm, resolve_device

    if not cfg.expands_activations:
        return {"reason": "activations stay in FP (level 'tensor' or weight-only truncation): no integer mode"}
    dev = resolve_device(device)
    x = x.to(dev)
    q = expand(model, cfg.replace(mode="integer"), device=dev)
    fp = fold_batchnorm(model).to(dev).eval()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def best(f) -> float:
        times = []
        for _ in range(repeat + 1):  # the first call warms caches (weight matrices, kernels)
            sync()
            t0 = time.perf_counter()
            f(x)
            sync()
            times.append(time.perf_counter() - t0)
        return 1e3 * min(times[1:])

    with torch.inference_mode():
        try:
            int_ms = best(q)
        except ValueError as e:  # a layer whose activations stay FP (an override) has no integer mode
            return {"reason": str(e)}
        fp_ms = best(fp)
        captured = {}
        name, first = expanded_layers(q)[0]
        hook = first.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
        q(x[:1])
        hook.remove()
        xin = first._pre(captured["x"])
        a = first.integer_accumulators(xin, kernel="auto")
        b = first.integer_accumulators(xin, kernel="float64")
        exact = all(torch.equal(a[k][0].to(torch.int64), b[k][0].to(torch.int64)) for k in a)
    return {"int_ms": int_ms, "fp_ms": fp_ms, "batch": len(x), "exact": exact, "layer": name,
            "kernel": "int8: oneDNN convolution and torch._int_mm on CPU" if dev.type == "cpu"
            else f"int8: torch._int_mm on {dev.type.upper()}"}


def output_residuals(lm, data, cfg: ExpansionConfig, device: str, progress: Progress | None = None) -> pd.DataFrame:
    """Per layer x term output-space errors on the probe batch, 1..max(w_terms, a_terms) terms
    (one BatchNorm fold and one FP capture for the whole sweep)."""
    n = max(cfg.w_terms, cfg.a_terms)
    return analysis.layer_output_errors(lm.model, cfg, probe(lm.spec, data), terms=range(1, n + 1), device=device,
                                        progress=progress, folded=_folded(lm.model, cfg))


def _folded(model, cfg: ExpansionConfig):
    """The BatchNorm-folded copy a page's sweep shares (None when the config does not fold)."""
    from .model import fold_batchnorm

    return fold_batchnorm(model) if cfg.fold_bn else None


def convergence(lm, data, cfg: ExpansionConfig, bits: tuple[int, ...], max_terms: int, device: str,
                progress: Progress | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(weight residuals, model output errors) for each bit width, 1..max_terms terms.

    BatchNorm is folded once for the page; the FP reference runs once per bit width."""
    x, fm = probe(lm.spec, data), _folded(lm.model, cfg)
    wdf, odf = [], []
    for i, b in enumerate(bits):
        cb = cfg.replace(w_bits=b, a_bits=b)
        w = analysis.weight_residuals(lm.model, cb, terms=max_terms, folded=fm)
        w["bits"] = b  # the sweep's bit width (first/last layers may use 8 bits under that policy)
        wdf.append(w)
        at = stage(progress, i, len(bits), f"{b}-bit")
        odf.append(analysis.model_output_error(lm.model, cb, x, terms=range(1, max_terms + 1), device=device,
                                               progress=lambda f, t="": at(f * max_terms / (max_terms + 1), t),
                                               folded=fm).assign(bits=b))
    return pd.concat(wdf, ignore_index=True), pd.concat(odf, ignore_index=True)


def _with_cost(df: pd.DataFrame, model, input_size, folded=None) -> pd.DataFrame:
    """Cost columns for each row's config: the model is folded and its MACs counted once, not per row."""
    from .model import fold_batchnorm

    fm = folded if folded is not None else fold_batchnorm(model)
    macs = cost.layer_macs(model, input_size, fm)
    costs = [cost.cost_summary(model, ExpansionConfig.from_json(c), input_size, macs, folded=fm) for c in df["config"]]
    return df.assign(bits_per_weight=[c["effective_bits"] for c in costs], bops=[c["bops"] for c in costs])


def accuracy(lm, data, cfg: ExpansionConfig, bits: tuple[int, ...], max_terms: int, device: str = "cpu",
             progress: Progress | None = None, *, limits: admission.Limits | None = None, force: bool = False) -> dict:
    """Top-1 (or agreement) over bits x terms with cost columns, and the equal-budget comparison:
    n terms of b bits against one term of n*b bits (pairs with n*b <= 8 bits).

    The FP model runs once and BatchNorm is folded once for both grids and the cost columns.
    Refused with `admission.AdmissionError` when the run's estimate exceeds `limits`, unless `force`."""
    top = cfg.replace(w_bits=max(bits), a_bits=max(bits), w_terms=max_terms, a_terms=max_terms)
    admit(lm, top, len(data), passes=len(bits) * max_terms + 1, limits=limits, force=force)
    bs, xy = batch_size(lm.spec), (data.images, data.labels)
    pairs = [(b, n) for b in bits for n in range(2, max_terms + 1) if n * b <= C.MAX_BITS]
    single = sorted({n * b for b, n in pairs})
    fm = _folded(lm.model, cfg)
    fp = analysis.logits_of(lm.model, xy, bs, device)
    grid = analysis.accuracy_grid(lm.model, xy, cfg, bits, tuple(range(1, max_terms + 1)), batch_size=bs,
                                  device=device, progress=stage(progress, 0, 2 if single else 1, "grid"),
                                  fp=fp, folded=fm)
    grid = _with_cost(grid, lm.model, lm.spec.input_size, fm)
    budget = pd.DataFrame()
    if single:
        one = analysis.accuracy_grid(lm.model, xy, cfg, tuple(single), (1,), batch_size=bs, device=device,
                                     progress=stage(progress, 1, 2, "equal budget"), fp=fp, folded=fm)
        rows = []
        for b, n in pairs:
            s = grid[(grid.w_bits == b) & (grid.terms == n)].iloc[0]
            o = one[one.w_bits == n * b].iloc[0]
            for kind, r, lab, wb in (("series", s, f"W{b}x{n}", b), ("single term", o, f"W{n * b}x1", n * b)):
                rows.append({"pair": f"W{b}x{n} vs W{n * b}x1", "budget": n * b, "label": lab, "kind": kind, "w_bits": wb,
                             "top1": r["top1"], "agreement": r["agreement"], "kl": r["kl"]})
        budget = pd.DataFrame(rows)
    return {"grid": grid, "budget": budget, "fp_top1": grid["fp_top1"].iloc[0], "labeled": data.labels is not None}


def basis_demo(q: torch.nn.Module, x: torch.Tensor, seed: int, progress: Progress | None = None,
               layer: str | None = None) -> dict:
    """Sums the basis models of expanded model `q` in a shuffled order (AbelianAdd, lockstep) and as
    separately run networks; max |difference| from q(x) for each. "laws": `basis_laws` on the same
    images (the network, and `layer` alone)."""
    from .basis import abelian_add, basis_models, zero_model

    p = progress or quiet
    bases = basis_models(q)
    order = sorted(bases)
    if seed:
        random.Random(seed).shuffle(order)
    with torch.no_grad():
        y = q(x)
        p(0.2, "AbelianAdd in the chosen order")
        y_add = abelian_add(*[bases[k] for k in order])(x)
        p(0.3, "AbelianAdd in reverse order")
        y_rev = abelian_add(*[bases[k] for k in reversed(order)])(x)
        p(0.4, "separate networks")
        y0 = zero_model(q)(x)  # the shared base (biases through the network), counted once
        y_sep = y0 + sum(bases[k](x) - y0 for k in order)
    diff = lambda a: float((a.double() - y.double()).abs().max())  # noqa: E731
    rows = pd.DataFrame({"method": ["AbelianAdd, chosen order", "AbelianAdd, reverse order",
                                    "sum of separately run outputs"],
                         "max_abs_diff": [diff(y_add), diff(y_rev), diff(y_sep)]})
    laws = basis_laws(q, x, layer, stage(progress, 1, 2, "group laws") if progress else None)
    return {"order": order, "rows": rows, "n_models": len(bases), "scale": float(y.abs().max()), "laws": laws}


def basis_laws(q: torch.nn.Module, x: torch.Tensor, layer: str | None = None,
               progress: Progress | None = None) -> pd.DataFrame:
    """Where the Abelian laws hold on outputs: the whole network against one expanded layer alone.

    The group is the integer coefficient tables C under addition (`fpxint.basis`); an output f(C) is a
    homomorphism of it only where the output is linear in C, i.e. within one linear layer. Measured
    with the shared base f(0) (biases; `zero_model`) counted once on each side, the reading most
    favourable to the laws:

    - lockstep: f(AbelianAdd of all basis models) vs f(model) (network only; 0 by construction);
    - separate: f(0) + sum_k (f(B_k) - f(0)) vs f(model), the basis models run as separate networks;
    - additive: f(A) + f(B) - f(0) vs f(A ⊕ B), A = weight term 1 with every activation term, B = the
      other weight terms (activation terms split instead when there is one weight term);
    - inverse: f(⊖M) - f(0) vs -(f(M) - f(0)), M = the model.

    Args:
        q: an expanded model; x: a batch it accepts.
        layer: the expanded layer measured alone, on the input it receives inside q(x)
            (default: the middle expanded layer).
    Returns:
        DataFrame: level ("network" | "one layer: <name>"), law, rel_diff = ||lhs - rhs|| / ||rhs||
        (L2 over the batch, float64; 0 when equal bit for bit). Laws that need two terms are left out
        of 1x1 expansions.
    """
    from .model import expanded_layers

    p = progress or quiet
    layers = dict(expanded_layers(q))
    name = layer if layer in layers else list(layers)[len(layers) // 2]
    captured: dict = {}
    hook = layers[name].register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    try:
        with torch.no_grad():
            q(x)
    finally:
        hook.remove()
    rows = []
    for k, (level, m, inp) in enumerate((("network", q, x), (f"one layer: {name}", layers[name], captured["x"]))):
        p(k / 2, level)
        rows += [{"level": level, "law": law, "rel_diff": d} for law, d in _law_gaps(m, inp, level == "network")]
    return pd.DataFrame(rows, columns=["level", "law", "rel_diff"])


LAWS = {"lockstep": "AbelianAdd of all basis models (lockstep) = model",
        "separate": "sum of separately run basis models = model",
        "additive": "f(A ⊕ B) = f(A) + f(B)", "inverse": "f(⊖A) = −f(A)"}


def _law_gaps(m: torch.nn.Module, x: torch.Tensor, lockstep: bool) -> list[tuple[str, float]]:
    from .basis import abelian_add, abelian_mul, abelian_neg, basis_models, zero_model
    from .model import expanded_layers

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        n = float(b.norm())
        return float((a - b).norm()) / n if n > 0 else float((a - b).norm())

    with torch.no_grad():
        run = lambda model: model(x).double()  # noqa: E731
        y, y0 = run(m), run(zero_model(m))
        bases = basis_models(m)
        out = []
        if lockstep:
            out.append((LAWS["lockstep"], rel(run(abelian_add(*bases.values())), y)))
        if len(bases) < 2:
            return out
        out.append((LAWS["separate"], rel(y0 + sum(run(b) - y0 for b in bases.values()), y)))
        n_w = max(l.pairs.shape[0] for _, l in expanded_layers(m))
        n_a = max(l.pairs.shape[1] for _, l in expanded_layers(m))
        if n_w > 1:
            a, b = abelian_mul(m, [1], [1] * n_a), abelian_mul(m, [0] + [1] * (n_w - 1), [1] * n_a)
        else:
            a, b = abelian_mul(m, [1], [1]), abelian_mul(m, [1], [0] + [1] * (n_a - 1))
        out.append((LAWS["additive"], rel(run(a) + run(b) - y0, run(abelian_add(a, b)))))
        out.append((LAWS["inverse"], rel(run(abelian_neg(m)) - y0, -(y - y0))))
    return out


def compare_curves(lm, data, cfg: ExpansionConfig, device: str) -> dict:
    """Output-error curve (1..max(3, terms) terms) and per-layer weight errors of one configuration."""
    terms = list(range(1, max(3, cfg.w_terms, cfg.a_terms) + 1))
    return {"label": cfg.label(),
            "curve": analysis.model_output_error(lm.model, cfg, probe(lm.spec, data), terms=terms, device=device),
            "weights": analysis.weight_residuals(lm.model, cfg)}


def layer_terms(layer) -> dict:
    """The integer terms Q_k (signed), scales s_k and bits of one expanded layer."""
    return {"q": [layer.w_centered(i).cpu().numpy() for i in range(layer.w_terms)],
            "scales": [layer.w_scale[i].float().cpu().numpy() for i in range(layer.w_terms)],
            "bits": layer.w_bits, "shape": tuple(layer.w_q.shape[1:])}


def metrics_table(results: dict[str, dict]) -> pd.DataFrame:
    """One row per metric, one column per configuration label (results of expansion_metrics)."""
    rows = {}
    for name, r in results.items():
        c = r["cost"]
        rows[name] = {
            "FP top-1 (%)": r["fp_top1"], "expanded top-1 (%)": r["top1"],
            "agreement with FP (%)": r.get("agreement"), "KL(FP‖expanded)": r.get("kl"),
            "effective bits / weight": c["effective_bits"], "integer GEMMs / forward": c["int_gemms"],
            "weight memory (MB)": c["weight_mb"], "memory vs FP (%)": 100 * c["memory_vs_fp"],
            "BOPs / image": c["bops"], "BOPs vs FP (%)": 100 * c["bops_vs_fp"],
            "images": r["n_images"], "time (s)": r["seconds"]}
    return pd.DataFrame(rows)
