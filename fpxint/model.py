"""Model level: `expand(model, cfg)` returns a new module whose supported layers are expanded.

Steps: deep-copy (the caller's model is never mutated), fold BatchNorm into the preceding conv or
linear layer, resolve each layer's settings (config defaults, first/last-layer policy, overrides)
and swap the supported layers through `layers.LAYER_REGISTRY`. Everything else (activations,
pooling, normalization other than folded BatchNorm, attention internals) stays in FP.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .config import ExpansionConfig
from .layers import LAYER_REGISTRY, ExpandedLayer, expand_layer

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """'auto'/None: CUDA when available, else CPU. An explicit 'cuda' without a GPU is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not allowed; use 'auto', 'cpu' or 'cuda' ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is not allowed; use 'auto', 'cpu' or 'cuda'")
    return dev


def device_name(device: torch.device) -> str:
    """Human name of a device: the GPU's name or 'CPU'."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def expandable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer `expand` would swap, in registration order.

    Layers inside nn.MultiheadAttention stay in FP: the attention reads their weights directly.
    """
    skip = set()
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            skip.update(f"{name}.{n}" if name else n for n, _ in m.named_modules() if n)
    return [(n, m) for n, m in model.named_modules() if type(m) in LAYER_REGISTRY and n not in skip]


def expanded_layers(qmodel: nn.Module) -> list[tuple[str, ExpandedLayer]]:
    """(name, layer) of every expanded layer of an expanded model."""
    return [(n, m) for n, m in qmodel.named_modules() if isinstance(m, ExpandedLayer)]


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, batchnorm) name pairs where the BN consumes only that layer's output."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # untraceable control flow: fall back to adjacency inside nn.Sequential
        return _sequential_pairs(model)
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), _BN):
            continue
        prev = node.args[0] if node.args else None
        if (isinstance(prev, torch.fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                and type(gm.get_submodule(prev.target)) in LAYER_REGISTRY
                and calls[prev.target] == 1 and calls[node.target] == 1):
            pairs.append((prev.target, node.target))
    return pairs


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
def _fold_batchnorm_(model: nn.Module) -> int:
    """Folds eval-mode BatchNorm into the preceding layer in place; returns how many were folded."""
    n = 0
    for layer_name, bn_name in _conv_bn_pairs(model):
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        if bn.running_mean is None or layer.weight.shape[0] != bn.num_features:
            continue
        inv = torch.rsqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.affine else torch.ones_like(inv)
        beta = bn.bias if bn.affine else torch.zeros_like(inv)
        k = gamma * inv
        layer.weight.mul_(k.reshape((-1,) + (1,) * (layer.weight.dim() - 1)))
        b = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        new_b = (b - bn.running_mean) * k + beta
        layer.bias = nn.Parameter(new_b.to(layer.weight.dtype))
        _set_module(model, bn_name, nn.Identity())
        n += 1
    return n


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with BatchNorm folded into the preceding conv / linear layers."""
    m = copy.deepcopy(model).eval()
    _fold_batchnorm_(m)
    return m


def expand(model: nn.Module, cfg: ExpansionConfig | None = None, device: str | torch.device | None = None,
           ) -> nn.Module:
    """Expands every supported layer of `model` into a series of low-bit integer terms.

    Args:
        model: any nn.Module; it is deep-copied and never mutated.
        cfg: the expansion; defaults to `ExpansionConfig()`.
        device: 'auto' (default: CUDA when available), 'cpu' or 'cuda'.

    Returns:
        A new module in eval mode with attributes `fpxint_config` and `fpxint_layers` (names of
        the expanded layers).

    Example:
        >>> qmodel = expand(torchvision.models.resnet18(), ExpansionConfig(w_bits=4, w_terms=2))
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"expand() needs an nn.Module, got {type(model).__name__}")
    cfg = cfg or ExpansionConfig()
    if not isinstance(cfg, ExpansionConfig):
        raise ValueError(f"cfg must be an ExpansionConfig, got {type(cfg).__name__}")
    dev = resolve_device(device)
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise ValueError(f"{name} holds NaN or Inf values; a series expansion needs finite weights")
    m = copy.deepcopy(model).eval()
    n_folded = _fold_batchnorm_(m) if cfg.fold_bn else 0
    layers = expandable_layers(m)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no layer that can be expanded; supported layer types: "
                         + ", ".join(t.__name__ for t in LAYER_REGISTRY))
    names = [n for n, _ in layers]
    unknown = [n for n, _ in cfg.overrides if n not in names]
    if unknown:
        raise ValueError(f"overrides name layers that the model does not have: {unknown}; "
                         f"expandable layers are e.g. {names[:6]}{' ...' if len(names) > 6 else ''}")
    expanded = []
    for idx, (name, layer) in enumerate(layers):
        position = "first" if idx == 0 else "last" if idx == len(layers) - 1 else None
        spec = cfg.layer_spec(name, position)
        if spec.fp:
            continue
        _set_module(m, name, expand_layer(layer, cfg, spec))
        expanded.append(name)
    m = m.to(dev)
    m.fpxint_config = cfg
    m.fpxint_layers = expanded
    m.fpxint_folded_bn = n_folded
    return m


def set_mode(qmodel: nn.Module, mode: str) -> nn.Module:
    """Switches every expanded layer to 'simulate' or 'integer' (in place; returns qmodel)."""
    if mode not in ("simulate", "integer"):
        raise ValueError(f"mode={mode!r} is not allowed; choose one of simulate, integer")
    for _, layer in expanded_layers(qmodel):
        layer.mode = mode
    return qmodel
