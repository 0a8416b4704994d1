"""ExpansionConfig (fpxint/config.py): validation with messages naming the allowed values, JSON round trip."""
import pytest

from fpxint import ExpansionConfig


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
