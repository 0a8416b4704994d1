"""Three visitors press Run at the same moment on different configurations (three Chromium contexts
against one `streamlit run app.py`): every result equals the CLI's for its configuration, nobody sees
an exception, and with two slots the third visitor is shown the queue. Uses bench.load's driver."""
from __future__ import annotations

import asyncio
import os

import pytest

from conftest import under_ci
from bench.load import CHROMIUM, compare_with_cli, load, start_server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        if under_ci():
            pytest.fail(f"CI is set but there is no browser at {CHROMIUM}")
        pytest.skip(f"no browser at {CHROMIUM}")
    pytest.importorskip("playwright")
    env = {"FPXINT_CACHE": str(tmp_path_factory.mktemp("cache")), "FPXINT_MAX_CONCURRENT": "2",
           "FPXINT_NO_WARMUP": "1"}
    proc, url = start_server(env, tmp_path_factory.mktemp("streamlit") / "server.log")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_three_visitors_run_at_once_and_get_the_clis_results(busy_server, shared_dir):
    out = asyncio.run(load(busy_server, sessions=3, runs=1, images=200))
    checked, failures = compare_with_cli(out["results"], 200)
    assert not failures, failures
    assert checked == 3
    assert out["queue_seen"]  # two slots, three runs: one visitor waited, and was told so
