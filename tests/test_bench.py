"""The benchmark suite: section registry, argument checks, interleaved timing, tables, and every section and
script run in smoke mode (tiny inputs) so that a renamed engine function fails here, not months later."""
import importlib
import json
from pathlib import Path

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


# ----- smoke: every section and script still runs against today's engine (timings are not looked at) -----
def test_every_section_runs_in_smoke_mode(tmp_path, capsys):
    """`python -m bench --smoke`: tiny inputs, built-in model, one round; its correctness checks must hold."""
    out = tmp_path / "bench"
    assert run.main(["--smoke", "--out", str(out), "--json", str(tmp_path / "raw" / "r.json")]) == 0
    res = json.loads((out / "latest.json").read_text())
    assert json.loads((tmp_path / "raw" / "r.json").read_text()) == res  # --json: the same results, atomically
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["r.json"]
    assert all(len(sec["load_average_end"]) == 3 for sec in res["sections"].values())
    assert res["options"]["smoke"] and set(res["sections"]) == set(run.SECTIONS)
    s = res["sections"]
    assert s["expansion"]["rows"] and all(r["identical"] and r["public_same"] for r in s["expansion"]["rows"])
    assert s["gemm"]["rows"] and all(r["exact"] for r in s["gemm"]["rows"])
    for name in ("integer", "forward"):  # the built-in model needs no shared folder: nothing may be skipped
        assert s[name]["rows"] and s[name]["skipped"] == [], (name, s[name]["skipped"])
    assert all(r["same_as_float64"] for r in s["integer"]["rows"])
    rows = s["peers"]["models"]["digits_cnn"]["rows"]
    ours = [r for r in rows if r["peer"].startswith(("fpxint", "rtn"))]
    assert len(ours) == 3 and all("error" not in r and r["quantized"].startswith("4/4 ") and r["top1"] > 50 for r in ours)
    assert [r for r in s["app_latency"]["rows"] if r.get("s") is not None]
    lm = s["lm_first"]  # SmolLM2 on 16 tokens, or skipped with the reason (package or shared text missing)
    assert lm["skipped"] or (lm["rows"][0]["served_from_cache"] is not None and 1 < lm["rows"][0]["configs"][0]["ppl"])
    assert sorted(p.name for p in out.iterdir()) == sorted(["latest.json", next(out.glob("bench-*.json")).name])


def test_smoke_results_go_to_a_temporary_folder_by_default():
    args, opts = run.parse(["--smoke"])
    assert opts.smoke and opts.repeat == 1 and args.out.name.startswith("fpxint-bench-smoke-")
    args.out.rmdir()  # created empty by parse
    with pytest.raises(SystemExit):
        run.parse(["--smoke", "--quick"])


def test_scripts_outside_the_sections_import_and_their_pure_parts_run(capsys):
    """The stand-alone scripts (python -m bench.X): each imports; the table writers read the committed raw
    outputs; matched_memory's paired comparison runs on the built-in model."""
    for path in sorted(Path(run.ROOT, "bench").glob("[!_]*.py")):  # not __main__: it runs the suite
        importlib.import_module(f"bench.{path.stem}")
    from bench import lm_grid, matched_memory, results_figures

    for model in results_figures.GRIDS:
        if (results_figures.RESULTS / f"{results_figures.GRIDS[model]}.csv").is_file():
            assert results_figures.section(model).startswith(f"#### {model}: ")
    assert results_figures.fp_bops("digits_cnn") > 0
    lm_grid.tables()
    cands = [c for c in matched_memory.CANDIDATES if not c[0].startswith("quanto")]  # optional package
    rows = matched_memory.compare("digits_cnn", 32, cands)
    assert [r["config"] for r in rows] == [c[0] for c in cands] and all(r["images"] == 32 for r in rows)
    assert all(r["mcnemar_p"] <= 1.0 for r in rows[1:])


def test_results_tables_are_the_output_of_bench_table_on_their_raw_files(capsys):
    """Every RESULTS table marked `<!-- python -m bench --table FILE: section S -->` is, verbatim, what that
    command prints from the committed FILE: the table cannot drift from its raw data."""
    import re

    text = (run.ROOT / "docs" / "RESULTS.md").read_text()
    marked = re.findall(r"<!-- python -m bench --table (\S+): section (\w+) -->", text)
    assert {f for f, _ in marked} >= {"docs/results/bench_expansion.json", "docs/results/bench_integer_load.json",
                                      "docs/results/bench_integer.json"}
    for path in sorted({f for f, _ in marked}):
        assert run.main(["--table", str(run.ROOT / path)]) == 0
        printed = capsys.readouterr().out.replace(str(run.ROOT / path), path)
        blocks = {m.group(1): m.group(0).strip() for m in re.finditer(
            r"<!-- python -m bench --table \S+: section (\w+) -->.*?(?=\n<!--|\Z)", printed, re.S)}
        for f, section in marked:
            if f == path:
                assert blocks[section] in text, (path, section)


def test_queue_sweep_resumes_instead_of_overwriting(tmp_path):
    """A second queue run into the same file skips the rows it holds and keeps them; a file measured on other
    images (another FP) is refused rather than mixed into one table."""
    from bench import queue_sweep as q

    plan = q.plan("i12-w8")
    assert [c.label() for *_, c in plan] == [f"W8x{k} A8x{k} layer" for k in (1, 2, 3, 4)]
    assert all(c.a_grid == "symmetric" and c.first_last == "same" for *_, c in plan)
    prefix, cfg = tmp_path / plan[0][2], plan[0][3]
    assert not q._done(prefix, cfg, None) and q._resume(prefix, 1300, 82.0) is None
    q._write(prefix, {"n_images": 1300, "fp_top1": 82.0, "rows": [{"label": cfg.label(), "config": cfg.to_json()}]})
    assert q._done(prefix, cfg, None) and not q._done(prefix, plan[1][3], None)
    assert q._resume(prefix, 1300, 82.0)["rows"][0]["label"] == cfg.label()
    with pytest.raises(SystemExit, match="move it aside"):
        q._resume(prefix, 1299, 82.0)
    with pytest.raises(SystemExit, match="move it aside"):
        q._resume(prefix, 1300, 81.9)
