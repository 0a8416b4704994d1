"""The Explain page in Chromium on a 1280x720 projector: the five steps walked with the arrow keys.

Each step: its charts drawn, no exception box, no horizontal scrollbar, its own URL, a screenshot
(saved under the system's temporary folder, fpxint-explain-screenshots/). The charts' PNG and SVG
downloads are made by plotly in the browser and checked by their first bytes. Skips without
/usr/bin/chromium unless CI is set (see tests/test_browser.py, whose server fixture this reuses).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from test_browser import _idle, _no_exception, server  # noqa: F401 - server is the module's fixture

pytestmark = pytest.mark.browser

SHOTS = Path(tempfile.gettempdir()) / "fpxint-explain-screenshots"
TITLES = ["1. A tensor becomes integers", "2. The error shrinks geometrically", "3. A layer", "4. The model",
          "5. What it costs"]
CHARTS = [1, 1, 2, 2, 2]
NO_HSCROLL = """() => {
    const main = document.querySelector('[data-testid="stMain"]');
    const doc = document.scrollingElement;
    return [doc.scrollWidth - doc.clientWidth, main ? main.scrollWidth - main.clientWidth : 0];
}"""


def _heading(page, title: str) -> None:
    page.locator('[data-testid="stMainBlockContainer"] h1', has_text=title).wait_for(timeout=120_000)


def _drawn(page, n: int) -> None:
    """n charts on the page, each drawn (an SVG inside), and no stale chart of another step left."""
    page.wait_for_function(f"""() => {{
        const c = document.querySelectorAll('[data-testid="stPlotlyChart"]');
        return c.length === {n} && Array.from(c).every(e => e.querySelector('.main-svg'));
    }}""", timeout=60_000)


def test_five_steps_with_the_arrow_keys_at_1280x720(server):
    url, browser, _ = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 720}, accept_downloads=True)
    page.goto(f"{url}/explain?step=1")
    for i, (title, n) in enumerate(zip(TITLES, CHARTS), start=1):
        _heading(page, title)
        _idle(page)
        _drawn(page, n)
        _no_exception(page)
        assert f"step={i}" in page.url
        assert page.evaluate(NO_HSCROLL) == [0, 0], f"step {i} scrolls horizontally"
        page.wait_for_timeout(500)  # plotly's last relayout
        page.screenshot(path=str(SHOTS / f"explain_step{i}.png"))
        page.locator('[data-testid="stMainBlockContainer"] h1').first.click()  # focus outside any widget
        page.keyboard.press("ArrowRight")
    page.wait_for_timeout(800)
    assert "step=5" in page.url  # Right on the last step goes nowhere
    page.keyboard.press("ArrowLeft")
    _heading(page, TITLES[3])
    _idle(page)
    _drawn(page, 2)
    _no_exception(page)
    print(f"screenshots in {SHOTS}")

    # downloads for slides, made in the browser: PNG from plotly's camera button, SVG from the one added beside it
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.hover()
    with page.expect_download(timeout=30_000) as png:
        chart.locator('.modebar-btn[data-title^="Download plot"]:not(.fpxint-svg)').click()
    assert png.value.suggested_filename == "fpxint_explain_accuracy.png"
    assert Path(png.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chart.hover()
    with page.expect_download(timeout=30_000) as svg:
        chart.locator(".fpxint-svg").click()
    assert svg.value.suggested_filename == "fpxint_explain_accuracy.svg"
    head = Path(svg.value.path()).read_text()[:300]
    assert head.startswith("<svg") and "http://www.w3.org/2000/svg" in head
    page.close()


def test_arrow_keys_in_a_slider_move_the_slider_not_the_step(server):
    url, browser, _ = server
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(f"{url}/explain?step=1&w_bits=3")
    _heading(page, TITLES[0])
    _idle(page)
    _drawn(page, 1)
    slider = page.locator('[data-testid="stSlider"] input[type=range]').first
    slider.focus()
    page.keyboard.press("ArrowRight")
    _idle(page)
    assert slider.input_value() == "2" and "step=1" in page.url and "w_bits=3" in page.url
    page.get_by_text("3-bit integer terms, and the sum of the first 2").wait_for(timeout=30_000)
    _heading(page, TITLES[0])
    _no_exception(page)
    page.close()
