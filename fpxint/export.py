"""Save and load expanded models: integer terms + scales as safetensors, the config as JSON.

The safetensors file holds the expanded model's whole state (int8 / uint8 terms, float scales,
kept-pair tables, and the FP parts), so loading needs only the FP architecture: `load_expanded`
re-creates the structure with `expand(model, cfg)` and then overwrites every tensor with the saved
ones (strict), which reproduces the saved model's outputs exactly. No pickle is involved.

Integrity: the JSON records the sha256 of the tensors file and the identity of the FP weights that
were expanded (registry name, where they came from, sha256 of their state_dict). Both files are
written under temporary names and then renamed, the tensors file first: a failure leaves the old
pair (or nothing) behind, and a crash between the two renames leaves a pair whose hash disagrees,
which `load_expanded` refuses. `load_expanded` checks everything a hand-edited or truncated file could
get wrong (hash, config against shapes and dtypes, integers inside the grid of the recorded bits,
finite non-negative scales, kept pairs equal to the config's) and says what in one line.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .atomic import write_files
from .config import ExpansionConfig
from .layers import ExpandedLayer, pair_matrix
from .quant import all_finite, grid_range

FORMAT = "fpxint-expanded/2"  # /2: records hashes; /1 files (no hashes) are refused with a hint
MAX_JSON_BYTES = 16 << 20  # a config with per-layer overrides of a large model is well under 1 MB


class ExportError(ValueError):
    """A saved expansion cannot be written or trusted; the message is one line saying why."""


def save_expanded(qmodel: nn.Module, model_name: str | None = None, path: str | os.PathLike | None = None,
                  *, weights_source: str | None = None, overwrite: bool = False) -> tuple[bytes, str]:
    """Serializes an expanded model.

    Args:
        qmodel: a model returned by `fpxint.expand`.
        model_name: registry name of the architecture, recorded in the JSON.
        path: when given, writes `<path>.safetensors` and `<path>.json` as well (atomically).
        weights_source: where the FP weights came from (a file, "bundled", a URL), recorded.
        overwrite: replace existing files at `path`; otherwise they are an error.

    Returns:
        (safetensors bytes, JSON text).
    """
    cfg = getattr(qmodel, "fpxint_config", None)
    if cfg is None:
        raise ExportError("not an expanded model (no fpxint_config); expand it with fpxint.expand first")
    _check_pairs(qmodel, cfg, "this model")
    state = {k: v.detach().cpu().contiguous() for k, v in qmodel.state_dict().items()}
    blob = st_save(state, metadata={"format": FORMAT})
    meta = {"format": FORMAT, "model": model_name, "config": cfg.to_dict(), "layers": list(qmodel.fpxint_layers),
            "tensors_sha256": hashlib.sha256(blob).hexdigest(),
            "fp_weights": {"model": model_name, "source": weights_source,
                           "sha256": getattr(qmodel, "fpxint_fp_sha256", None)}}
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    if path is not None:
        p = str(path)  # a prefix: "r20.w4a4" must not lose ".w4a4" to with_suffix
        _write_pair([(Path(p + ".safetensors"), blob), (Path(p + ".json"), text.encode())], overwrite)
    return blob, text


def _write_pair(files: list[tuple[Path, bytes]], overwrite: bool) -> None:
    """Both files or neither, never half a file (`atomic.write_files`)."""
    try:
        write_files(files, overwrite)
    except FileExistsError as e:
        raise ExportError(f"{e}; pass overwrite=True (CLI: --force) to replace, or choose another --out") from None


def read_meta(config: str | os.PathLike | dict) -> dict:
    """The JSON side of a saved expansion, from text, a path or a dict; checked for its required keys."""
    if isinstance(config, dict):
        meta = config
    else:
        text = str(config)
        if not text.lstrip().startswith("{"):
            try:
                if os.path.getsize(config) > MAX_JSON_BYTES:
                    raise ExportError(f"{config} is larger than {MAX_JSON_BYTES >> 20} MB: not an expansion's JSON")
                text = Path(config).read_text()
            except OSError as e:
                raise ExportError(f"cannot read the expansion's JSON file {config}: {e.strerror}") from None
            except UnicodeDecodeError:
                raise ExportError(f"{config} is not a text file") from None
        if len(text) > MAX_JSON_BYTES:
            raise ExportError(f"the expansion's JSON is larger than {MAX_JSON_BYTES >> 20} MB")
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as e:
            raise ExportError(f"the expansion's JSON is not valid JSON: {e}") from None
        except RecursionError:
            raise ExportError("the expansion's JSON is nested too deeply to be an expansion") from None
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, "fpxint-expanded/1"):
        raise ExportError(f"not an fpxint expansion JSON (expected format {FORMAT!r})")
    if meta["format"] != FORMAT:
        raise ExportError(f"this expansion was written by an older fpxint ({meta['format']}) without integrity "
                          "data; expand it again with `fpxint expand`")
    for key, kind in (("config", dict), ("layers", list), ("tensors_sha256", str), ("fp_weights", dict)):
        if not isinstance(meta.get(key), kind):
            raise ExportError(f"the expansion's JSON has no valid {key!r} ({kind.__name__} expected)")
    return meta


def _check_pairs(qmodel: nn.Module, cfg: ExpansionConfig, what: str) -> None:
    for name, m in qmodel.named_modules():
        if isinstance(m, ExpandedLayer):
            want = pair_matrix(m.w_terms, m.a_terms, m.truncation, cfg.total_order)
            if m.pairs.shape != want.shape or not torch.equal(m.pairs.cpu(), want):
                raise ExportError(f"{what}: the kept pairs of {name} are not those the config defines "
                                  "(derived models such as basis models cannot be exported)")


def _check_values(qmodel: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Integers inside each layer's grid, finite non-negative scales, finite FP parts."""
    for key, t in state.items():
        if not all_finite(t):
            raise ExportError(f"the saved expansion holds NaN or Inf in {key}")
    for name, m in qmodel.named_modules():
        if not isinstance(m, ExpandedLayer):
            continue
        pre = f"{name}." if name else ""
        q, s = state[pre + "w_q"], state[pre + "w_scale"]
        lo, hi = grid_range(m.w_bits, m.w_grid)
        if q.numel() and (int(q.min()) < lo or int(q.max()) > hi):
            raise ExportError(f"{pre}w_q holds integers in [{int(q.min())}, {int(q.max())}], outside the "
                              f"{m.w_bits}-bit {m.w_grid} grid [{lo}, {hi}] the JSON records")
        if (s < 0).any():
            raise ExportError(f"{pre}w_scale holds negative scales")
        z = state.get(pre + "w_zero")
        if z is not None and z.numel() and (int(z.min()) < 0 or int(z.max()) > 2**m.w_bits - 1):
            raise ExportError(f"{pre}w_zero holds zero points outside [0, {2**m.w_bits - 1}]")


def load_expanded(model: nn.Module, weights: bytes | str | os.PathLike, config: str | os.PathLike | dict,
                  device: str | None = "cpu") -> nn.Module:
    """Re-creates a saved expanded model on the FP architecture `model` (which is not mutated).

    Raises:
        ExportError (a ValueError): the files disagree with each other or with the architecture.
    """
    from .model import expand, resolve_device  # local: model -> layers -> ... never imports export

    meta = read_meta(config)
    try:
        cfg = ExpansionConfig.from_dict(meta["config"])
    except (ValueError, TypeError, KeyError, RecursionError) as e:
        raise ExportError(f"the expansion's JSON holds an invalid config: {e}") from None
    try:
        blob = bytes(weights) if isinstance(weights, (bytes, bytearray)) else Path(weights).read_bytes()
    except OSError as e:
        raise ExportError(f"cannot read the tensors file {weights}: {e.strerror}") from None
    if hashlib.sha256(blob).hexdigest() != meta["tensors_sha256"]:
        raise ExportError("the safetensors file does not match its JSON (sha256 differs): truncated, edited, or from "
                          "another export")
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError) as e:
        raise ExportError(f"not a readable safetensors file: {e}") from None
    qmodel = expand(model, cfg, device="cpu")
    expected = qmodel.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise ExportError(f"the saved expansion does not match this architecture: {len(missing)} missing "
                          f"(e.g. {sorted(missing)[:2]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:2]})")
    for name, t in expected.items():
        if t.shape != state[name].shape or t.dtype != state[name].dtype:
            raise ExportError(f"the saved expansion does not match this architecture and config at {name}: "
                              f"{tuple(state[name].shape)} {state[name].dtype} vs {tuple(t.shape)} {t.dtype}")
    _check_values(qmodel, state)
    with torch.no_grad():
        for name, t in expected.items():
            t.copy_(state[name])
    _check_pairs(qmodel, cfg, "the saved expansion")
    for _, layer in qmodel.named_modules():
        if hasattr(layer, "_w_cache"):
            layer._w_cache = {}
    qmodel.fpxint_fp_sha256 = meta["fp_weights"].get("sha256")  # the weights it was made from, not `model`'s
    return qmodel.to(resolve_device(device))
