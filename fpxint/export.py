"""Save and load expanded models: integer terms + scales as safetensors, the config as JSON.

The safetensors file holds the expanded model's whole state (int8 / uint8 terms, float scales,
kept-pair tables, and the FP parts), so loading needs only the FP architecture: `load_expanded`
re-creates the structure with `expand(model, cfg)` and then overwrites every tensor with the saved
ones (strict), which reproduces the saved model's outputs exactly. No pickle is involved.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import ExpansionConfig

FORMAT = "fpxint-expanded/1"


def save_expanded(qmodel: nn.Module, model_name: str | None = None,
                  path: str | os.PathLike | None = None) -> tuple[bytes, str]:
    """Serializes an expanded model.

    Args:
        qmodel: a model returned by `fpxint.expand`.
        model_name: registry name of the architecture, recorded in the JSON.
        path: when given, writes `<path>.safetensors` and `<path>.json` as well.

    Returns:
        (safetensors bytes, JSON text).
    """
    cfg = getattr(qmodel, "fpxint_config", None)
    if cfg is None:
        raise ValueError("not an expanded model (no fpxint_config); expand it with fpxint.expand first")
    state = {k: v.detach().cpu().contiguous() for k, v in qmodel.state_dict().items()}
    meta = {"format": FORMAT, "model": model_name, "config": cfg.to_dict(), "layers": list(qmodel.fpxint_layers)}
    blob = st_save(state, metadata={"format": FORMAT})
    text = json.dumps(meta, indent=2, sort_keys=True)
    if path is not None:
        p = str(path)  # a prefix: "r20.w4a4" must not lose ".w4a4" to with_suffix
        Path(p + ".safetensors").write_bytes(blob)
        Path(p + ".json").write_text(text)
    return blob, text


def read_meta(config: str | os.PathLike | dict) -> dict:
    """The JSON side of a saved expansion, from text, a path or a dict."""
    if isinstance(config, dict):
        meta = config
    else:
        text = str(config)
        if not text.lstrip().startswith("{"):
            try:
                text = Path(config).read_text()
            except OSError as e:
                raise ValueError(f"cannot read the expansion's JSON file {config}: {e.strerror}") from None
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"the expansion's JSON is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"not an fpxint expansion JSON (expected format {FORMAT!r})")
    return meta


def load_expanded(model: nn.Module, weights: bytes | str | os.PathLike, config: str | os.PathLike | dict,
                  device: str | None = "cpu") -> nn.Module:
    """Re-creates a saved expanded model on the FP architecture `model` (which is not mutated)."""
    from .model import expand  # local: model -> layers -> ... never imports export

    meta = read_meta(config)
    cfg = ExpansionConfig.from_dict(meta["config"])
    try:
        blob = weights if isinstance(weights, (bytes, bytearray)) else Path(weights).read_bytes()
        state = st_load(bytes(blob))
    except (OSError, SafetensorError, ValueError) as e:
        raise ValueError(f"not a readable safetensors file: {e}") from None
    qmodel = expand(model, cfg, device="cpu")
    missing = set(qmodel.state_dict()) - set(state)
    unexpected = set(state) - set(qmodel.state_dict())
    if missing or unexpected:
        raise ValueError(f"the saved expansion does not match this architecture: {len(missing)} missing "
                         f"(e.g. {sorted(missing)[:2]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:2]})")
    for name, t in qmodel.state_dict().items():
        if t.shape != state[name].shape or t.dtype != state[name].dtype:
            raise ValueError(f"the saved expansion does not match this architecture at {name}: "
                             f"{tuple(state[name].shape)} {state[name].dtype} vs {tuple(t.shape)} {t.dtype}")
    with torch.no_grad():
        for name, t in qmodel.state_dict().items():
            t.copy_(state[name])
    for _, layer in qmodel.named_modules():
        if hasattr(layer, "_w_cache"):
            layer._w_cache = {}
    from .model import resolve_device
    return qmodel.to(resolve_device(device))
