"""Model level: `expand(model, cfg)` returns a new module whose supported layers are expanded.

Steps: deep-copy (the caller's model is never mutated), fold BatchNorm into the preceding conv or
linear layer, resolve each layer's settings (config defaults, first/last-layer policy, overrides)
and swap the supported layers through `layers.LAYER_REGISTRY`. Everything else (activations,
pooling, normalization other than folded BatchNorm, attention internals) stays in FP.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.nn as nn

from .config import ExpansionConfig, LayerSpec
from .fold import fold_batchnorm_
from .layers import LAYER_REGISTRY, ExpandedLayer, expand_layer
from .quant import all_finite

T = TypeVar("T")


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


def model_device(model: nn.Module) -> torch.device:
    """Where a model's first parameter (or buffer) lives; CPU for a model without tensors."""
    t = next(iter(model.parameters()), None)
    t = t if t is not None else next(iter(model.buffers()), None)
    return t.device if t is not None else torch.device("cpu")


def state_sha256(model: nn.Module) -> str:
    """sha256 of a model's state_dict (names, dtypes, shapes, bytes): which FP weights were expanded."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def target_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """`device`, or where the model is when None: nothing moves to a GPU on its own."""
    return model_device(model) if device is None else resolve_device(device)


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


def check_overrides(model: nn.Module, cfg: ExpansionConfig, names: list[str] | None = None) -> None:
    """Raises ValueError when `cfg.overrides` names a layer that `model` cannot expand (a typo would
    otherwise leave that layer at the defaults without a word). `names`: its expandable layers, if known."""
    names = [n for n, _ in expandable_layers(model)] if names is None else names
    unknown = [n for n, _ in cfg.overrides if n not in names]
    if unknown:
        raise ValueError(f"overrides name layers that {type(model).__name__} does not have: {unknown}; "
                         f"expandable layers: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")


def layer_position(index: int, count: int) -> str | None:
    """'first', 'last' or None for layer `index` of `count` expandable layers (registration order).

    The one place that says which layers the first/last-layer policy (`cfg.first_last`) applies to;
    a model with a single expandable layer has it as 'first'.
    """
    return "first" if index == 0 else "last" if index == count - 1 else None


def layer_plan(layers: Sequence[tuple[str, T]], cfg: ExpansionConfig) -> list[tuple[int, str, T, LayerSpec]]:
    """(index, name, module, spec) of each of `expandable_layers(...)`, with its settings resolved by
    `cfg.layer_spec` (defaults, the first/last-layer policy, overrides)."""
    return [(i, n, m, cfg.layer_spec(n, layer_position(i, len(layers)))) for i, (n, m) in enumerate(layers)]


def expanded_layers(qmodel: nn.Module) -> list[tuple[str, ExpandedLayer]]:
    """(name, layer) of every expanded layer of an expanded model."""
    return [(n, m) for n, m in qmodel.named_modules() if isinstance(m, ExpandedLayer)]


def fold_batchnorm(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """A copy of `model` in eval mode with BatchNorm folded into the preceding conv / linear layers.

    `example_input` (a small batch the model accepts) shows which op consumes each layer's output;
    when None one is inferred from the first layer (see `fold.conv_bn_pairs`).
    """
    m = copy.deepcopy(model).eval()
    fold_batchnorm_(m, example_input)
    return m


def expand(model: nn.Module, cfg: ExpansionConfig | None = None, device: str | torch.device | None = None,
           example_input: torch.Tensor | None = None) -> nn.Module:
    """Expands every supported layer of `model` into a series of low-bit integer terms.

    Args:
        model: any nn.Module; it is deep-copied and never mutated.
        cfg: the expansion; defaults to `ExpansionConfig()`.
        device: None (default: where `model` is), 'auto' (CUDA when available), 'cpu' or 'cuda'.
        example_input: a small batch `model` accepts, run once on a private copy to find which
            BatchNorm follows which layer; None infers one from the first layer.

    Returns:
        A new module in eval mode with attributes `fpxint_config`, `fpxint_layers` (names of
        the expanded layers) and `fpxint_fp_sha256` (`state_sha256(model)`, recorded in exports).

    Example:
        >>> qmodel = expand(torchvision.models.resnet18(), ExpansionConfig(w_bits=4, w_terms=2))
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"expand() needs an nn.Module, got {type(model).__name__}")
    cfg = cfg or ExpansionConfig()
    if not isinstance(cfg, ExpansionConfig):
        raise ValueError(f"cfg must be an ExpansionConfig, got {type(cfg).__name__}")
    dev = model_device(model) if device is None else resolve_device(device)
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if not all_finite(p):
            raise ValueError(f"{name} holds NaN or Inf values; a series expansion needs finite weights")
    m = copy.deepcopy(model).eval()
    n_folded = fold_batchnorm_(m, example_input) if cfg.fold_bn else 0
    layers = expandable_layers(m)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no layer that can be expanded; supported layer types: "
                         + ", ".join(t.__name__ for t in LAYER_REGISTRY))
    check_overrides(model, cfg, [n for n, _ in layers])
    expanded = []
    for _, name, layer, spec in layer_plan(layers, cfg):
        if spec.fp:
            continue
        m.set_submodule(name, expand_layer(layer, cfg, spec), strict=True)
        expanded.append(name)
    m = m.to(dev)
    m.fpxint_config = cfg
    m.fpxint_fp_sha256 = state_sha256(model)  # recorded by save_expanded: which weights these are
    m.fpxint_layers = expanded
    m.fpxint_folded_bn = n_folded
    return m


def set_mode(qmodel: nn.Module, mode: str) -> nn.Module:
    """Switches every expanded layer to 'simulate' or 'integer' (in place; returns qmodel)."""
    if mode not in ("simulate", "integer"):
        raise ValueError(f"mode={mode!r} is not allowed; choose one of simulate, integer")
    for _, layer in expanded_layers(qmodel):
        layer.mode = mode
    if isinstance(getattr(qmodel, "fpxint_config", None), ExpansionConfig):
        qmodel.fpxint_config = qmodel.fpxint_config.replace(mode=mode)  # save_expanded writes the mode in use
    return qmodel
