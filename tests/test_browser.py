"""The real app in a real browser: `streamlit run app.py` driven by Playwright through Debian's Chromium.

Visits every page, changes the configuration, runs it, checks that charts render and that no
exception box appears, stops a running computation, reopens a shared link, and saves a screenshot
of each page to artifacts/screenshots/. Without /usr/bin/chromium the test skips, unless CI is set:
then a missing browser is a failure.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import under_ci

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXCEPTION = '[data-testid="stException"]'
RUNNING = '[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"]'
PAGES = [  # (nav link text, url path, charts expected after a run)
    ("Layer residuals", "residuals", 3), ("Convergence", "convergence", 2), ("Accuracy recovery", "accuracy", 2),
    ("Basis models", "basis", 5), ("Compare", "compare", 2), ("Allocate terms", "allocate", 0),
    ("Export", "export", 0),
]


def _need_browser():
    if not os.path.exists(CHROMIUM):
        if under_ci():
            pytest.fail(f"CI is set but there is no browser at {CHROMIUM}: install Debian's chromium package")
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium); with CI=true this is a failure")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if under_ci():
            pytest.fail("CI is set but the playwright Python package is missing")
        pytest.skip("the playwright Python package is not installed")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sync_playwright = _need_browser()
    port = _free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = {**os.environ, "FPXINT_CACHE": str(tmp_path_factory.mktemp("cache"))}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"streamlit exited: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            yield url, browser, log
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _idle(page, timeout: float = 90_000) -> None:
    """Waits until Streamlit has finished the current run (the running icon is gone for a moment)."""
    page.wait_for_timeout(300)
    page.wait_for_selector(RUNNING, state="detached", timeout=timeout)
    page.wait_for_timeout(300)


def _no_exception(page) -> None:
    assert page.locator(EXCEPTION).count() == 0, page.locator(EXCEPTION).first.inner_text()


def _shot(page, name: str) -> None:
    """A screenshot of the whole page: the viewport grows to the height of the content first."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate("""() => Math.max(...['stMainBlockContainer', 'stSidebarContent'].map(id => {
        const e = document.querySelector(`[data-testid="${id}"]`); return e ? e.scrollHeight + 120 : 0; }))""")
    page.set_viewport_size({"width": 1400, "height": int(min(max(height, 900), 7000))})
    page.wait_for_timeout(300)  # plotly re-lays out on resize; charts scrolled into view draw now
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'))
        .every(c => c.querySelector('.main-svg'))""", timeout=30_000)
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size({"width": 1400, "height": 900})


def _charts(page, n: int) -> None:
    if n:
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {n}", timeout=60_000)
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)  # drawn, not just mounted


def test_cold_server_link_to_a_page(server):
    """The server's first run: Streamlit's legacy pages/ routing starts the page; app.py must take over."""
    url, browser, log = server
    assert "default view computed at start-up" in log.read_text(), log.read_text()[-2000:]  # app.py's st.App hook
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    t0 = time.perf_counter()
    page.goto(f"{url}/convergence?w_bits=3")
    page.get_by_role("heading", name="Convergence").wait_for(timeout=120_000)
    print(f"page on screen {time.perf_counter() - t0:.2f} s after page load (cold server)")
    _idle(page)
    _no_exception(page)
    assert page.get_by_text("Page not found").count() == 0
    assert page.locator('[data-testid="stSidebarNav"] a').count() == 9  # the app's navigation, not pages/
    # the number input may paint its minimum (1) for a moment before the link's value: wait for the value
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid="stNumberInput"]'))
        .some(e => e.innerText.startsWith('Weight bits') && e.querySelector('input').value === '3')""", timeout=15_000)
    page.close()


def test_every_page_config_run_and_stop(server):
    url, browser, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_selector('[data-testid="stMetric"]', timeout=120_000)
    print(f"first result {time.perf_counter() - t0:.2f} s after page load (new session)")
    _idle(page)
    _no_exception(page)
    _shot(page, "1_expand_default")

    # change the configuration in the sidebar, then run it
    for label in ("Weight terms", "Activation terms"):
        page.get_by_label(label, exact=True).fill("3")
        page.get_by_label(label, exact=True).press("Enter")
        _idle(page)
    page.wait_for_url("**w_terms=3**")
    assert "a_terms=3" in page.url
    page.locator('[data-testid="stMainBlockContainer"]').get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Expanded top-1 (W4x3 A4x3 layer)").wait_for(timeout=60_000)
    _idle(page)
    _no_exception(page)
    _shot(page, "1_expand_w4x3")

    for title, path, n in PAGES:
        page.locator('[data-testid="stSidebarNav"] a', has_text=title).click()
        page.get_by_role("heading", name=title).wait_for(timeout=60_000)
        page.wait_for_url(f"**/{path}?**")
        _idle(page)
        run = page.locator('[data-testid="stMainBlockContainer"] button[kind="primary"]').first
        if n:  # on a loaded machine the page's elements arrive one by one: wait for its Run button first
            run.wait_for(timeout=60_000)
        if n and page.locator(".js-plotly-plot").count() < n and run.count():
            run.click()
            _idle(page)
        _charts(page, n)
        _no_exception(page)
        assert "w_terms=3" in page.url  # the configuration travels with every page
        _shot(page, f"{PAGES.index((title, path, n)) + 2}_{path}")
    assert page.get_by_role("button", name="HTML report (self-contained)").count() == 1

    # Stop: a long accuracy grid is interrupted and the previous results stay on screen
    page.locator('[data-testid="stSidebarNav"] a', has_text="Accuracy recovery").click()
    _idle(page)
    _charts(page, 2)
    page.get_by_label("Up to terms").fill("6")
    page.get_by_label("Up to terms").press("Enter")
    _idle(page)
    main = page.locator('[data-testid="stMainBlockContainer"]')  # the toolbar has a Stop of its own
    main.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_selector('[data-testid="stProgress"]', timeout=30_000)
    main.get_by_role("button", name="Stop", exact=True).click()
    _idle(page)
    page.get_by_text("Stopped. The results below are from the last completed run.").wait_for(timeout=10_000)
    assert page.locator(".js-plotly-plot").count() >= 2
    _no_exception(page)
    _shot(page, "9_accuracy_after_stop")
    page.close()


def test_shared_link_reproduces_the_view_quickly(server):
    url, browser, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{url}/?w_bits=3&w_terms=3&level=model")  # a new session, a configuration not computed yet
    t0 = time.perf_counter()
    page.get_by_text("Expanded top-1 (W3x3 A4x2 model)").wait_for(timeout=60_000)
    seconds = time.perf_counter() - t0
    # the latency target (2 s) is measured by `python -m bench --only app_latency`, not asserted here:
    # a timed assertion in a test fails on a loaded machine without saying anything about the app
    print(f"first result {seconds:.2f} s after page load (warm server, new configuration)")
    assert page.get_by_label("Weight bits", exact=True).input_value() == "3"
    _idle(page)
    _no_exception(page)
    page.close()


def test_dark_theme_and_invalid_config(server):
    url, browser, _ = server
    context = browser.new_context(color_scheme="dark", viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{url}/residuals?w_terms=3")
    _charts(page, 3)
    _idle(page)
    _no_exception(page)
    _shot(page, "dark_residuals")
    page.goto(f"{url}/?scale_rule=fixed&w_grid=asymmetric")
    page.get_by_text("scale_rule='fixed' is defined for the 'symmetric' and 'full' grids only").first.wait_for()
    _idle(page)
    _no_exception(page)
    _shot(page, "dark_invalid_config")
    context.close()
