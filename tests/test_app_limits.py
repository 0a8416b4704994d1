"""The app under hostile or heavy use (AppTest): refusals before work, bad links, no server path on screen,
private per-session uploads."""
from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("FPXINT_CACHE", str(base / "fpxint-cache"))
    monkeypatch.setenv("TORCH_HOME", str(base / "torch-home"))
    for var in ("FPXINT_MAX_RUN_MB", "FPXINT_MAX_RUN_SECONDS", "FPXINT_MAX_CONCURRENT"):
        monkeypatch.delenv(var, raising=False)


def _app(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(query or {})
    return at.run()


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    """Every text a visitor can read: titles, markdown, captions, alerts, metrics, the sidebar's too."""
    parts = [e.value for kind in ("title", "markdown", "caption", "error", "warning", "info", "success")
             for e in at.get(kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(str(p) for p in parts)


def test_a_run_over_the_memory_limit_is_refused_before_it_starts(monkeypatch):
    monkeypatch.setenv("FPXINT_MAX_RUN_MB", "1")
    at = _ok(_app())  # the built-in model's view would compute on load
    err = " | ".join(e.value for e in at.error)
    assert "Run refused: this run would need about" in err and "(limit 1 MB)" in err
    assert "reduce the number of images (sidebar)" in err
    assert not at.metric  # nothing was computed


def test_a_run_over_the_time_limit_is_refused(monkeypatch):
    monkeypatch.setenv("FPXINT_MAX_RUN_SECONDS", "0.000001")
    at = _ok(_app())
    assert "Run refused" in " ".join(e.value for e in at.error) and "(limit 0 s)" in " ".join(e.value for e in at.error)


def test_a_run_within_the_limits_computes(monkeypatch):
    monkeypatch.setenv("FPXINT_MAX_RUN_MB", "4000")
    at = _ok(_app())
    assert not at.error and at.metric


def test_a_malformed_limit_warns_and_the_defaults_apply(monkeypatch):
    monkeypatch.setenv("FPXINT_MAX_RUN_MB", "lots")
    at = _ok(_app())
    assert any("FPXINT_MAX_RUN_MB='lots' is not a number" in w.value for w in at.warning) and at.metric


@pytest.mark.parametrize("query,shown", [
    ({"w_bits": "²"}, "w_bits='²' (an integer 1..8)"),
    ({"w_bits": "٣"}, "w_bits='٣' (an integer 1..8)"),           # Arabic-Indic three: isdigit() but not ASCII
    ({"w_bits": "9" * 5000}, "w_bits='99999999999999999999…' (too long)"),
    ({"n_images": "1" + "0" * 40}, "n_images="),
    ({"n_images": "-5"}, "n_images='-5'"),
    ({"a_terms": " 2"}, "a_terms=' 2'"),
    ({"level": "galaxy"}, "level='galaxy' (one of tensor, layer, model)"),
    ({"mode": "x" * 70}, "(too long)"),
    ({"model": "<script>alert(1)</script>"}, "model='<script>alert(1)</sc…'"),
    ({"device": "cuda:0; rm -rf /"}, "device="),
    ({"data": "../../etc/passwd"}, "data='../../etc/passwd'"),
])
def test_bad_url_parameters_fall_back_to_defaults_with_a_warning(query, shown):
    at = _ok(_app(query))
    warning = " ".join(w.value for w in at.warning)
    assert "Ignored link settings" in warning and shown in warning
    assert len(warning) < 600  # a 5,000-digit value is not echoed back
    assert at.sidebar.title and at.sidebar.title[0].value == "FP=xINT explorer"  # the sidebar always renders
    assert at.number_input(key="w_bits").value == 4 and at.number_input(key="n_images").value == 500
    assert at.metric  # and the page computes with the defaults


def test_no_server_path_reaches_the_page(shared_dir):
    at = _ok(_app({"model": "resnet20", "n_images": "20"}))
    at.button(key="run_expand").click().run()
    text = _texts(_ok(at))
    assert "CIFAR-10" in text or "cifar10" in text
    for path in (str(shared_dir), str(ROOT), "/tmp/", "/root/", str(Path.home()) + "/"):
        assert path not in text, f"{path} shown: {[line for line in text.splitlines() if path in line][:2]}"


def test_a_model_error_shows_no_server_path(monkeypatch, tmp_path):
    monkeypatch.setenv("FPXINT_SHARED", str(tmp_path / "nowhere"))  # resnet20 weights cannot be found
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    at = _ok(_app({"model": "resnet56", "data": "random"}))  # a model no other test of this process loads
    err = " ".join(e.value for e in at.error)
    assert "Model resnet56 is unavailable" in err and str(tmp_path) not in err and "<tmp>" in err


def test_uploads_live_in_a_private_folder_of_the_session():
    from fpxint.zoo.digits import digits_split
    from PIL import Image

    x, y = digits_split("test")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(30):
            img = io.BytesIO()
            Image.fromarray((x[i, 0].numpy() * 16).clip(0, 255).astype("uint8")).save(img, format="PNG")
            zf.writestr(f"{int(y[i])}/{i:03d}.png", img.getvalue())
    at = _app()
    at.selectbox(key="data").set_value("upload").run()
    at.file_uploader(key="data_upload").set_value(("digits.zip", buf.getvalue(), "application/zip")).run()
    _ok(at)
    folder = at.session_state["_scratch"].path
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == __import__("os").getuid()
    assert [p.suffix for p in folder.iterdir()] == [".zip"]
    assert str(folder) not in _texts(at)
    other = _app()  # another visitor gets another folder
    other.selectbox(key="data").set_value("upload").run()
    other.file_uploader(key="data_upload").set_value(("digits.zip", buf.getvalue(), "application/zip")).run()
    assert other.session_state["_scratch"].path != folder
