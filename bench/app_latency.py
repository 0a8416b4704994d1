"""App latency: from a configuration change to the rendered result, cold start, page switching.

Part 1 drives the script headless with streamlit.testing.v1.AppTest (no browser, no websocket):
  - default view (digits_cnn, bundled test split): the first run of a new session in this process,
    then a sidebar change (weight terms 2 -> 3) to the new metrics on screen;
  - ResNet-20 with 1,000 stratified CIFAR-10 images: Run, then a change (terms 2 -> 3) and Run;
  - switching pages with a warm cache (Expand <-> Layer residuals, after one visit each).
Part 2 is the real server in Chromium (Playwright, /usr/bin/chromium), as tests/test_browser.py:
  - cold start: `streamlit run app.py` started -> page loaded -> the first metric visible, in a fresh
    browser; then again with app.py's start-up warm-up off (FPXINT_NO_WARMUP=1) as the reference;
  - a new session on the warm server: page load -> first metric (empty and warm browser cache);
  - switching pages in the browser with a warm cache: nav click -> the page's heading.
Part 3 is the Explain page (issue 15, bench/explain_latency.py), AppTest and Chromium: each step's first
load, then terms-slider moves, image changes and step changes on a warm cache (`python -m bench.app_latency
--explain` alone; `--against REV` times a git revision's sliders beside this checkout's).
Targets (issue): default view <= 2 s to the first result; page switch <= 0.5 s with a warm cache;
Explain: every slider move <= 0.3 s after the first load (the verdict uses the worst move).
Absolute times on a shared 2-core machine: the load average is printed beside them.
"""
from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import table, verdict

TITLE = "app latency: config change -> result, cold start, page switch (AppTest and Chromium)"
ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUNNING = '[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"]'
TARGET_FIRST = 2.0
TARGET_SWITCH = 0.5


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _metrics(at) -> dict:
    assert not at.exception, [e.value for e in at.exception]
    return {m.label: m.value for m in at.metric}


def apptest_part(repeat: int, smoke: bool = False) -> list[dict]:
    """smoke: the default view's first run and one page switch only (no shared data, seconds)."""
    from streamlit.testing.v1 import AppTest

    rows = []
    at = AppTest.from_file(APP, default_timeout=600)
    t = _timed(at.run)
    m = _metrics(at)
    rows.append({"what": "default view, first run of the process (imports, model, data)", "s": t,
                 "target": TARGET_FIRST, "note": next((k for k in m if k.startswith("Expanded")), "no metric")})
    if smoke:
        t = _timed(lambda: at.switch_page("fpxint/app/pages/2_residuals.py").run())
        assert not at.exception and at.title[0].value == "Layer residuals", [e.value for e in at.exception]
        rows.append({"what": "switch page (Expand -> Layer residuals), first visit, AppTest", "s": t})
        return rows
    at2 = AppTest.from_file(APP, default_timeout=600)
    t = _timed(at2.run)
    _metrics(at2)
    rows.append({"what": "default view, a new session (warm process)", "s": t, "target": TARGET_FIRST})

    def change(a, value):
        a.number_input(key="w_terms").set_value(value).run()
        if not any(f"W4x{value}" in k for k in _metrics(a)):
            a.button(key="run_expand").click().run()
        assert any(f"W4x{value}" in k for k in _metrics(a)), list(_metrics(a))
    ts = [_timed(lambda v=v: change(at2, v)) for v in (3, 1, 4)[:max(1, repeat)]]
    rows.append({"what": "default view: weight terms changed -> new metrics (new config each time)",
                 "s": min(ts), "median_s": statistics.median(ts), "n": len(ts), "target": TARGET_FIRST})

    at3 = AppTest.from_file(APP, default_timeout=600)
    at3.query_params.update({"model": "resnet20", "n_images": "1000"})
    at3.run()
    t = _timed(lambda: at3.button(key="run_expand").click().run())
    m = _metrics(at3)
    rows.append({"what": "ResNet-20, 1,000 images: Run (first: load checkpoint, decode images, FP + expanded)",
                 "s": t, "note": m.get("Time taken", "")})
    t = _timed(lambda: change(at3, 3))
    rows.append({"what": "ResNet-20, 1,000 images: weight terms 2 -> 3, Run", "s": t,
                 "note": f"in-app 'Time taken' {_metrics(at3).get('Time taken', '')}"})

    for page in ("fpxint/app/pages/2_residuals.py", "fpxint/app/pages/1_expand.py"):  # one visit each: the cache is warm after
        at2.switch_page(page).run()
    ts = []
    for _ in range(max(2, repeat)):
        for page in ("fpxint/app/pages/2_residuals.py", "fpxint/app/pages/1_expand.py"):
            ts.append(_timed(lambda p=page: at2.switch_page(p).run()))
            _metrics(at2) if page.endswith("expand.py") else None
    rows.append({"what": "switch page (Expand <-> Layer residuals), warm cache, AppTest", "s": min(ts),
                 "median_s": statistics.median(ts), "n": len(ts), "target": TARGET_SWITCH})
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _server(extra_env: dict, root: Path = ROOT):
    """`streamlit run app.py` on a free port with its own decoded-image cache; yields the URL once healthy.
    `root`: the checkout to serve (its own fpxint first on the path), e.g. an earlier revision to compare with."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cache = tempfile.mkdtemp(prefix="fpxint-bench-cache-")
    log = open(Path(cache) / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                            cwd=root, env={**os.environ, "FPXINT_CACHE": cache, "PYTHONPATH": str(root),
                                           **extra_env}, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("streamlit exited") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def browser_part(repeat: int, warmup: bool = True) -> list[dict]:
    """The real server in Chromium. warmup=False starts it with FPXINT_NO_WARMUP=1 (app.py's start-up
    warm-up off) and measures the cold start only: the same run's reference for what the warm-up buys."""
    from playwright.sync_api import sync_playwright

    rows, tag = [], "" if warmup else " [FPXINT_NO_WARMUP=1]"
    t0 = time.perf_counter()
    with _server({} if warmup else {"FPXINT_NO_WARMUP": "1"}) as url, sync_playwright() as pw:
        t_up = time.perf_counter() - t0
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        t_browser = time.perf_counter() - t0 - t_up
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        t1 = time.perf_counter()
        page.goto(url)  # returns at the load event: Streamlit's JavaScript is loaded, the app starts
        t_load = time.perf_counter() - t1
        page.wait_for_selector('[data-testid="stMetric"]', timeout=300_000)
        t_first = time.perf_counter() - t1
        rows.append({"what": "cold start: server start -> health" + tag, "s": t_up,
                     "note": "includes app.py's start-up warm-up" if warmup else ""})
        rows.append({"what": "cold start: page load -> first metric (first session of the server)" + tag,
                     "s": t_first, "target": TARGET_FIRST,
                     "note": "fresh browser, empty cache; from navigation start"})
        rows.append({"what": "cold start: page loaded (load event) -> first metric" + tag, "s": t_first - t_load,
                     "target": TARGET_FIRST, "note": f"the load event came {t_load:.2f} s after navigation start"})
        rows.append({"what": "cold start: server start + page load -> first metric" + tag,
                     "s": t_up + t_first, "note": f"Chromium launch {t_browser:.1f} s not counted"})
        if not warmup:
            browser.close()
            return rows
        fresh = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        t1 = time.perf_counter()
        fresh.goto(url)
        t_load = time.perf_counter() - t1
        fresh.wait_for_selector('[data-testid="stMetric"]', timeout=300_000)
        rows.append({"what": "warm server, new visitor (empty browser cache) -> first metric",
                     "s": time.perf_counter() - t1, "target": TARGET_FIRST,
                     "note": f"from navigation start; {time.perf_counter() - t1 - t_load:.2f} s from the load event"})
        page2 = browser.new_page(viewport={"width": 1400, "height": 900})
        ts = []
        for _ in range(max(1, repeat)):
            t1 = time.perf_counter()
            page2.goto(url)
            page2.wait_for_selector('[data-testid="stMetric"]', timeout=300_000)
            ts.append(time.perf_counter() - t1)
        rows.append({"what": "warm server, new page load (browser cache warm) -> first metric", "s": min(ts),
                     "median_s": statistics.median(ts), "n": len(ts), "target": TARGET_FIRST})
        nav = [("Layer residuals", "Layer residuals"), ("Expand", "Expand")]
        for link, heading in nav:  # first visits: warm the cache
            page2.locator('[data-testid="stSidebarNav"] a', has_text=link).first.click()
            page2.get_by_role("heading", name=heading).first.wait_for(timeout=120_000)
            page2.wait_for_timeout(1500)
        ts = []
        for _ in range(max(2, repeat)):
            for link, heading in nav:
                page2.wait_for_timeout(500)
                t1 = time.perf_counter()
                page2.locator('[data-testid="stSidebarNav"] a', has_text=link).first.click()
                page2.get_by_role("heading", name=heading).first.wait_for(timeout=60_000)
                if heading == "Expand":
                    page2.wait_for_selector('[data-testid="stMetric"]', timeout=60_000)
                ts.append(time.perf_counter() - t1)
        rows.append({"what": "switch page in Chromium (nav click -> heading; Expand: -> metric), warm cache",
                     "s": min(ts), "median_s": statistics.median(ts), "n": len(ts), "target": TARGET_SWITCH})
        browser.close()
    return rows


def _print(rows: list[dict]) -> None:
    for r in rows:
        if r.get("target") is not None and r.get("s") is not None:
            r["verdict"] = verdict(r.get("max_s", r["s"]) if r.get("max_s") is not None else r["s"], r["target"])
    print(table(rows, [("what", "measured", ""), ("s", "best s", ".2f"), ("median_s", "median s", ".2f"),
                       ("max_s", "worst s", ".2f"), ("n", "n", "d"), ("target", "target s", ".1f"),
                       ("verdict", "", ""), ("note", "note", "")]))


def run(opts) -> dict:
    repeat = opts.repeat or 3
    out = {"load_average_before": os.getloadavg()}
    rows = apptest_part(repeat, smoke=opts.smoke)
    if opts.smoke:  # the browser parts start servers and Chromium: tests/test_browser*.py cover those paths
        rows = [{k: v for k, v in r.items() if k != "target"} for r in rows]  # no verdict on a smoke run
        rows.append({"what": "browser and Explain parts", "note": "left out (--smoke)"})
    elif os.path.exists(CHROMIUM):
        try:
            rows += browser_part(repeat)
            rows += browser_part(repeat, warmup=False)
        except Exception as exc:  # report, do not hide
            rows.append({"what": "browser part", "note": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
    else:
        rows.append({"what": "browser part", "note": f"skipped: no {CHROMIUM}"})
    if not opts.smoke:
        from bench.explain_latency import explain_rows

        rows += explain_rows(repeat)
    out["load_average_after"] = os.getloadavg()
    _print(rows)
    print(f"load average before {out['load_average_before']}, after {out['load_average_after']}")
    out["rows"] = rows
    return out


if __name__ == "__main__":  # `python -m bench.app_latency --explain`: the Explain page's part alone
    import argparse

    args = argparse.ArgumentParser(description="app latency; --explain: the Explain page's part only")
    args.add_argument("--explain", action="store_true")
    args.add_argument("--repeat", type=int, default=3)
    args.add_argument("--against", metavar="REV", help="with --explain: also time the terms sliders on this git "
                      "revision (served from a temporary copy), interleaved with this checkout's moves")
    a = args.parse_args()
    load = os.getloadavg()
    if a.explain:
        from bench.explain_latency import explain_rows

        rows = explain_rows(a.repeat, a.against)
        _print(rows)
    else:
        from bench.run import Options

        run(Options(repeat=a.repeat))
    print(f"load average before {load}, after {os.getloadavg()}")
