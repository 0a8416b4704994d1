"""BatchNorm folding: which BatchNorm consumes which conv / linear output, and folding it in.

A BatchNorm in eval mode is an affine map per channel, so when it is the ONLY consumer of a conv
or linear layer's output it folds into that layer's weight and bias (y = k (W x + b - mean) + beta).

The pairs are found by running the model once on a small example input while recording, on a
private copy, which call consumes each layer's output: per-module forward hooks (registered on the
copy only) plus a `TorchFunctionMode` for the functional ops between modules. Torch function modes
live on a thread-local stack, so nothing another thread can observe is patched. (`torch.fx`'s
`symbolic_trace`, used before, swaps `nn.Module.__call__` for the whole process while it traces:
concurrent forward passes in other threads, i.e. other Streamlit sessions, then crashed.) A model
that does not run on the example input falls back to adjacency inside `nn.Sequential`.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_linear_bn_weights
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from .layers import LAYER_REGISTRY

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_SPATIAL = (32, 96, 224)  # example sizes tried for a conv input: small first, ImageNet size for picky models
# ops that read a tensor's metadata only: a folded layer's output has the same metadata
_META_OPS = {"size", "dim", "numel", "__len__", "stride", "is_floating_point", "is_contiguous", "nelement",
             "ndimension", "element_size", "is_complex", "get_device"}
_META_PROPS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout", "is_sparse",
               "is_quantized", "is_meta", "names"}


def _is_meta(func) -> bool:
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a property: func is the descriptor's bound __get__
        return getattr(getattr(func, "__self__", None), "__name__", "") in _META_PROPS
    return name in _META_OPS


class _Recorder(TorchFunctionMode):
    """Counts the consumers of each watched layer's output during one forward pass.

    A consumer is a call of a leaf module (seen by its forward pre-hook) or a torch function called
    outside every leaf module (ops inside a leaf belong to that leaf's call, counted once).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.made: dict[int, tuple[torch.Tensor, str]] = {}  # id -> (output kept alive, layer name)
        self.users: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.bn_input: dict[str, str] = {}  # bn name -> layer whose output it received
        self.depth = 0  # > 0 inside a leaf module's forward
        self.handles = []
        for name, m in model.named_modules():
            if next(m.children(), None) is not None:
                continue
            self.handles.append(m.register_forward_pre_hook(self._pre(name, m)))
            self.handles.append(m.register_forward_hook(self._post(name, type(m) in LAYER_REGISTRY)))

    def _consume(self, values) -> list[str]:
        hit = [self.made[id(t)][1] for t in tree_leaves(values)
               if isinstance(t, torch.Tensor) and id(t) in self.made and self.made[id(t)][0] is t]
        for name in hit:
            self.users[name] = self.users.get(name, 0) + 1
        return hit

    def _pre(self, name: str, m: nn.Module):
        def hook(_, args):
            if self.depth == 0:
                self.calls[name] = self.calls.get(name, 0) + 1
                hit = self._consume(args)
                first = args[0] if args else None
                if isinstance(m, _BN) and hit and id(first) in self.made and self.made[id(first)][0] is first:
                    self.bn_input[name] = self.made[id(first)][1]
            self.depth += 1
        return hook

    def _post(self, name: str, watched: bool):
        def hook(_, __, out):
            self.depth -= 1
            if watched and self.depth == 0 and isinstance(out, torch.Tensor):
                self.made[id(out)] = (out, name)
        return hook

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth == 0 and not _is_meta(func):
            self._consume((args, kwargs))
        return func(*args, **kwargs)

    def pairs(self) -> list[tuple[str, str]]:
        return [(layer, bn) for bn, layer in self.bn_input.items()
                if self.users.get(layer) == 1 and self.calls.get(layer) == 1 and self.calls.get(bn) == 1]


def example_input(model: nn.Module) -> list[torch.Tensor]:
    """Candidate inputs for a model of unknown input shape, from its first conv / linear / BatchNorm."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, *_BN))), None)
    p = next(iter(model.parameters()), None)
    if first is None or p is None:
        return []
    gen = torch.Generator().manual_seed(0)
    if isinstance(first, nn.Conv2d):
        shapes = [(1, first.in_channels, s, s) for s in _SPATIAL]
    elif isinstance(first, nn.Conv1d):
        shapes = [(1, first.in_channels, s) for s in _SPATIAL]
    elif isinstance(first, nn.Linear):
        shapes = [(1, first.in_features)]
    else:
        shapes = [(1, first.num_features)] + ([(1, first.num_features, 32, 32)] if isinstance(first, nn.BatchNorm2d)
                                               else [])
    return [torch.randn(s, generator=gen).to(p.device, p.dtype) for s in shapes]


def conv_bn_pairs(model: nn.Module, example: torch.Tensor | None = None) -> list[tuple[str, str]]:
    """(layer, batchnorm) name pairs where the BatchNorm is the only consumer of the layer's output.

    Runs a private eval-mode copy of `model` on `example` (inferred from the first layer when None);
    models that do not run on it fall back to adjacency inside nn.Sequential.
    """
    if not any(isinstance(m, _BN) for m in model.modules()):
        return []
    return _pairs(copy.deepcopy(model).eval(), example)


def _pairs(work: nn.Module, example: torch.Tensor | None) -> list[tuple[str, str]]:
    """conv_bn_pairs on a model that is already a private eval-mode copy (hooks come and go on it)."""
    if not any(isinstance(m, _BN) for m in work.modules()):
        return []
    p = next(iter(work.parameters()), None)
    given = [example.to(p.device) if p is not None else example] if example is not None else None
    for x in given or example_input(work):
        rec = _Recorder(work)
        try:
            with torch.no_grad(), rec:
                rec._consume(work(x))  # the model's output is a consumer too
            return rec.pairs()
        except Exception:  # noqa: BLE001 - any failure of an unknown model on a guessed input: try the next
            continue
        finally:
            for h in rec.handles:
                h.remove()
    return _sequential_pairs(work)


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Sequential):
            kids = list(m.named_children())
            for (n1, a), (n2, b) in zip(kids, kids[1:]):
                if type(a) in LAYER_REGISTRY and isinstance(b, _BN):
                    pre = f"{name}." if name else ""
                    pairs.append((pre + n1, pre + n2))
    return pairs


@torch.no_grad()
def fold_batchnorm_(model: nn.Module, example: torch.Tensor | None = None) -> int:
    """Folds eval-mode BatchNorm into the preceding layer in place; returns how many were folded.

    `model` is the caller's private eval-mode copy (as in `expand`): the pairs are found on it directly.
    """
    n = 0
    for layer_name, bn_name in _pairs(model, example):
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        if bn.running_mean is None or layer.weight.shape[0] != bn.num_features:
            continue
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
        # the linear rule on the [out, -1] view: fuse_conv_bn_weights rounds the bias in another order
        # ((b - mean) * rsqrt * gamma), which would change saved expansions and measured results in the last bit
        w, b = fuse_linear_bn_weights(layer.weight.flatten(1), layer.bias, bn.running_mean, bn.running_var,
                                      bn.eps, gamma, beta)
        layer.weight = nn.Parameter(w.reshape(layer.weight.shape), requires_grad=layer.weight.requires_grad)
        layer.bias = nn.Parameter(b.to(w.dtype), requires_grad=layer.weight.requires_grad)
        model.set_submodule(bn_name, nn.Identity(), strict=True)
        n += 1
    return n
