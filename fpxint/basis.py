"""Basis models and the Abelian operations between isomorphic expanded models.

Every expanded layer holds integer coefficients C[i, j] saying how often cross term (i, j) enters
its output (`layers.ExpandedLayer.pairs`). An expanded model is therefore a point of the free
Abelian group Z^(n_w x n_a) per layer, over shared integer terms and shared FP parts (biases,
nonlinearities, pooling: the base every isomorphic model has in common).

What is a group, and what is not (docs/method.md, "Basis models"; measured by `views.basis_laws`):

- The group is the coefficient tables under addition: identity C = 0, inverse -C, commutative and
  associative because integer addition is. Every operation below acts on the tables only.
- A model's output f(C) respects the group only where it is linear in C. Within one linear layer it
  is: y = b + sum_ij C_ij s_i t_j acc_ij with exact integer accumulators, so separately run basis
  layers add up to the layer (float rounding of the rescale, ~1e-7 relative).
- Across layers it is not: layer l's activation terms Qx_j are the run-time expansion of layer l-1's
  *summed* output, which depends on the whole table upstream (rounding is not additive), and the
  nonlinearity acts on that sum (relu(a + b) != relu(a) + relu(b)). So f(A ⊕ B) != f(A) + f(B),
  f(⊖A) != -f(A), and separately run basis networks do not add up to the model (measured on
  ResNet-20 in docs/RESULTS.md, "Basis models"). A deep network's basis models must run in lockstep: at every layer all
  kept pairs read the same activation terms, their accumulators are summed, then the nonlinearity,
  then the next layer expands that sum. Running the table C_A + C_B that way is what f(A ⊕ B) means.

- basis model (i, j): C = e_i e_j^T in every layer: the low-bit network holding weight term i
  and consuming activation term j of each layer's input (read in lockstep, as above).
- AbelianAdd `abelian_add(a, b, ...)`: C_a + C_b. Run as a network, every layer adds the integer
  accumulators of all its basis pairs *before* the nonlinearity: summing the basis models of an
  expansion, in any order or grouping, gives back the expanded model, with bit-identical integer
  accumulators. Identity: `zero_model`; inverse: `abelian_neg` (negated terms).
- AbelianMul `abelian_mul(m, w_coeffs, a_coeffs)`: maps a weight-coefficient vector and an
  activation-coefficient vector to a table, C = w a^T in every layer (not a product of two models).
  It is bilinear, so it distributes over AbelianAdd on both sides, and abelian_mul(m, e_i, e_j) is
  basis model (i, j).
- `partial_model(m, k)`: the first k terms on both sides, for model-level convergence curves.

Biases are part of the shared base: every model in the group keeps them (so the identity model
outputs the biases propagated through the network, not zeros).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from .layers import ExpandedLayer
from .model import expanded_layers


def _with_pairs(qmodel: nn.Module, fn: Callable[[str, ExpandedLayer], torch.Tensor]) -> nn.Module:
    """A copy of qmodel sharing every tensor, with each expanded layer's C replaced by fn(name, layer)."""
    layers = expanded_layers(qmodel)
    if not layers:
        raise ValueError("not an expanded model: it has no expanded layers (use fpxint.expand first)")
    memo = {id(t): t for t in list(qmodel.parameters()) + list(qmodel.buffers())}  # share, do not copy
    new_pairs = {name: fn(name, layer).to(layer.pairs.device) for name, layer in layers}
    out = copy.deepcopy(qmodel, memo)
    for name, layer in expanded_layers(out):
        layer.pairs = new_pairs[name]  # a new buffer object; the original's stays untouched
        layer._w_cache = {}
    return out


def pairs_of(qmodel: nn.Module) -> dict[str, torch.Tensor]:
    """{layer name: C} of an expanded model."""
    return {n: l.pairs.clone() for n, l in expanded_layers(qmodel)}


def _check_isomorphic(models: Sequence[nn.Module]) -> None:
    ref = expanded_layers(models[0])
    for m in models[1:]:
        other = expanded_layers(m)
        if [n for n, _ in other] != [n for n, _ in ref]:
            raise ValueError("models are not isomorphic: their expanded layers differ")
        for (n, a), (_, b) in zip(ref, other):
            if a.w_q is not b.w_q and not (a.w_q.shape == b.w_q.shape and torch.equal(a.w_q, b.w_q)):
                raise ValueError(f"models are not isomorphic: layer {n} holds different integer terms")


def basis_model(qmodel: nn.Module, i: int, j: int) -> nn.Module:
    """Basis model (i, j), 1-based: weight term i times activation term j in every layer.

    Layers with fewer than i weight terms (or j activation terms) contribute only their bias.
    """
    if i < 1 or j < 1:
        raise ValueError(f"basis indices are 1-based; got ({i}, {j})")

    def fn(_, layer):
        c = torch.zeros_like(layer.pairs)
        if i <= c.shape[0] and j <= c.shape[1]:
            c[i - 1, j - 1] = layer.pairs[i - 1, j - 1].clamp(max=1)  # respects the truncation
        return c

    return _with_pairs(qmodel, fn)


def basis_models(qmodel: nn.Module) -> dict[tuple[int, int], nn.Module]:
    """Every basis model (i, j) whose pair is kept in at least one layer."""
    n_w = max(l.pairs.shape[0] for _, l in expanded_layers(qmodel))
    n_a = max(l.pairs.shape[1] for _, l in expanded_layers(qmodel))
    out = {}
    for i in range(1, n_w + 1):
        for j in range(1, n_a + 1):
            if any(i <= l.pairs.shape[0] and j <= l.pairs.shape[1] and l.pairs[i - 1, j - 1]
                   for _, l in expanded_layers(qmodel)):
                out[(i, j)] = basis_model(qmodel, i, j)
    return out


def zero_model(qmodel: nn.Module) -> nn.Module:
    """The identity of AbelianAdd: every C = 0."""
    return _with_pairs(qmodel, lambda _, l: torch.zeros_like(l.pairs))


def abelian_add(*models: nn.Module) -> nn.Module:
    """AbelianAdd of isomorphic expanded models: per layer C = sum of the models' C."""
    if not models:
        raise ValueError("abelian_add needs at least one model")
    _check_isomorphic(models)
    tables = [pairs_of(m) for m in models]
    return _with_pairs(models[0], lambda n, _: sum(t[n] for t in tables))


def abelian_neg(model: nn.Module) -> nn.Module:
    """The inverse under AbelianAdd: negated integer terms (C -> -C)."""
    return _with_pairs(model, lambda _, l: -l.pairs)


def abelian_mul(qmodel: nn.Module, w_coeffs: Sequence[int], a_coeffs: Sequence[int]) -> nn.Module:
    """AbelianMul: the pairing C = w_coeffs a_coeffs^T (integer vectors over weight / activation terms).

    Vectors longer than a layer's number of terms are cut to it; shorter ones are padded with 0.
    """
    w = torch.as_tensor(list(w_coeffs), dtype=torch.int64)
    a = torch.as_tensor(list(a_coeffs), dtype=torch.int64)

    def fn(_, layer):
        nw, na = layer.pairs.shape
        wv = torch.zeros(nw, dtype=torch.int64)
        av = torch.zeros(na, dtype=torch.int64)
        wv[: min(nw, len(w))] = w[:nw]
        av[: min(na, len(a))] = a[:na]
        return torch.outer(wv, av)

    return _with_pairs(qmodel, fn)


def partial_model(qmodel: nn.Module, k: int) -> nn.Module:
    """The expansion cut to its first k terms on both sides (keeps the truncation rule)."""
    if k < 1:
        raise ValueError(f"k={k} is not allowed; a partial model keeps at least 1 term")

    def fn(_, layer):
        c = layer.pairs.clone()
        c[k:, :] = 0
        if not layer.act_fp:
            c[:, k:] = 0
        if layer.truncation == "total_order":  # the k-term total order keeps i + j <= k + 1
            i = torch.arange(1, c.shape[0] + 1).unsqueeze(1)
            j = torch.arange(1, c.shape[1] + 1).unsqueeze(0)
            c = c * ((i + j) <= k + 1).to(c.device)
        return c

    return _with_pairs(qmodel, fn)
