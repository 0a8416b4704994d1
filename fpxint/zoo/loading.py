"""Loading registered models with their weights, user checkpoints and TorchScript archives.

Every failure becomes a :class:`ModelLoadError` with a one-line message naming the file and the
reason. Checkpoints are read with ``torch.load(weights_only=True)`` or safetensors, never by
unpickling arbitrary objects; downloads happen only when the caller opts in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fpxint.zoo.paths import hub_checkpoint_dir
from fpxint.zoo.registry import WEIGHTS_DIR, ModelLoadError, ModelSpec, get_spec

__all__ = ["LoadedModel", "load_model", "load_torchscript"]

PathLike = str | os.PathLike
_PREFIXES = ("module.", "_orig_mod.")  # added by nn.DataParallel / DDP and by torch.compile
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "ema")
# No trained network has parameters near this; products of two such values already overflow float32
# (3.4e38), so a checkpoint holding them would only come out as NaN / Inf logits.
MAX_ABS_VALUE = 1e20


@dataclass
class LoadedModel:
    """A model in eval mode with the facts needed to report on it.

    Attributes:
        model: The network, in eval mode, on the requested device.
        spec: Its registry entry (for user weights: with ``source`` set to the file).
        trained: False when it carries random weights.
        weights_source: Where the weights came from (a path or a URL), or ``"random init"``.
        note: A human-readable remark, e.g. why the model is untrained.
    """

    model: nn.Module
    spec: ModelSpec
    trained: bool
    weights_source: str
    note: str = ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:160]


def _not_checkpoint(path: Path, why: str) -> ModelLoadError:
    return ModelLoadError(f"not a PyTorch or safetensors checkpoint: {path} ({why})")


def _is_safetensors(path: Path) -> bool:
    # safetensors layout: 8-byte little-endian header length, then a JSON object.
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Finds the tensor dict in a checkpoint: plain, or under a wrapper key like ``state_dict``."""
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise _not_checkpoint(path, f"holds a {type(obj).__name__}, not a state_dict")
    odd = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise _not_checkpoint(path, f"no state_dict found; top-level keys: {', '.join(map(str, list(obj)[:6]))}")
    state = {}
    for key, value in obj.items():
        for prefix in _PREFIXES:
            key = key.removeprefix(prefix)
        state[key] = value
    return state


def _read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Reads a ``.safetensors`` or ``torch.save`` state_dict (wrappers and prefixes removed)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise _not_checkpoint(path, "empty file")
    if _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return _unwrap(load_file(str(path), device="cpu"), path)
        except ModelLoadError:
            raise
        except Exception as exc:  # safetensors raises its own error type for truncated files
            raise _not_checkpoint(path, f"broken safetensors file: {_first_line(exc)}") from None
    if _is_torchscript(path):
        raise ModelLoadError(f"{path} is a TorchScript archive, not a state_dict: load it with load_torchscript()")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing cleanly
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        # torch words it "Unsupported global: GLOBAL x" or "unsupported GLOBAL x whose module ... is blocked"
        found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", text)
        if found:
            raise ModelLoadError(
                f"refusing to unpickle {path}: it holds a pickled {found.group(1)}, not just tensors "
                "(save model.state_dict() instead, or export TorchScript)"
            ) from None
        detail = re.search(r"WeightsUnpickler error: \s*(.+)", text)
        if detail:
            why = f"unpickling failed: {detail.group(1).strip()}"
        elif isinstance(exc, (OSError, EOFError)) or "central directory" in text or "failed reading zip" in text:
            why = "truncated or damaged: the file ends before its data does"  # torch says "[Errno 22] Invalid argument"
        elif isinstance(exc, KeyError):  # the legacy loader's magic-number lookup found garbage
            why = "unrecognized file format"
        else:
            why = _first_line(exc)
        raise _not_checkpoint(path, why) from None
    return _unwrap(obj, path)


def _examples(keys: list[str]) -> str:
    return f" (e.g. {keys[0]})" if keys else ""


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Loads ``state`` strictly, turning every mismatch into one readable line."""
    expected = model.state_dict()
    # BatchNorm fills a missing num_batches_tracked itself (checkpoints from torch < 0.4.1 lack it).
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {list(v.shape)} vs model {list(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        message = (
            f"checkpoint does not match {name}: {len(missing)} missing keys{_examples(missing)}, "
            f"{len(unexpected)} unexpected{_examples(unexpected)}"
        )
        if shapes:
            message += f", {len(shapes)} shape mismatches (e.g. {shapes[0]})"
        raise ModelLoadError(message)
    _check_values(state, expected, name)
    model.load_state_dict(state, strict=False)  # strict=False only tolerates num_batches_tracked


def _check_values(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], name: str) -> None:
    """Refuses integer tensors where the model has floats (load_state_dict would cast them silently:
    a quantized or mis-saved checkpoint then scores like chance) and non-finite or overflowing values."""
    for key, value in state.items():
        want = expected[key]
        if want.is_floating_point() and not value.is_floating_point():
            raise ModelLoadError(f"checkpoint for {name} holds {str(value.dtype).removeprefix('torch.')} tensors where "
                                 f"the model has {str(want.dtype).removeprefix('torch.')} (e.g. {key}): "
                                 "a quantized or wrongly saved state_dict; save the float weights")
        if value.is_floating_point() and value.numel():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                raise ModelLoadError(f"checkpoint for {name} holds NaN or Inf values (e.g. in {key})")
            peak = float(value.abs().max())
            if peak > MAX_ABS_VALUE:
                raise ModelLoadError(f"checkpoint for {name} holds a value of {peak:.3g} in {key}: beyond "
                                     f"{MAX_ABS_VALUE:.0e}, where a forward pass overflows float32")


def _check_hash(path: Path) -> None:
    """Checks torch hub's convention: the name's ``-<hex>.`` suffix starts the file's sha256."""
    found = re.search(r"-([a-f0-9]{6,})\.", path.name)
    if not found:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(found.group(1)):
        raise ModelLoadError(
            f"checksum mismatch for {path}: sha256 starts {digest[:8]}, name says {found.group(1)}; delete it"
        )


def _cifar_weights(spec: ModelSpec, ckpt_dir: Path, shared_dir: PathLike | None, allow_download: bool) -> Path:
    candidates = [Path(shared_dir) / "models" / spec.dataset / spec.checkpoint] if shared_dir else []
    candidates.append(ckpt_dir / spec.checkpoint)
    for candidate in candidates:
        if candidate.is_file():
            _check_hash(candidate)
            return candidate
    target = ckpt_dir / spec.checkpoint
    if spec.url is None:
        raise ModelLoadError(f"weights for {spec.name} not found: put {spec.checkpoint} in {ckpt_dir} or in "
                             f"<shared>/models/{spec.dataset} (from {spec.source.split(',')[0]})")
    if not allow_download:
        raise ModelLoadError(
            f"weights for {spec.name} not found: put {spec.checkpoint} in {ckpt_dir} (from {spec.url}) "
            "or allow downloading"
        )
    prefix = re.search(r"-([a-f0-9]+)\.", spec.checkpoint).group(1)
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(spec.url, str(target), hash_prefix=prefix, progress=False)
    except Exception as exc:
        raise ModelLoadError(f"downloading {spec.url} failed: {_first_line(exc)}") from None
    return target


def _torchvision_weights(spec: ModelSpec, model: nn.Module, ckpt_dir: Path, allow_download: bool) -> str:
    """Loads cached or downloaded torchvision weights into ``model``; returns their source."""
    import torchvision.models as tvm

    cached = ckpt_dir / spec.checkpoint
    if cached.is_file():
        _load_into(model, _read_state_dict(cached), spec.name)
        return str(cached)
    if not allow_download:
        raise ModelLoadError(f"untrained: weights for {spec.name} are not in {ckpt_dir} and downloading is off")
    try:
        weights = tvm.get_weight(spec.weights)
        state = weights.get_state_dict(progress=False, model_dir=str(ckpt_dir), check_hash=True)
    except Exception as exc:
        raise ModelLoadError(
            f"untrained: weights for {spec.name} are not in {ckpt_dir} and downloading failed ({_first_line(exc)})"
        ) from None
    _load_into(model, state, spec.name)
    return spec.url


def load_model(
    name: str,
    weights: PathLike | None = None,
    *,
    cache_dir: PathLike | None = None,
    allow_download: bool = False,
    shared_dir: PathLike | None = None,
    device: str | torch.device = "cpu",
    allow_untrained: bool = False,
) -> LoadedModel:
    """Builds a registered model and loads its weights.

    Weights are searched in order: ``weights`` (a user ``.safetensors``/``.pt``/``.pth``/``.th``
    state_dict), the bundled file (built-in model), ``shared_dir/models/cifar10`` (CIFAR models),
    ``cache_dir``, and a download when ``allow_download``. torchvision models fall back to random
    weights with ``trained=False``; CIFAR models do so only with ``allow_untrained``.

    Args:
        name: A registry name, see :func:`list_models`.
        weights: A user checkpoint for this architecture.
        cache_dir: Checkpoint folder; default torch hub's ``<hub dir>/checkpoints``.
        allow_download: Whether a missing checkpoint may be downloaded into ``cache_dir``.
        shared_dir: The shared folder (see :func:`fpxint.zoo.paths.find_shared`).
        device: Where the model goes.
        allow_untrained: Return a randomly initialized CIFAR model instead of failing.

    Returns:
        The model in eval mode with its provenance.

    Raises:
        ModelLoadError: Unknown name, missing or broken weights, or weights of another architecture.

    Example:
        >>> loaded = load_model("resnet20", shared_dir=find_shared())
        >>> loaded.model(images).argmax(1)
    """
    spec = get_spec(name)
    model = spec.build()
    ckpt_dir = hub_checkpoint_dir(cache_dir)
    trained, note = True, ""
    if weights is not None:
        _load_into(model, _read_state_dict(weights), spec.name)
        source = str(Path(weights).expanduser())
        note = f"user weights from {source}"
        spec = dataclasses.replace(spec, published_top1=None, source=source)  # the reference is for other weights
    elif spec.family == "builtin":
        path = WEIGHTS_DIR / spec.checkpoint
        _load_into(model, _read_state_dict(path), spec.name)
        source = str(path)
    elif spec.family in ("cifar10", "imagenet"):  # pretrained weights in the shared folder or the cache
        try:
            path = _cifar_weights(spec, ckpt_dir, shared_dir, allow_download)
        except ModelLoadError as exc:
            if not allow_untrained:
                raise
            trained, source, note = False, "random init", f"untrained: {exc}"
        else:
            _load_into(model, _read_state_dict(path), spec.name)
            source = str(path)
    else:
        try:
            source = _torchvision_weights(spec, model, ckpt_dir, allow_download)
        except ModelLoadError as exc:
            if not str(exc).startswith("untrained:"):  # a broken cached file is an error, not a fallback
                raise
            trained, source, note = False, "random init", str(exc)
    return LoadedModel(model.to(device).eval(), spec, trained, source, note)


def load_torchscript(
    path: PathLike, like: str | ModelSpec | None = None, *, device: str | torch.device = "cpu"
) -> LoadedModel:
    """Loads a TorchScript archive (``torch.jit.load`` runs no Python pickles).

    Args:
        path: A file written by ``torch.jit.save``.
        like: A registered model (or spec) whose input size, normalization and classes the
            archive shares; without it those spec fields are None.
        device: Where the model goes.

    Raises:
        ModelLoadError: The file is missing, empty or not a TorchScript archive.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"TorchScript file not found: {path}")
    if path.stat().st_size == 0 or not zipfile.is_zipfile(path):
        why = "empty file" if not path.stat().st_size else "not a zip archive"
        raise ModelLoadError(f"not a TorchScript archive: {path} ({why})")
    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise ModelLoadError(f"not a TorchScript archive: {path} ({_first_line(exc)})") from None
    params = sum(p.numel() for p in model.parameters())
    provenance = dict(name=path.stem, family="user", published_top1=None, params=params, source=str(path),
                      license="unknown (user file)", checkpoint=path.name, url=None, weights=None, builder=None)
    if like is not None:
        base = like if isinstance(like, ModelSpec) else get_spec(like)
        spec = dataclasses.replace(base, **provenance)
    else:
        spec = ModelSpec(task="classification", input_size=None, num_classes=None, mean=None, std=None,
                         dataset=None, **provenance)
    return LoadedModel(model.eval(), spec, True, str(path), "TorchScript archive")
