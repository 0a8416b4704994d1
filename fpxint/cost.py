"""Cost of an expansion, always reported next to accuracy.

- weight storage: n_w * b_w bits per weight plus one float32 scale per group and term;
- compute: one integer GEMM / convolution per kept cross term; bit-operations
  BOPs = MACs x b_w x b_a x (kept pairs); an FP layer counts 32 x 32 bits per MAC;
- the equal-budget reference: one term of n_w * b_w bits (weights) and n_a * b_a bits (activations),
  which costs the same storage, e.g. W4x2 vs W8x1.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .config import ExpansionConfig
from .layers import pair_matrix
from .model import expandable_layers, fold_batchnorm, layer_plan

FP_BITS = 32


@torch.no_grad()
def layer_macs(model: nn.Module, input_shape: tuple[int, ...], folded: nn.Module | None = None) -> dict[str, int]:
    """Multiply-accumulates per sample of every expandable layer, measured with hooks on one forward.

    `folded`: a private BatchNorm-folded copy the caller already has (hooks go on it for the one
    forward); default `fold_batchnorm(model)`. Per-module forward hooks rather than
    `torch.utils.flop_counter.FlopCounterMode`: that counts the same MACs on the zoo models (checked,
    see docs/ARCHITECTURE.md) but tracks modules through process-global module hooks, which other
    threads (app sessions) running their own forwards at the same time would pass through.
    """
    fm = folded if folded is not None else fold_batchnorm(model)
    layers = dict(expandable_layers(fm))
    macs: dict[str, int] = {}

    def hook(name):
        def f(m, i, o):
            per_out = m.weight[0].numel()  # in_features, or in_channels/groups * kernel
            macs[name] = macs.get(name, 0) + per_out * o[0].numel()
        return f

    hs = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        p = next(fm.parameters())
        fm(torch.zeros((1, *input_shape), dtype=p.dtype, device=p.device))
    finally:
        for h in hs:
            h.remove()
    return macs


def expanded_layer_cost(cfg: ExpansionConfig, macs: int, weight_shape: Sequence[int], w_bits: int, w_terms: int,
                        a_bits: int, a_terms: int) -> dict[str, int]:
    """The cost formula of one expanded layer (the one formula: `cost_table` and the allocator use it).

    Args:
        macs: multiply-accumulates per sample (or token); weight_shape: the layer's weight shape.
        a_bits, a_terms: the activation side; ignored (FP, 32 bits, one term) when `cfg` keeps
            activations in FP.

    Returns:
        int_gemms (integer GEMMs per forward), bops, weight_bits (terms + one float32 scale per
        group and term) and equal_budget_bops (one term of w_terms * w_bits, a_terms * a_bits).
    """
    params, groups = math.prod(weight_shape), weight_shape[0] if cfg.w_granularity == "per_channel" else 1
    act = cfg.expands_activations
    a_bits, a_terms = (a_bits, a_terms) if act else (FP_BITS, 1)
    pairs = int(pair_matrix(w_terms, a_terms, cfg.truncation if act else "full", cfg.total_order).sum())
    return {"int_gemms": pairs if act else 0, "bops": macs * w_bits * a_bits * pairs,
            "weight_bits": params * w_bits * w_terms + groups * w_terms * FP_BITS,
            "equal_budget_bops": macs * (w_bits * w_terms) * (a_bits * a_terms if act else FP_BITS)}


def cost_table(model: nn.Module, cfg: ExpansionConfig, input_shape: tuple[int, ...] | None,
               macs: dict[str, int] | None = None, folded: nn.Module | None = None) -> pd.DataFrame:
    """Per expandable layer: MACs, params, bits, terms, integer GEMMs, BOPs, weight storage.

    `macs` (layer -> MACs per sample, or per token for language models) replaces the measured forward
    on zeros of `input_shape`, for models whose input is not a float tensor. `folded`: the model with
    its BatchNorm folded (`fold_batchnorm(model)`), when the caller has it already.

    Returns:
        Columns: layer, index, fp, macs, params, w_bits, w_terms, a_bits, a_terms, int_gemms, bops,
        weight_bits (incl. scales), equal_budget_bops.
    """
    fm = (folded if folded is not None else fold_batchnorm(model)) if cfg.fold_bn else model
    macs = macs if macs is not None else layer_macs(model, input_shape, folded)
    rows = []
    for idx, name, m, spec in layer_plan(expandable_layers(fm), cfg):
        params, mac = m.weight.numel(), macs.get(name, 0)
        if spec.fp:
            rows.append(dict(layer=name, index=idx, fp=True, macs=mac, params=params, w_bits=FP_BITS, w_terms=1,
                             a_bits=FP_BITS, a_terms=1, int_gemms=0, bops=mac * FP_BITS * FP_BITS,
                             weight_bits=params * FP_BITS, equal_budget_bops=mac * FP_BITS * FP_BITS))
            continue
        act = cfg.expands_activations
        rows.append(dict(layer=name, index=idx, fp=False, macs=mac, params=params, w_bits=spec.w_bits,
                         w_terms=spec.w_terms, a_bits=spec.a_bits if act else FP_BITS,
                         a_terms=spec.a_terms if act else 1,
                         **expanded_layer_cost(cfg, mac, m.weight.shape, spec.w_bits, spec.w_terms, spec.a_bits,
                                               spec.a_terms)))
    return pd.DataFrame(rows)


def choice_costs(cfg: ExpansionConfig, plan, macs: dict[str, int], max_terms: int) -> dict[str, np.ndarray]:
    """Cost of every (w_terms, a_terms) choice of each planned layer, [layers, max_terms, ka] per cost
    (int_gemms, bops, weight_bits), by `expanded_layer_cost`; `plan` as `allocation.sensitivity.plan_layers`
    gives it. ka is max_terms, or more where a layer's pinned activation terms exceed it."""
    ka = max([max_terms] + [spec.a_terms for *_, spec in plan])
    out = {c: np.zeros((len(plan), max_terms, ka)) for c in ("int_gemms", "bops", "weight_bits")}
    for i, (_, name, layer, spec) in enumerate(plan):
        for w in range(1, max_terms + 1):
            for a in range(1, ka + 1):
                c = expanded_layer_cost(cfg, macs.get(name, 0), layer.weight.shape, spec.w_bits, w, spec.a_bits, a)
                for k, arr in out.items():
                    arr[i, w - 1, a - 1] = c[k]
    return out


def cost_summary(model: nn.Module, cfg: ExpansionConfig, input_shape: tuple[int, ...] | None,
                 macs: dict[str, int] | None = None, folded: nn.Module | None = None) -> dict:
    """Whole-model cost: effective bits per weight, storage, integer GEMMs, BOPs, vs FP and equal budget.

    A sweep passes `macs` (`layer_macs`) and `folded` (`fold_batchnorm(model)`) computed once: without
    them every call folds a copy of the model and runs a forward pass."""
    t = cost_table(model, cfg, input_shape, macs, folded)
    params = int(t.params.sum())
    fp_bops = int((t.macs * FP_BITS * FP_BITS).sum())
    eff = float(t.weight_bits.sum()) / params
    return {
        "layers": len(t), "expanded_layers": int((~t.fp).sum()), "params": params,
        "weight_bits": int(t.weight_bits.sum()),
        "macs": int(t.macs.sum()),
        "effective_bits": eff,
        "weight_mb": float(t.weight_bits.sum()) / 8 / 2**20,
        "fp_weight_mb": params * FP_BITS / 8 / 2**20,
        "memory_vs_fp": eff / FP_BITS,
        "int_gemms": int(t.int_gemms.sum()),
        "bops": int(t.bops.sum()), "fp_bops": fp_bops,
        "bops_vs_fp": float(t.bops.sum()) / fp_bops if fp_bops else math.nan,
        "equal_budget_bops": int(t.equal_budget_bops.sum()),
        "equal_budget_w_bits": cfg.w_bits * cfg.w_terms,
        "equal_budget_a_bits": cfg.a_bits * cfg.a_terms if cfg.expands_activations else FP_BITS,
    }
