"""The benchmark suite's plumbing: section registry, argument checks, interleaved timing, tables."""
import importlib

import pytest

from bench import common, run


def test_every_registered_section_has_a_title_and_run():
    for name, module in run.SECTIONS.items():
        mod = importlib.import_module(module)
        assert isinstance(mod.TITLE, str) and mod.TITLE and callable(mod.run), name


def test_parse_rejects_unknown_sections_and_bad_repeat():
    args, opts = run.parse(["--only", "expansion", "--quick", "--repeat", "2"])
    assert args.only == "expansion" and opts.quick and opts.repeat == 2
    with pytest.raises(SystemExit):
        run.parse(["--only", "nope"])
    with pytest.raises(SystemExit):
        run.parse(["--repeat", "0"])


def test_time_interleaved_counts_rounds_and_inner_calls():
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1

    def b():
        calls["b"] += 1

    t = common.time_interleaved({"a": a, "b": b}, repeat=3, warmup=1, inner={"b": 4})
    assert calls == {"a": 4, "b": 13} and t["a"].runs == 3 and t["b"].runs == 12
    assert t["a"].best_s <= t["a"].median_s and common.ratio(t["a"], t["a"]) == 1.0


def test_table_and_machine_info():
    text = common.table([{"m": "x", "r": 1.234}, {"m": "yy"}], [("m", "model", ""), ("r", "ratio", ".2f")])
    lines = text.splitlines()
    assert lines[0].split() == ["model", "ratio"] and "1.23" in lines[2] and lines[3].split() == ["yy", "-"]
    info = common.machine_info()
    assert {"cpu", "usable_cores", "torch", "torch_threads", "device"} <= set(info)
    assert common.verdict(2.0, 3.0) == "MEETS" and common.verdict(4.0, 3.0) == "MISSES"


def test_mcnemar_exact_p_values():
    from bench.matched_memory import mcnemar_p

    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(0, 5) == pytest.approx(2 / 32) and mcnemar_p(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_p(1, 9) == pytest.approx(2 * 11 / 1024)  # P(X <= 1), X ~ Bin(10, 1/2), both tails
