"""fpxint.cli.args: the options shared by the commands, parsed into the one ExpansionConfig, and strict JSON."""
from __future__ import annotations

import argparse
import json
import math

import pytest

from fpxint import ExpansionConfig, LayerOverride
from fpxint.cli.args import (Parser, UsageError, add_config_options, add_run_options, check_run_args,
                             config_from_args, config_given, dumps, int_list, pairs)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = Parser(prog="t")
    add_config_options(p)
    add_run_options(p)
    return p.parse_args(argv)


def test_lists_and_pairs_parse_and_refuse_garbage():
    assert int_list("1, 2,3,") == [1, 2, 3]
    assert pairs("4:4, 2:8") == [(4, 4), (2, 8)]
    for bad, fn in (("1,x", int_list), ("4-4", pairs), ("4:", pairs)):
        with pytest.raises(argparse.ArgumentTypeError):
            fn(bad)


def test_no_option_gives_the_default_config_and_counts_as_not_given():
    args = _parse([])
    assert config_from_args(args) == ExpansionConfig() and not config_given(args)


def test_each_option_changes_exactly_its_field():
    args = _parse(["--w-bits", "3", "--a-terms", "4", "--level", "tensor", "--first-last", "8bit"])
    want = ExpansionConfig().replace(w_bits=3, a_terms=4, level="tensor", first_last="8bit")
    assert config_from_args(args) == want and config_given(args)


def test_options_override_a_config_file_and_overrides_merge(tmp_path):
    base = ExpansionConfig(w_bits=2, w_terms=3, overrides={"a": LayerOverride(fp=True)})
    f = tmp_path / "cfg.json"
    f.write_text(base.to_json())
    args = _parse(["--config", str(f), "--w-terms", "5", "--override", "b:w_bits=8"])
    got = config_from_args(args)
    assert got == base.replace(w_terms=5, overrides={"a": LayerOverride(fp=True), "b": LayerOverride(w_bits=8)})
    # an expansion's JSON (written by `expand`) holds its config under "config"
    f.write_text(json.dumps({"format": "fpxint-expanded/2", "config": base.to_dict()}))
    assert config_from_args(_parse(["--config", str(f)])) == base


@pytest.mark.parametrize("text", ["not-a-file-or-json", "{broken", "[1, 2]"])
def test_a_bad_config_is_one_usage_error(text):
    with pytest.raises(UsageError):
        config_from_args(_parse(["--config", text]))


@pytest.mark.parametrize("argv", [["--limit", "0"], ["--batch-size", "0"], ["--threads", "0"]])
def test_run_options_below_one_are_refused(argv):
    with pytest.raises(UsageError, match=argv[0]):
        check_run_args(_parse(argv))


def test_dumps_writes_strict_json():
    text = dumps({"sqnr": math.inf, "x": [math.nan, 1.5], "ok": -0.25})
    assert json.loads(text) == {"sqnr": None, "x": [None, 1.5], "ok": -0.25}
    assert "Infinity" not in text and "NaN" not in text
