"""What every page reads: the `Context` the sidebar resolved this run, and the session's settings (their
defaults, allowed values and URL limits)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from .. import config as C
from ..config import ExpansionConfig
from ..data import ImageData
from ..zoo import DEFAULT_MODEL
from .loaders import DataRef, ModelRef, TextRef, redact

DEVICES = ("auto", "cpu", "cuda")
DATA_SOURCES = ("bundled", "random", "upload")
CFG_KEYS = ("w_bits", "w_terms", "a_bits", "a_terms", "level", "w_granularity", "a_granularity", "scale_rule",
            "w_grid", "a_grid", "truncation", "first_last", "mode")
_BASE = ExpansionConfig()
DEFAULTS: dict[str, Any] = {"model": DEFAULT_MODEL, "data": "bundled", "n_images": 500, "device": "auto",
                            **{k: getattr(_BASE, k) for k in CFG_KEYS}}
INT_RANGES = {"w_bits": (1, C.MAX_BITS), "a_bits": (1, C.MAX_BITS), "w_terms": (1, C.MAX_TERMS),
              "a_terms": (1, C.MAX_TERMS), "n_images": (1, 50_000)}
CHOICES = {"level": C.LEVELS, "w_granularity": C.W_GRANULARITIES, "a_granularity": C.A_GRANULARITIES,
           "scale_rule": C.SCALE_RULES, "w_grid": C.GRIDS, "a_grid": C.GRIDS, "truncation": C.TRUNCATIONS,
           "first_last": C.FIRST_LAST, "mode": C.MODES, "device": DEVICES, "data": DATA_SOURCES}
FAMILY = {"builtin": "built-in, digits", "cifar10": "CIFAR-10", "torchvision": "ImageNet, torchvision", "user": "user",
          "language": "language model"}
MAX_PARAM_CHARS = 64  # URL parameters longer than this are ignored (no value here is longer than ~20)
PAGE_PARAMS = ("step",)  # URL parameters a page owns (the Explain page's step): the sidebar keeps them
ALLOCATION_KEY = "fpxint_allocated_config"  # set by the Allocate page: ExpansionConfig JSON with per-layer overrides


@dataclass
class Context:
    """What the sidebar resolved this run: the model, the images, the one config, the device."""

    model_name: str
    mref: ModelRef | None = None       # the model cache key
    loaded: Any = None                 # fpxint.zoo.LoadedModel
    dref: DataRef | TextRef | None = None  # the images (or a language model's text): part of every cache key
    data: ImageData | None = None
    cfg: ExpansionConfig | None = None
    device: str | None = None
    device_label: str = ""
    errors: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.loaded is not None and self.data is not None and self.cfg is not None and self.device is not None

    @property
    def trained(self) -> bool:
        return bool(self.loaded is not None and self.loaded.trained)

    @property
    def labeled(self) -> bool:
        return self.data is not None and self.data.labels is not None

    @property
    def cheap(self) -> bool:
        """The built-in model is tiny: its default views may compute on page load."""
        return self.loaded is not None and self.loaded.spec.family == "builtin"

    @property
    def cfg_json(self) -> str | None:
        return self.cfg.to_json() if self.cfg is not None else None

    @property
    def accuracy_off(self) -> str | None:
        """Why accuracy features are off (None when they are on)."""
        if self.loaded is not None and not self.loaded.trained:
            return (f"{self.model_name} is untrained (random weights: {redact(self.loaded.note) or 'no checkpoint'}); "
                    "accuracy means nothing here. Error and convergence analysis still work on random probe inputs.")
        return None

    def describe(self) -> str:
        parts = [self.model_name + ("" if self.loaded is None else
                                    f" ({FAMILY.get(self.loaded.spec.family, '')}{'' if self.trained else ', UNTRAINED'})")]
        if self.data is not None:
            parts.append(redact(self.data.source))
        if self.cfg is not None:
            parts.append(f"{self.cfg.label()}, {self.cfg.mode}")
        if self.device_label:
            parts.append(self.device_label)
        return " · ".join(parts)


def context() -> Context:
    """The context the sidebar built in this run (the app's entry renders the sidebar before the page)."""
    return st.session_state.get("_ctx") or Context(DEFAULT_MODEL, errors=("the sidebar has not run yet",))
