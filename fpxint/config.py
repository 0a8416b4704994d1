"""The one configuration object that flows from the UI, CLI and notebooks to the engine.

`ExpansionConfig` describes a whole series expansion: bits and number of terms for weights and
activations, the level (tensor / layer / model), scale granularity, grid, scale rule, which cross
terms to keep, the first/last-layer policy and per-layer overrides. It is frozen (hashable, so the
app can cache results by it), validates itself with messages that name the allowed values, and
round-trips through JSON (share links, exports).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_BITS = 8  # terms are stored as int8
MAX_TERMS = 16

LEVELS = ("tensor", "layer", "model")
W_GRANULARITIES = ("per_tensor", "per_channel")
A_GRANULARITIES = ("per_tensor", "per_sample", "per_token")
GRIDS = ("symmetric", "full", "asymmetric", "auto")  # auto: unsigned [0, 2^b-1] rows where >= 0
SCALE_RULES = ("max", "mse", "fixed")
TRUNCATIONS = ("full", "total_order", "weight_only")
FIRST_LAST = ("same", "8bit", "fp")
MODES = ("simulate", "integer")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {', '.join(allowed)}")


def check_bits(bits: Any, name: str = "bits") -> int:
    """Validates a bit width (1..8) and returns it as int."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"{name}={bits!r} is not allowed; bits per term must be an integer 1..{MAX_BITS}")
    return bits


def check_terms(terms: Any, name: str = "terms") -> int:
    """Validates a number of terms (1..16) and returns it as int."""
    if isinstance(terms, bool) or not isinstance(terms, int) or not 1 <= terms <= MAX_TERMS:
        raise ValueError(f"{name}={terms!r} is not allowed; the number of terms must be an integer 1..{MAX_TERMS}")
    return terms


@dataclass(frozen=True)
class LayerOverride:
    """Per-layer settings that replace the config's defaults for one named layer.

    `fp=True` leaves the layer in full precision. Fields left as None inherit from the config.
    """

    w_bits: int | None = None
    w_terms: int | None = None
    a_bits: int | None = None
    a_terms: int | None = None
    fp: bool = False

    def __post_init__(self) -> None:
        for name in ("w_bits", "a_bits"):
            if getattr(self, name) is not None:
                check_bits(getattr(self, name), name)
        for name in ("w_terms", "a_terms"):
            if getattr(self, name) is not None:
                check_terms(getattr(self, name), name)
        if not isinstance(self.fp, bool):
            raise ValueError(f"fp={self.fp!r} is not allowed; use True or False")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v is not False}


@dataclass(frozen=True)
class LayerSpec:
    """The resolved settings of one layer (config defaults + policy + override)."""

    w_bits: int
    w_terms: int
    a_bits: int
    a_terms: int
    fp: bool = False


@dataclass(frozen=True)
class ExpansionConfig:
    """How to expand a model into a sum of low-bit integer terms.

    Example:
        >>> cfg = ExpansionConfig(w_bits=4, w_terms=2, a_bits=4, a_terms=2, level="layer")
        >>> ExpansionConfig.from_json(cfg.to_json()) == cfg
        True
    """

    w_bits: int = 4
    w_terms: int = 2
    a_bits: int = 4
    a_terms: int = 2
    level: str = "layer"
    w_granularity: str = "per_channel"
    a_granularity: str = "per_sample"
    w_grid: str = "symmetric"
    # asymmetric activations by evidence (docs/RESULTS.md, "Activation grid"): post-ReLU inputs waste
    # the symmetric grid's sign, and 2^b levels beat 2^b - 1 on signed residuals; weights stay symmetric
    a_grid: str = "asymmetric"
    scale_rule: str = "max"
    truncation: str = "full"
    order: int | None = None
    first_last: str = "same"
    overrides: Any = field(default_factory=tuple)  # stored as a sorted tuple of (name, LayerOverride)
    fold_bn: bool = True
    mode: str = "simulate"

    def __post_init__(self) -> None:
        check_bits(self.w_bits, "w_bits")
        check_bits(self.a_bits, "a_bits")
        check_terms(self.w_terms, "w_terms")
        check_terms(self.a_terms, "a_terms")
        _check_choice("level", self.level, LEVELS)
        _check_choice("w_granularity", self.w_granularity, W_GRANULARITIES)
        _check_choice("a_granularity", self.a_granularity, A_GRANULARITIES)
        _check_choice("w_grid", self.w_grid, GRIDS)
        _check_choice("a_grid", self.a_grid, GRIDS)
        _check_choice("scale_rule", self.scale_rule, SCALE_RULES)
        _check_choice("truncation", self.truncation, TRUNCATIONS)
        _check_choice("first_last", self.first_last, FIRST_LAST)
        _check_choice("mode", self.mode, MODES)
        if self.order is not None and (isinstance(self.order, bool) or not isinstance(self.order, int)
                                       or not 2 <= self.order <= 2 * MAX_TERMS):
            raise ValueError(f"order={self.order!r} is not allowed; the total order K (keep i + j <= K) "
                             f"must be an integer 2..{2 * MAX_TERMS}, or None for max(w_terms, a_terms) + 1")
        if not isinstance(self.fold_bn, bool):
            raise ValueError(f"fold_bn={self.fold_bn!r} is not allowed; use True or False")
        for grid_name in ("w_grid", "a_grid"):
            bits_name = grid_name[0] + "_bits"
            if getattr(self, grid_name) == "auto" and getattr(self, bits_name) < 2:
                raise ValueError(f"{grid_name}='auto' needs {bits_name} >= 2; use 'symmetric' (binary grid {{-1, +1}})")
            if getattr(self, grid_name) == "full" and getattr(self, bits_name) < 2:
                raise ValueError(f"{grid_name}='full' needs {bits_name} >= 2 (the 1-bit full grid {{-1, 0}} "
                                 "cannot converge); use 'symmetric' (binary grid {-1, +1}) or 'asymmetric'")
        if self.scale_rule == "fixed" and {"asymmetric", "auto"} & {self.w_grid, self.a_grid}:
            raise ValueError("scale_rule='fixed' is defined for the 'symmetric' and 'full' grids only; "
                             "use scale_rule='max' with the asymmetric grid")
        object.__setattr__(self, "overrides", _normalize_overrides(self.overrides))

    # ----- derived settings -------------------------------------------------------------------
    @property
    def expands_activations(self) -> bool:
        """False when activations stay in FP (tensor level or weight-only truncation)."""
        return self.level != "tensor" and self.truncation != "weight_only"

    @property
    def total_order(self) -> int:
        return self.order if self.order is not None else max(self.w_terms, self.a_terms) + 1

    def layer_spec(self, name: str, position: str | None = None) -> LayerSpec:
        """Resolves the settings of layer `name`; position is "first", "last" or None."""
        spec = LayerSpec(self.w_bits, self.w_terms, self.a_bits, self.a_terms)
        if position in ("first", "last"):
            if self.first_last == "fp":
                spec = dataclasses.replace(spec, fp=True)
            elif self.first_last == "8bit":
                spec = LayerSpec(8, 1, 8, 1)
        ov = dict(self.overrides).get(name)
        if ov is not None:
            spec = LayerSpec(
                ov.w_bits if ov.w_bits is not None else spec.w_bits,
                ov.w_terms if ov.w_terms is not None else spec.w_terms,
                ov.a_bits if ov.a_bits is not None else spec.a_bits,
                ov.a_terms if ov.a_terms is not None else spec.a_terms,
                fp=ov.fp,
            )
        return spec

    def replace(self, **changes: Any) -> "ExpansionConfig":
        return dataclasses.replace(self, **changes)

    def with_terms(self, k: int) -> "ExpansionConfig":
        """The same config with k terms on both sides (and per-layer term overrides capped at k)."""
        ovs = {n: dataclasses.replace(o, w_terms=min(o.w_terms, k) if o.w_terms else None,
                                      a_terms=min(o.a_terms, k) if o.a_terms else None)
               for n, o in self.overrides}
        return dataclasses.replace(self, w_terms=k, a_terms=k, overrides=ovs)

    # ----- serialization ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["overrides"] = {name: ov.to_dict() for name, ov in self.overrides}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ExpansionConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; allowed keys: {', '.join(sorted(known))}")
        return cls(**dict(d))

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, **kw)

    @classmethod
    def from_json(cls, s: str) -> "ExpansionConfig":
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"config is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError("config JSON must be an object")
        return cls.from_dict(d)

    def label(self) -> str:
        """Short human label, e.g. 'W4x2 A4x2 layer'."""
        a = "AFP" if not self.expands_activations else f"A{self.a_bits}x{self.a_terms}"
        trunc = "" if self.truncation == "full" else f" {self.truncation}"
        return f"W{self.w_bits}x{self.w_terms} {a} {self.level}{trunc}"


def _normalize_overrides(ov: Any) -> tuple[tuple[str, LayerOverride], ...]:
    if ov is None:
        return ()
    items = ov.items() if isinstance(ov, Mapping) else ov
    out = {}
    try:
        for name, o in items:
            if isinstance(o, Mapping):
                o = LayerOverride(**o)
            if not isinstance(o, LayerOverride):
                raise ValueError(f"override for {name!r} must be a LayerOverride or a dict, got {type(o).__name__}")
            out[str(name)] = o
    except TypeError as e:
        raise ValueError(f"overrides must map layer names to LayerOverride / dict: {e}") from None
    return tuple(sorted(out.items()))
