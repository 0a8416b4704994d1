"""Beyond the paper, part 1: how much each layer's terms matter (per-layer sensitivity).

`layer_sensitivity` expands ONE layer (one side, or both) with k terms, leaves every other layer in
FP, and measures the model output against FP on probe inputs: real images, unlabeled images or
Gaussian inputs. In a model built as a list of blocks (a transformer's `nn.ModuleList` of layers), a layer
of block b cannot change what blocks 0..b-1 compute, so those blocks replay their outputs of the one FP
pass instead of running again (`BlockReplay`): the same numbers, about half the blocks' work on average.
`weights_only_sensitivity` is the calibration-free proxy that runs no forward pass.
Both return the same tidy table, which `fpxint.allocation.allocator` turns into per-layer term counts.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import pandas as pd
import torch
import torch.nn as nn
from torch.utils._pytree import tree_map

from .. import metrics
from ..config import ExpansionConfig, LayerSpec
from ..layers import expand_layer
from ..model import expandable_layers, fold_batchnorm, layer_plan, target_device
from ..progress import Progress
from ..series import expand_tensor

FLOOR = 1e-14  # relative noise floor of the noise model (float32 output rounding): its sums and ratios stay finite


def to_db(noise: float) -> float:
    """The noise model's relative noise power -> dB, floored at FLOOR (so at most 140 dB). A measured
    SQNR is `fpxint.metrics.sqnr_db` (+inf when exact); this is the additive model's prediction."""
    return -10 * math.log10(max(noise, FLOOR))


def rel_noise(ref: torch.Tensor, out: torch.Tensor, ref_power: float | None = None) -> float:
    """Noise power of `out` against `ref`, relative to the power of `ref` (floored).

    `ref_power`: `ref.double().square().sum().item()` when already known (a sweep against one reference
    passes it, and `ref` in float64, once: on an LM's logits that is a third of each measurement)."""
    ref, out = ref.double(), out.double()
    power = ref.square().sum().item() if ref_power is None else ref_power
    return max((out - ref).square().sum().item() / max(power, 1e-300), FLOOR)


def plan_layers(model: nn.Module, cfg: ExpansionConfig,
                ) -> tuple[nn.Module, list[tuple[int, str, nn.Module, LayerSpec]]]:
    """The model as `expand` sees it (BN folded, a private copy) and its expanded layers' base specs."""
    fm = fold_batchnorm(model) if cfg.fold_bn else copy.deepcopy(model).eval()
    out = [p for p in layer_plan(expandable_layers(fm), cfg) if not p[3].fp]
    if not out:
        raise ValueError("the config expands no layer (all are FP): nothing to allocate")
    return fm, out


def _side_spec(spec: LayerSpec, side: str, k: int) -> LayerSpec:
    # The other side is made (near) exact: 8-bit weights x 3 terms leave ~1e-7 relative error.
    if side == "weight":
        return LayerSpec(spec.w_bits, k, spec.a_bits, spec.a_terms)
    if side == "activation":
        return LayerSpec(8, 3, spec.a_bits, k)
    return LayerSpec(spec.w_bits, k, spec.a_bits, k)


def _copy(out):
    return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, out)


class _Replay(nn.Module):
    """Stands in for a block whose input is unchanged: returns (a copy of) its output of the FP pass.
    A copy, so an in-place op downstream cannot alter the cache."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, *args, **kwargs):
        return _copy(self.out)


class BlockReplay:
    """The block list of a model (the `nn.ModuleList` whose children hold the most of the planned layers)
    and the block each planned layer sits in; `capture` records each block's output in the FP pass.

    Exact by construction once `capture` has verified that the blocks ran once each, in list order: a
    layer of block b runs after blocks 0..b-1, so their inputs and outputs are those of the FP pass. Models
    without such a list (CNNs: nn.Sequential stages, in-place ReLUs) get no replay and run whole.
    """

    def __init__(self, fm: nn.Module, plan):
        self.fm, self.prefix, self.block, self.outs = fm, None, {}, None
        for name, m in fm.named_modules():
            if not isinstance(m, nn.ModuleList) or len(m) < 2:
                continue
            pre = f"{name}." if name else ""
            where = {n: int(n[len(pre):].split(".", 1)[0]) for _, n, _, _ in plan
                     if n.startswith(pre) and n[len(pre):].split(".", 1)[0].isdigit()}
            if len(set(where.values())) >= 2 and len(where) > len(self.block):
                self.prefix, self.block, self.blocks = name, where, m

    @torch.no_grad()
    def capture(self, run):
        """`run()` (the FP pass) with every block's output recorded; returns what `run()` returns."""
        if self.prefix is None:
            return run()
        order, outs = [], {}

        def record(i, out) -> None:  # a forward hook that returned something would replace the output
            order.append(i)
            outs[i] = _copy(out)

        hooks = [b.register_forward_hook(lambda m, a, o, i=i: record(i, o)) for i, b in enumerate(self.blocks)]
        try:
            y = run()
        finally:
            for h in hooks:
                h.remove()
        if order == list(range(len(self.blocks))):
            self.outs = [outs[i] for i in order]
        return y

    def start(self, name: str) -> int:
        """How many leading blocks replay when layer `name` is the one expanded (0: the whole model runs)."""
        return self.block.get(name, 0) if self.outs is not None else 0

    def swap(self, n: int) -> list[nn.Module]:
        """Replaces blocks 0..n-1 by their replays; returns the originals for `restore`."""
        orig = [self.blocks[i] for i in range(n)]
        for i in range(n):
            self.blocks[i] = _Replay(self.outs[i])
        return orig

    def restore(self, orig: list[nn.Module]) -> None:
        for i, b in enumerate(orig):
            self.blocks[i] = b


@torch.no_grad()
def layer_sensitivity(model: nn.Module, cfg: ExpansionConfig, probe: torch.Tensor, labels: torch.Tensor | None = None,
                      terms: Sequence[int] = (1, 2, 3, 4), sides: Sequence[str] = ("both",),
                      stop_db: float | None = None, device: str | None = None,
                      progress: Progress | None = None, replay: bool = True) -> pd.DataFrame:
    """Model-output error when only one layer is expanded (every other layer stays FP).

    Args:
        probe: input batch (images, or Gaussian inputs for a calibration-free probe).
        labels: when given, top-1 of each variant on the probe is measured as well.
        terms: numbers of terms k to try.
        sides: "both" (k weight and k activation terms), "weight" (activations FP) and/or
            "activation" (weights near exact: 8 bits x 3 terms).
        stop_db: once a layer and side reach this SQNR, larger k are not run but extrapolated
            geometrically from the last two measured k (the series shrinks by a fixed factor per term).
        replay: in a model made of a block list, replay the blocks before the expanded layer's block
            from the FP pass (`BlockReplay`; the same numbers). False: run the whole model every time.

    Returns:
        Columns: layer, index, side, terms, noise (output noise power / FP output power), sqnr_db,
        measured (False: extrapolated), top1 and fp_top1 (percent, with labels).

    Example:
        >>> s = layer_sensitivity(model, ExpansionConfig(w_bits=3, a_bits=3), images[:64], terms=[2])
        >>> sensitivity_ranking(s)  # most sensitive layer first
    """
    bad = set(sides) - {"both", "weight", "activation"}
    if bad:
        raise ValueError(f"sides {sorted(bad)} not allowed; use 'both', 'weight' or 'activation'")
    dev = target_device(model, device)
    fm, plan = plan_layers(model, cfg)
    fm, probe = fm.to(dev), probe.to(dev)
    blocks = BlockReplay(fm, plan if replay else [])
    ref = blocks.capture(lambda: fm(probe))
    ref64 = ref.double()  # once: every measurement below compares with it
    ref_power = ref64.square().sum().item()
    fp_top1 = metrics.top1(ref, labels)
    jobs = [(p, s, k) for p in plan for s in sides for k in sorted(terms)]
    rows, last = [], {}
    for n, ((idx, name, layer, spec), side, k) in enumerate(jobs):
        if progress:
            progress(n / len(jobs), f"{name} {side} {k} terms")
        hist = last.setdefault((name, side), [])
        if stop_db is not None and len(hist) >= 2 and hist[-1][1] <= 10 ** (-stop_db / 10):
            (k1, n1), (k2, n2) = hist[-2:]
            noise = max(n2 * min(n2 / n1, 1.0) ** ((k - k2) / (k2 - k1)), FLOOR)
            rows.append({"layer": name, "index": idx, "side": side, "terms": k, "noise": noise,
                         "sqnr_db": to_db(noise), "measured": False})
            continue
        # Only activations in FP: the engine's weight-only truncation; otherwise full pairs.
        c = cfg.replace(truncation="weight_only" if side == "weight" else "full", level="layer", mode="simulate")
        fm.set_submodule(name, expand_layer(layer, c, _side_spec(spec, side, k)), strict=True)
        orig = blocks.swap(blocks.start(name))
        try:
            y = fm(probe)
        finally:
            blocks.restore(orig)
            fm.set_submodule(name, layer, strict=True)  # `layer` is the module the plan took from fm
        noise = rel_noise(ref64, y, ref_power)
        hist.append((k, noise))
        row = {"layer": name, "index": idx, "side": side, "terms": k, "noise": noise, "sqnr_db": to_db(noise),
               "measured": True}
        if labels is not None:
            row.update(top1=metrics.top1(y, labels), fp_top1=fp_top1)
        rows.append(row)
    if progress:
        progress(1.0, "done")
    return pd.DataFrame(rows)


def sensitivity_ranking(sens: pd.DataFrame, terms: int | None = None, side: str = "both") -> pd.DataFrame:
    """Layers ordered from most to least sensitive (lowest output SQNR first) at `terms` terms.

    Returns:
        Columns: rank, layer, index, sqnr_db, noise (and top1, when measured).
    """
    d = sens[sens.side == side]
    d = d[d.terms == (terms if terms is not None else d.terms.min())]
    d = d.sort_values("sqnr_db").reset_index(drop=True)
    d.insert(0, "rank", range(1, len(d) + 1))
    return d.drop(columns=["side"])


@torch.no_grad()
def weights_only_sensitivity(model: nn.Module, cfg: ExpansionConfig, max_terms: int) -> pd.DataFrame:
    """Calibration-free proxy (no forward pass) in the shape of `layer_sensitivity`'s table.

    Weight side: the relative residual energy of each layer's weights after k terms. Activation side:
    the relative residual energy of a stand-in input (Gaussian for the first layer, which reads
    normalized images; rectified Gaussian after, which read ReLU outputs). Every layer counts with
    gain 1: a layer's relative error is taken to reach the output unchanged.
    """
    _, plan = plan_layers(model, cfg)
    gen = torch.Generator().manual_seed(0)
    stand_in = torch.randn(64, 4096, generator=gen)
    rows = []
    for n, (idx, name, layer, spec) in enumerate(plan):
        w = expand_tensor(layer.weight.detach().float(), spec.w_bits, max_terms, cfg.w_granularity, cfg.w_grid,
                          cfg.scale_rule).residual_norms()
        # First layer: normalized images ~ Gaussian; later layers mostly read ReLU outputs.
        x = stand_in if n == 0 else stand_in.clamp_min(0)
        a = expand_tensor(x, spec.a_bits, max_terms, "per_tensor" if cfg.a_granularity == "per_tensor"
                          else "per_channel", cfg.a_grid, cfg.scale_rule).residual_norms()
        for side, df in (("weight", w), ("activation", a)):
            for k, r in zip(df.term, df.rel_l2):
                rows.append({"layer": name, "index": idx, "side": side, "terms": int(k),
                             "noise": max(r * r, FLOOR), "sqnr_db": to_db(r * r)})
    return pd.DataFrame(rows)
