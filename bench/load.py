"""Bounded load on the app: S browser sessions at once, each pressing Run on its own configuration R times.

    python -m bench.load --sessions 3 --runs 2 --images 500 --slots 2

Starts `streamlit run app.py` on 127.0.0.1 (a free port, nothing else is contacted), opens S Chromium
contexts (Playwright, /usr/bin/chromium) that each load the Expand page of ResNet-20 with a different
configuration and press Run within the same moment, R rounds. Reports: runs, failures (exception
boxes, error alerts, wrong or missing results), whether a visitor saw the queue ("Waiting for a free
slot"), and the server's peak resident memory (VmHWM of the server process) and its RSS before the
load. Each result is compared with `python -m fpxint eval` on the same configuration and images.
Everything it starts it stops; it exits by itself.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CONFIGS = [  # URL parameters of the sidebar: one configuration per session
    {"w_bits": "4", "w_terms": "2", "a_bits": "4", "a_terms": "2"},
    {"w_bits": "3", "w_terms": "3", "a_bits": "3", "a_terms": "3", "truncation": "total_order"},
    {"w_bits": "2", "w_terms": "3", "a_bits": "4", "a_terms": "2", "level": "model"},
    {"w_bits": "4", "w_terms": "1", "a_bits": "8", "a_terms": "1"},
    {"w_bits": "2", "w_terms": "4", "a_bits": "2", "a_terms": "4"},
    {"w_bits": "8", "w_terms": "1", "a_bits": "8", "a_terms": "2", "level": "tensor"},
]
CLI_FLAGS = {"w_bits": "--w-bits", "w_terms": "--w-terms", "a_bits": "--a-bits", "a_terms": "--a-terms",
             "truncation": "--truncation", "level": "--level", "mode": "--mode"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def start_server(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` on a free loopback port; returns once it answers its health check."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env={**os.environ, **env}, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("streamlit did not answer within 120 s")


def cli_result(cfg: dict, images: int, model: str = "resnet20") -> dict:
    """The CLI's top-1 and agreement for one configuration (the reference each browser result must equal)."""
    args = [sys.executable, "-m", "fpxint", "eval", model, "--limit", str(images), "--json", "-q"]
    for k, v in cfg.items():
        args += [CLI_FLAGS[k], v]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(out.stderr.strip())
    r = json.loads(out.stdout)
    return {"top1": f"{r['top1']:.2f} %", "agreement": f"{r['agreement']:.2f} %", "label": r["label"]}


async def _idle(page, timeout: float = 600_000) -> None:
    running = '[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"]'
    await page.wait_for_timeout(300)
    await page.wait_for_selector(running, state="detached", timeout=timeout)
    await page.wait_for_timeout(300)


async def _metrics(page) -> dict[str, str]:
    out = {}
    for m in await page.locator('[data-testid="stMetric"]').all():
        label = (await m.locator('[data-testid="stMetricLabel"]').inner_text()).strip()
        out[label] = (await m.locator('[data-testid="stMetricValue"]').inner_text()).strip()
    return out


async def one_run(browser, url: str, cfg: dict, images: int, start: asyncio.Barrier, seen_queue: list) -> dict:
    """A fresh browser context (a new visitor): open the view, wait for the common start, press Run, read."""
    ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await ctx.new_page()
    try:
        query = urllib.parse.urlencode({"model": "resnet20", "n_images": str(images), **cfg})
        await page.goto(f"{url}/?{query}")
        await page.get_by_role("heading", name="Expand").wait_for(timeout=300_000)
        await _idle(page)
        await start.wait()  # every session has its page ready: they all press Run now
        main = page.locator('[data-testid="stMainBlockContainer"]')
        t0 = time.perf_counter()
        await main.get_by_role("button", name="Run", exact=True).click()
        shown = main.get_by_text("Shown: the current settings")
        while not await shown.count():
            if await page.get_by_text("Waiting for a free slot").count():
                seen_queue.append(True)
            if await page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count():
                break
            await page.wait_for_timeout(100)
            if time.perf_counter() - t0 > 900:
                break
        await _idle(page)
        errors = [await e.inner_text() for e in await page.locator(
            '[data-testid="stException"], [data-testid="stAlertContentError"]').all()]
        return {"cfg": cfg, "metrics": await _metrics(page), "errors": errors, "seconds": time.perf_counter() - t0}
    finally:
        await ctx.close()


async def load(url: str, sessions: int, runs: int, images: int, server_pid: int | None = None) -> dict:
    from playwright.async_api import async_playwright

    results, seen_queue, peak_sampled = [], [], [0]

    async def sample():
        while True:
            if server_pid:
                peak_sampled[0] = max(peak_sampled[0], _status(server_pid, "VmRSS"))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for r in range(runs):
                start = asyncio.Barrier(sessions)
                cfgs = [CONFIGS[(r * sessions + s) % len(CONFIGS)] for s in range(sessions)]
                tasks = [one_run(browser, url, c, images, start, seen_queue) for c in cfgs]
                results += await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await browser.close()
            sampler.cancel()
    return {"results": results, "queue_seen": bool(seen_queue), "peak_rss_sampled": peak_sampled[0]}


def compare_with_cli(results: list, images: int) -> tuple[int, list[str]]:
    """(runs whose top-1 and agreement equal the CLI's for their configuration, one line per failure)."""
    refs: dict[str, dict] = {}
    failures, checked = [], 0
    for r in results:
        if isinstance(r, BaseException):
            failures.append(f"{type(r).__name__}: {r}")
            continue
        key = json.dumps(r["cfg"], sort_keys=True)
        if key not in refs:
            refs[key] = cli_result(r["cfg"], images)
        ref = refs[key]
        got = r["metrics"].get(f"Expanded top-1 ({ref['label']})"), r["metrics"].get("Agreement with FP")
        if r["errors"] or got != (ref["top1"], ref["agreement"]):
            failures.append(f"{r['cfg']}: errors {r['errors'][:1]}, got {got}, CLI {ref['top1'], ref['agreement']}")
        else:
            checked += 1
    return checked, failures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=3, help="browser sessions at once (at most 8)")
    ap.add_argument("--runs", type=int, default=2, help="rounds: each session opens the page and presses Run")
    ap.add_argument("--images", type=int, default=500, help="CIFAR-10 test images per run (ResNet-20)")
    ap.add_argument("--slots", type=int, default=0, help="FPXINT_MAX_CONCURRENT for the server (0: its default)")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args()
    if not 1 <= args.sessions <= 8 or not 1 <= args.runs <= 10:
        ap.error("--sessions 1..8 and --runs 1..10: this is a bounded load, not a stress tool")
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"fpxint-load-{os.getpid()}.log"
    env = {"FPXINT_MAX_CONCURRENT": str(args.slots)} if args.slots else {}
    proc, url = start_server(env, log)
    try:
        idle_rss = _status(proc.pid, "VmRSS")
        out = asyncio.run(load(url, args.sessions, args.runs, args.images, proc.pid))
        peak = _status(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    checked, failures = compare_with_cli(out["results"], args.images)
    summary = {"sessions": args.sessions, "runs": args.runs, "images": args.images,
               "slots": args.slots or "default", "total_runs": len(out["results"]), "equal_to_cli": checked,
               "failures": failures, "queue_seen": out["queue_seen"], "server_rss_idle_mb": idle_rss / 2**20,
               "server_peak_rss_mb": peak / 2**20}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
