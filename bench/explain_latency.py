"""App latency, the Explain page (issue 15): each step's first load, slider moves, image and step changes.

Headless (AppTest: the script's run, no browser) and in Chromium at 1280x720 against `streamlit run app.py`.
In Chromium a terms-slider move is timed inside the page, from the key press to the first frame that shows
the redrawn chart; `against` (a git revision) serves that revision too and interleaves its moves with this
checkout's, so that both see the same load and their ratio is the comparison. Run through
`python -m bench.app_latency --explain [--against REV]`; the server, targets and table are app_latency's.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.app_latency import APP, ARGS, CHROMIUM, ROOT, RUNNING, TARGET_SWITCH, _server, _timed


EXPLAIN = "fpxint/app/pages/9_explain.py"
TARGET_SLIDER = 0.3  # issue 15: every slider move of the Explain page on the built-in model, after the first load


def explain_apptest(repeat: int) -> list[dict]:
    """The Explain page headless (AppTest: the script's run, no browser): each step's first load (computing
    its part, cached by model + config), then slider moves, image changes and step changes that only read it."""
    from streamlit.testing.v1 import AppTest

    rows = []
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params["w_bits"] = "3"  # a configuration no earlier part of the bench computed
    at.run()
    firsts = []
    for step in range(1, 6):
        firsts.append(_timed(lambda s=step: (at.switch_page(EXPLAIN) if s == 1 else
                                             at.button(key="explain_next").click()).run()))
        assert not at.exception and at.title[0].value.startswith(f"{step}."), [e.value for e in at.exception]
    rows.append({"what": "Explain, first load of each step 1..5 (computes; digits_cnn, W3x2 A4x2)",
                 "s": max(firsts), "note": " / ".join(f"{t:.2f}" for t in firsts) + " s"})
    at.segmented_control(key="explain_step").set_value(1).run()
    moves = {"step 1: terms slider": ("explain_k1", 1), "step 3: terms slider": ("explain_k3", 3)}
    for what, (key, step) in moves.items():
        at.segmented_control(key="explain_step").set_value(step).run()
        ts = [_timed(lambda k=k: at.slider(key=key).set_value(k).run()) for _ in range(max(1, repeat))
              for k in (2, 3, 4, 1)]
        assert not at.exception
        rows.append({"what": f"Explain {what} moved (cached terms)", "s": min(ts), "median_s": statistics.median(ts),
                     "n": len(ts), "target": TARGET_SLIDER, "max_s": max(ts)})
    options = at.selectbox(key="explain_image").options
    ts = [_timed(lambda o=o: at.selectbox(key="explain_image").set_value(o).run()) for o in options[1:] + options[:1]]
    rows.append({"what": "Explain step 3: another input image", "s": min(ts), "median_s": statistics.median(ts),
                 "n": len(ts), "target": TARGET_SLIDER, "max_s": max(ts)})
    ts = []
    for _ in range(max(1, repeat)):
        for step in (1, 2, 3, 4, 5):
            ts.append(_timed(lambda s=step: at.segmented_control(key="explain_step").set_value(s).run()))
    rows.append({"what": "Explain: change step, warm cache (AppTest)", "s": min(ts), "median_s": statistics.median(ts),
                 "n": len(ts), "target": TARGET_SWITCH, "max_s": max(ts)})
    return rows


# Key press -> chart redrawn, timed inside the page: from the keydown event to the first animation frame after
# the chart shows the moved slider's value (a MutationObserver watches the charts' SVG text). Playwright's own
# polling of the page (tens to hundreds of ms under load) is not in it.
PROBE = """
window.__fpxintProbe = {want: null, key: null, done: null};
document.addEventListener('keydown', () => { const p = window.__fpxintProbe; if (p.want) p.key = performance.now(); }, true);
new MutationObserver(() => {
  const p = window.__fpxintProbe;
  if (!p.want || p.key === null || p.done !== null) return;
  const texts = document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle, [data-testid="stPlotlyChart"] .annotation-text');
  if (Array.from(texts).some((t) => t.textContent.includes(p.want)))
    requestAnimationFrame(() => { if (p.done === null) p.done = performance.now(); });
}).observe(document, {subtree: true, childList: true, characterData: true});
"""
SLIDER_MOVES = (("ArrowRight", 2), ("ArrowRight", 3), ("ArrowRight", 4), ("Home", 1))


def _slider_page(browser, url: str, step: int):
    """A 1280x720 page on the Explain step `step`, every part it reads computed (a first visit computes)."""
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.add_init_script(PROBE)
    page.goto(f"{url}/explain?step={step}")
    page.wait_for_selector('[data-testid="stSlider"] input[type=range]', timeout=300_000)
    page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=300_000)
    page.wait_for_selector(RUNNING, state="detached", timeout=300_000)
    return page


def _slider_move(page, key: str, want: str) -> float:
    """One key press on the terms slider -> seconds until the chart showing `want` is drawn (timed in the page)."""
    page.locator('[data-testid="stSlider"] input[type=range]').first.focus()
    page.wait_for_timeout(300)
    page.evaluate("(w) => Object.assign(window.__fpxintProbe, {want: w, key: null, done: null})", want)
    page.keyboard.press(key)
    page.wait_for_function("window.__fpxintProbe.done !== null", timeout=60_000, polling=50)
    return page.evaluate("(window.__fpxintProbe.done - window.__fpxintProbe.key) / 1000")


def _want(step: int, k: int) -> str:
    return f"and the sum of the first {k}" if step == 1 else f"{k} term{'s' if k > 1 else ''}"


@contextlib.contextmanager
def _checkout(rev: str):
    """The files of git revision `rev` in a temporary folder (git archive: the repository is only read)."""
    path = Path(tempfile.mkdtemp(prefix="fpxint-bench-rev-"))
    try:
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(path)], input=tar, check=True)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def explain_sliders(repeat: int, against: str | None = None) -> list[dict]:
    """Terms-slider key presses on steps 1 and 3 in Chromium (key -> chart redrawn). With `against` (a git
    revision), the same moves on a second server running that revision, interleaved move by move with this
    checkout's, so that both see the same machine load: the ratio is the comparison, not the absolute times."""
    from playwright.sync_api import sync_playwright

    env = {"FPXINT_SHARED": os.environ.get("FPXINT_SHARED", str(ROOT.parent / "shared"))}
    with contextlib.ExitStack() as stack:
        roots = {"this checkout": ROOT}
        if against:
            roots[against] = stack.enter_context(_checkout(against))
        urls = {name: stack.enter_context(_server(env, root)) for name, root in roots.items()}
        browser = stack.enter_context(sync_playwright()).chromium.launch(executable_path=CHROMIUM, args=ARGS)
        rows = []
        for step in (1, 3):
            pages = {name: _slider_page(browser, url, step) for name, url in urls.items()}
            ts = {name: [] for name in urls}
            for _ in range(max(1, repeat)):
                for key, k in SLIDER_MOVES:
                    for name, page in pages.items():
                        ts[name].append(_slider_move(page, key, _want(step, k)))
            for name, t in ts.items():
                rows.append({"what": f"Explain in Chromium: step {step} terms slider key -> chart redrawn"
                                     + (f" [{name}]" if against else ""),
                             "s": min(t), "median_s": statistics.median(t), "n": len(t), "target": TARGET_SLIDER,
                             "max_s": max(t), "note": "timed in the page: keydown -> first frame with the new chart"})
            if against:
                a, b = (statistics.median(t) for t in ts.values())
                rows.append({"what": f"  step {step}: median ratio this checkout / {against}", "note": f"{a / b:.2f}"})
            for page in pages.values():
                page.close()
        browser.close()
    return rows


def explain_browser(repeat: int) -> list[dict]:
    """The Explain page in Chromium at 1280x720: first load, and an arrow key -> the next step's charts drawn,
    on a warm cache (the sliders: `explain_sliders`)."""
    from playwright.sync_api import sync_playwright

    rows = []
    with _server({}) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        t1 = time.perf_counter()
        page.goto(f"{url}/explain?step=1")
        page.get_by_text("and the sum of the first 1").wait_for(timeout=300_000)
        rows.append({"what": "Explain in Chromium: page load -> step 1 chart (warm server, new visitor)",
                     "s": time.perf_counter() - t1})
        for _ in range(4):  # first visits compute each step's part: warm the cache, then come back
            page.locator('[data-testid="stMainBlockContainer"] h1').first.click()
            page.keyboard.press("ArrowRight")
            page.wait_for_timeout(300)
            page.wait_for_selector(RUNNING, state="detached", timeout=300_000)
        page.goto(f"{url}/explain?step=1")
        page.get_by_text("and the sum of the first 1").wait_for(timeout=120_000)
        titles = ["1. A tensor", "2. The error", "3. A layer", "4. The model", "5. What it costs"]
        ts = []
        for _ in range(max(1, repeat)):
            for i in range(1, 5):
                page.locator('[data-testid="stMainBlockContainer"] h1').first.click()
                page.wait_for_timeout(300)
                t1 = time.perf_counter()
                page.keyboard.press("ArrowRight")
                page.locator('[data-testid="stMainBlockContainer"] h1', has_text=titles[i]).wait_for(timeout=60_000)
                page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'))
                    .every(c => c.querySelector('.main-svg'))""", timeout=60_000)
                ts.append(time.perf_counter() - t1)
            page.goto(f"{url}/explain?step=1")
            page.get_by_text("and the sum of the first").wait_for(timeout=60_000)
        rows.append({"what": "Explain in Chromium: arrow key -> next step's charts drawn, warm cache", "s": min(ts),
                     "median_s": statistics.median(ts), "n": len(ts), "target": TARGET_SWITCH, "max_s": max(ts)})
        browser.close()
    return rows


def explain_rows(repeat: int, against: str | None = None) -> list[dict]:
    rows = explain_apptest(repeat)
    if os.path.exists(CHROMIUM):
        try:
            rows += explain_sliders(repeat, against) + explain_browser(repeat)
        except Exception as exc:  # report, do not hide
            rows.append({"what": "Explain browser part", "note": f"failed: {type(exc).__name__}: {str(exc)[:200]}"})
    return rows


