"""ExpansionConfig (fpxint/config.py): validation with messages naming the allowed values, JSON round trip of
every valid config, per-layer resolution (first / last policy, overrides), labels."""
import pytest
from hypothesis import given, settings, strategies as st

from fpxint import ExpansionConfig, LayerOverride
from fpxint.config import LayerSpec


@pytest.mark.parametrize("kwargs,match", [
    (dict(w_bits=0), "w_bits=0 is not allowed; bits per term must be an integer 1..8"),
    (dict(a_bits=9), "a_bits=9"), (dict(w_terms=0), "w_terms=0"), (dict(a_terms=17), "1..16"),
    (dict(level="net"), "tensor, layer, model"), (dict(truncation="diag"), "full, total_order, weight_only"),
    (dict(first_last="int8"), "same, 8bit, fp"), (dict(mode="fast"), "simulate, integer"),
    (dict(order=1), "total order"), (dict(w_bits=2.5), "integer 1..8"),
    (dict(overrides={"x": {"w_bits": 12}}), "w_bits=12"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExpansionConfig(**kwargs)


def test_config_json_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown config keys"):
        ExpansionConfig.from_dict({"w_bits": 4, "bogus": 1})
    with pytest.raises(ValueError, match="not valid JSON"):
        ExpansionConfig.from_json("{nope")


CHOICES = dict(level=["tensor", "layer", "model"], w_granularity=["per_tensor", "per_channel"],
               a_granularity=["per_tensor", "per_sample", "per_token"], w_grid=["symmetric", "full", "asymmetric"],
               a_grid=["symmetric", "full", "asymmetric"], scale_rule=["max", "mse"],
               truncation=["full", "total_order", "weight_only"], first_last=["same", "8bit", "fp"],
               mode=["simulate", "integer"])


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.integers(1, 16), st.integers(2, 8), st.integers(1, 16),
       st.fixed_dictionaries({k: st.sampled_from(v) for k, v in CHOICES.items()}),
       st.none() | st.integers(2, 32), st.booleans(),
       st.dictionaries(st.text(min_size=1, max_size=8), st.builds(LayerOverride, w_terms=st.none() | st.integers(1, 16),
                                                                   a_bits=st.none() | st.integers(1, 8),
                                                                   fp=st.booleans()), max_size=3))
def test_every_valid_config_round_trips_through_json(w_bits, w_terms, a_bits, a_terms, choices, order, fold_bn,
                                                     overrides):
    cfg = ExpansionConfig(w_bits=w_bits, w_terms=w_terms, a_bits=a_bits, a_terms=a_terms, order=order,
                          fold_bn=fold_bn, overrides=overrides, **choices)
    assert ExpansionConfig.from_json(cfg.to_json()) == cfg and ExpansionConfig.from_dict(cfg.to_dict()) == cfg
    assert hash(ExpansionConfig.from_json(cfg.to_json())) == hash(cfg)  # usable as a cache key
    assert cfg.total_order == (order if order is not None else max(w_terms, a_terms) + 1)


def test_layer_spec_precedence_first_last_then_override():
    cfg = ExpansionConfig(w_bits=3, w_terms=2, a_bits=5, a_terms=3, first_last="8bit",
                          overrides={"fc": LayerOverride(w_terms=4), "mid": LayerOverride(fp=True)})
    assert cfg.layer_spec("conv") == LayerSpec(3, 2, 5, 3)
    assert cfg.layer_spec("conv", "first") == LayerSpec(8, 1, 8, 1)
    assert cfg.layer_spec("fc", "last") == LayerSpec(8, 4, 8, 1)  # the override wins over the 8-bit policy
    assert cfg.layer_spec("mid").fp and not cfg.layer_spec("conv").fp
    assert cfg.replace(first_last="fp").layer_spec("conv", "last").fp


def test_with_terms_caps_override_terms_and_label_says_what_runs():
    cfg = ExpansionConfig(overrides={"a": LayerOverride(w_terms=5, a_terms=1), "b": LayerOverride(fp=True)})
    two = cfg.with_terms(2)
    assert (two.w_terms, two.a_terms) == (2, 2)
    assert dict(two.overrides)["a"] == LayerOverride(w_terms=2, a_terms=1) and dict(two.overrides)["b"].fp
    assert ExpansionConfig().label() == "W4x2 A4x2 layer"
    assert ExpansionConfig(truncation="weight_only").label() == "W4x2 AFP layer weight_only"
    assert ExpansionConfig(level="tensor", w_bits=8, w_terms=1).label() == "W8x1 AFP tensor"


@pytest.mark.parametrize("kwargs,match", [
    (dict(w_grid="auto", w_bits=1), "w_grid='auto' needs w_bits >= 2"),
    (dict(a_grid="full", a_bits=1), "a_grid='full' needs a_bits >= 2"),
    (dict(scale_rule="fixed", a_grid="asymmetric"), "'symmetric' and 'full' grids only"),
    (dict(fold_bn=1), "fold_bn=1 is not allowed"), (dict(order=True), "order=True"),
    (dict(overrides={"x": 3}), "must be a LayerOverride or a dict"),
])
def test_cross_field_rules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExpansionConfig(**kwargs)
    with pytest.raises(ValueError, match="must be an object"):
        ExpansionConfig.from_json("[1, 2]")
