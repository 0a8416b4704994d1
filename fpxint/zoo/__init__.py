"""Model zoo: one registry of models (built-in digits CNN, CIFAR-10 ResNets, torchvision
classifiers) and loaders that explain every failure in one line."""

from fpxint.zoo.loading import LoadedModel, load_model, load_torchscript
from fpxint.zoo.paths import cache_dir, find_shared
from fpxint.zoo.registry import (DEFAULT_MODEL, ModelLoadError, ModelSpec, get_spec, list_models, model_family,
                                 model_names, models_table)

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelLoadError",
    "ModelSpec",
    "cache_dir",
    "find_shared",
    "get_spec",
    "list_models",
    "model_family",
    "model_names",
    "load_model",
    "load_torchscript",
    "models_table",
]
