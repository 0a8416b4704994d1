"""Where an ``hf:<name or path>`` model comes from and how big it is, decided before any weights are read.

- `resolve_ref`: a Hugging Face hub id or a local folder. The CLI and the Python API take any folder (the
  user owns the machine); a server confines folders to one operator-set root (``confine=True``), with
  symlinks and ``..`` resolved before the check, and takes none when it has no root.
- `refuse_pickle_only`: fpxint reads weights from safetensors only (every `from_pretrained` of the
  ``hf:`` loader passes ``use_safetensors=True``); a folder whose only weights are pickles (``*.bin``,
  ``*.pt``) is refused in one line before transformers opens anything, because unpickling runs code.
- `size_from_config`: the parameter count of the model a config describes, from a build on the meta
  device (shapes only: no memory, no weights), and the memory loading it takes, so that a caller can
  refuse an oversized model before its weights are downloaded or read.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from fpxint.zoo.registry import ModelLoadError

__all__ = ["HFSource", "HFSize", "resolve_ref", "refuse_pickle_only", "size_from_config", "MAX_LAYERS", "pretrained"]

# A hub id: "name" or "org/name" (huggingface_hub's rule, which also forbids ".." and "--"). Anything
# else is a path. A hub id that is also a folder relative to the working directory is a path too
# (transformers would read that folder), so a server checks for it.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Published models have at most a few hundred blocks; a meta build costs ~12 ms per block here, so a
# config declaring more is refused before the build rather than keeping a server thread for minutes.
MAX_LAYERS = 1024
ROOT_VAR = "FPXINT_HF_ROOT"


@dataclass(frozen=True)
class HFSource:
    """What transformers is given: a hub id (``local=False``) or a resolved absolute folder."""

    ref: str
    local: bool


# Loading holds more than the float32 model: the checkpoint's mapped pages and dtype conversions. Peak
# RSS above the baseline, loading a random 124M GPT-2 here (python -m bench.hf_load_memory): 5.82
# bytes/param from a float32 safetensors file, 7.08 from a bfloat16 one; 4 (the model) + 4 covers both
# (estimate / measured 1.44 and 1.19), conservative like admission's other estimates.
_LOAD_EXTRA_PER_PARAM = 4


@dataclass(frozen=True)
class HFSize:
    """A model's size from its config: parameters (tied ones once) and the peak bytes of loading it as
    fpxint does (float32 parameters and buffers, plus `_LOAD_EXTRA_PER_PARAM` per parameter meanwhile)."""

    params: int
    bytes: int
    layers: int | None = None


def _is_hub_id(ref: str) -> bool:
    return _HUB_ID.fullmatch(ref) is not None and ".." not in ref and "--" not in ref


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_ref(ref: str, *, root: str | os.PathLike | None = None, confine: bool = False) -> HFSource:
    """The source of ``hf:<ref>``: a local folder or a hub id.

    Args:
        ref: What follows ``hf:``.
        root: With ``confine``: the one folder local models may come from; a relative ``ref`` is looked up
            in it first. Ignored without ``confine``.
        confine: True on a server: folders only inside ``root`` (after resolving symlinks and ``..``),
            none when ``root`` is None. False (CLI, API): any folder.

    Raises:
        ModelLoadError: one line naming ``ref`` as typed (never the server's resolved paths).
    """
    ref = ref.strip()
    if not ref or not ref.isprintable():
        raise ModelLoadError(f"hf:{ref!r} is not a model name or folder")
    hub = _is_hub_id(ref)
    if not confine:
        path = Path(ref).expanduser()
        if path.exists() or not hub:
            if not path.is_dir():
                raise ModelLoadError(f"hf:{ref} is not a folder" + ("" if path.exists() else " (no such path)"))
            return HFSource(str(path.resolve()), True)
        return HFSource(ref, False)
    if root is not None:
        base = Path(root).resolve()
        typed = base / ref  # an absolute ref replaces base
        path = typed.resolve()  # follows symlinks and ".."
        if _inside(path, base) and path.is_dir():
            return HFSource(str(path), True)
        if not hub or os.path.lexists(typed):  # a path, or a name present in the root (a file, a symlink out)
            where = "is outside" if not _inside(path, base) else "is not a folder in"
            raise ModelLoadError(f"hf:{ref} {where} the model folder this server allows ({ROOT_VAR}); "
                                 "type a folder name inside it or a Hugging Face model name")
    elif not hub:
        raise ModelLoadError(f"hf:{ref} looks like a folder on the server, and this server loads no local "
                             f"folders: its operator enables a folder of models with {ROOT_VAR}=<folder> "
                             "(environment or .streamlit/secrets.toml); type a Hugging Face model name instead")
    if os.path.lexists(ref):  # transformers would read ./<ref> on the server instead of the hub
        raise ModelLoadError(f"hf:{ref} names a folder in the server's working directory, which it does not "
                             f"load ({ROOT_VAR} is the one folder of local models)")
    return HFSource(ref, False)


def refuse_pickle_only(folder: str | os.PathLike, ref: str) -> None:
    """Raises when `folder` has pickle weights and no safetensors (transformers would unpickle them)."""
    names = [p.name for p in Path(folder).iterdir() if p.is_file()]
    if any(n.endswith(".safetensors") for n in names):
        return
    pickles = sorted(n for n in names if n.endswith(_PICKLES))
    if pickles:
        raise ModelLoadError(
            f"hf:{ref} holds only pickle weights ({', '.join(pickles[:3])}): fpxint reads safetensors only, because "
            "unpickling a file can run any code; convert it once where you trust the file: python -c \"from "
            "transformers import AutoModel as M; M.from_pretrained('DIR', use_safetensors=False)"
            ".save_pretrained('DIR')\"")


def size_from_config(config, model_class, ref: str = "") -> HFSize:
    """Parameters and loading memory of ``model_class.from_config(config)``, built on the meta device.

    Counts what fpxint would load (parameters, tied ones once, and buffers) as float32, plus the
    transient memory of loading (`HFSize`). Refuses a config declaring more than `MAX_LAYERS` blocks
    before building anything.

    Example:
        >>> size_from_config(GPT2Config(), AutoModelForCausalLM).params   # 124,439,808
    """
    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(layers, int) and layers > MAX_LAYERS:
        raise ModelLoadError(f"hf:{ref}'s config declares {layers} layers (more than {MAX_LAYERS}): not sized, "
                             "not loaded")
    try:
        with torch.device("meta"):  # a thread-local mode: shapes only, no memory, no initialisation cost
            net = model_class.from_config(config)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for configs it cannot build
        why = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"hf:{ref}: cannot build the model its config describes ({why})") from None
    params = sum(p.numel() for p in net.parameters())
    buffers = sum(b.numel() for b in net.buffers())
    return HFSize(int(params), int(4 * (params + buffers) + _LOAD_EXTRA_PER_PARAM * params),
                  layers if isinstance(layers, int) else None)


def pretrained(cls, src, weights: bool = True, **kw):
    """`cls.from_pretrained`, the one call site: a model's weights come from safetensors, never a pickle
    (GGUF files are parsed by the gguf package, which unpickles nothing); configs and tokenizers
    (`weights=False`) are JSON and vocabulary files."""
    if weights and "gguf_file" not in kw:
        kw["use_safetensors"] = True
    return cls.from_pretrained(src, **kw)
