"""The Streamlit app, driven headless with AppTest: every page, the shared sidebar, URLs, uploads, errors."""
from __future__ import annotations

import base64
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = {name: f"fpxint/app/pages/{i}_{name}.py" for i, name in enumerate(
    ["expand", "residuals", "convergence", "accuracy", "basis", "compare", "export", "allocate", "explain"], start=1)}
RUN_BUTTON = {"residuals": "run_residuals_weight", "convergence": "run_convergence", "accuracy": "run_accuracy",
              "basis": "run_basis", "compare": "run_compare", "export": "run_export", "expand": "run_expand",
              "allocate": "run_allocate"}


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "fpxint-cache"
    monkeypatch.setenv("FPXINT_CACHE", str(cache))  # decoded-image cache out of $HOME
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch-home"))  # no cached torchvision weights


def _app(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(query or {})
    return at.run()


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _visit(at: AppTest, page: str, run: bool = False) -> AppTest:
    at.switch_page(PAGES[page]).run()
    if run:
        at.button(key=RUN_BUTTON[page]).click().run()
    return _ok(at)


def _charts(at: AppTest) -> list[go.Figure]:
    """The page's plotly figures, rebuilt from the JSON Streamlit sends (plotly 7 packs arrays as binary)."""
    return [pio.from_json(c.proto.spec) for c in at.get("plotly_chart")]


def _values(v) -> np.ndarray:
    """A trace array as numbers, whether plain or plotly's packed {"dtype", "bdata"} form."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
    return np.asarray(v)


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _pct(text: str) -> float:
    return float(text.split()[0])


def _errors(at: AppTest) -> str:
    return " | ".join(e.value for e in at.error)


# ----- default view, sidebar, config ---------------------------------------------------------------
def test_default_view_computes_on_load():
    at = _ok(_app())
    m = _metrics(at)
    assert 95 < _pct(m["FP top-1"]) <= 100
    label = "Expanded top-1 (W4x2 A4x2 layer)"
    assert abs(_pct(m[label]) - _pct(m["FP top-1"])) < 2
    assert float(m["Effective bits / weight"]) == pytest.approx(8.33, abs=0.05)  # 2 x 4 bits + scales
    assert m["Integer GEMMs / forward"] == "16"  # 4 layers x 2 x 2 cross terms
    assert any("Device in use: **CPU**" in c.value for c in at.caption) or torch.cuda.is_available()
    assert any("Integer mode" in c.value and "exact (int8 accumulators" in c.value for c in at.caption)
    assert not at.error and at.query_params == {}  # defaults keep the URL clean
    assert not at.dataframe  # the all-metrics table waits for its toggle (its JavaScript is heavy)
    at.toggle(key="expand_all_metrics").set_value(True).run()
    table = _ok(at).dataframe[0].value
    assert list(table.columns) == [label.removeprefix("Expanded top-1 (").removesuffix(")")]
    assert table.loc["integer GEMMs / forward"].iloc[0] == 16


def test_start_up_warm_up_computes_what_a_plain_url_asks_for():
    """app.py's lifespan fills the caches under ui.default_refs(): they must be the sidebar's own keys."""
    from fpxint import app as ui
    from fpxint.app.loaders import DataRef

    at = _ok(_app())
    ctx = at.session_state["_ctx"]
    assert (ctx.mref, ctx.cfg_json, ctx.dref) == ui.default_refs()
    assert isinstance(ctx.dref, DataRef) and ctx.dref.limit == 500  # typed, not a positional tuple


def test_w4x3_a4x3_recovers_fp_and_writes_the_url():
    at = _app()
    at.number_input(key="w_terms").set_value(3)
    at.number_input(key="a_terms").set_value(3).run()
    assert any("Press **Run**" in w.value for w in at.warning)  # old results stay until Run
    at.button(key="run_expand").click().run()
    m = _metrics(_ok(at))
    assert abs(_pct(m["Expanded top-1 (W4x3 A4x3 layer)"]) - _pct(m["FP top-1"])) <= 1.0
    assert m["Integer GEMMs / forward"] == "36"
    assert at.query_params["w_terms"] == "3" and at.query_params["a_terms"] == "3"


def test_invalid_config_shows_its_message_and_keeps_results():
    at = _app()
    before = _metrics(at)
    at.selectbox(key="w_grid").set_value("full")
    at.number_input(key="w_bits").set_value(1).run()
    _ok(at)
    assert "w_grid='full' needs w_bits >= 2" in _errors(at)
    assert at.button(key="run_expand").disabled
    assert _metrics(at) == before  # the previous results are still on screen
    at.selectbox(key="scale_rule").set_value("fixed")
    at.selectbox(key="w_grid").set_value("asymmetric").run()
    assert "scale_rule='fixed' is defined for the 'symmetric' and 'full' grids only" in _errors(_ok(at))


def test_query_params_reproduce_a_configuration():
    at = _ok(_app({"w_bits": "3", "w_terms": "3", "level": "model", "truncation": "total_order", "mode": "integer"}))
    assert at.number_input(key="w_bits").value == 3 and at.selectbox(key="level").value == "model"
    assert any("W3x3 A4x2 model total_order" in c.value for c in at.caption)
    assert at.query_params["w_terms"] == "3" and at.query_params["mode"] == "integer"
    m = _metrics(at)  # the built-in model computes the linked view on load
    assert "Expanded top-1 (W3x3 A4x2 model total_order)" in m


def test_bad_query_params_are_named_and_ignored():
    at = _ok(_app({"w_bits": "12", "level": "galaxy", "model": "nope", "a_terms": "2"}))
    warning = " ".join(w.value for w in at.warning)
    assert "w_bits='12'" in warning and "level='galaxy'" in warning and "model='nope'" in warning
    assert at.number_input(key="w_bits").value == 4 and _metrics(at)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_an_error_not_a_crash():
    at = _app()
    at.selectbox(key="device").set_value("cuda").run()
    assert "no CUDA GPU is available" in _errors(_ok(at)) and _metrics(at)


# ----- pages -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders(page):
    at = _visit(_app(), page)
    assert at.title[0].value and not at.error


def test_the_page_list_covers_every_page_file():
    """A page added to fpxint/app/pages/ without an entry in PAGES would escape test_every_page_renders."""
    assert sorted(PAGES.values()) == sorted(f"fpxint/app/pages/{p.name}" for p in (ROOT / "fpxint" / "app" / "pages").glob("*.py"))


def test_layer_residuals_heatmap_bars_detail_and_csv():
    at = _visit(_app(), "residuals")
    figs = _charts(at)
    assert len(figs) == 3
    heat, bars, detail = figs
    assert heat.data[0].type == "heatmap" and heat.layout.xaxis.title.text == "number of terms"
    assert bars.layout.yaxis.type == "log" and len(bars.data) == 2  # 2 terms
    assert any(t.name.startswith("proven bound") for t in detail.data)
    assert [d.label for d in at.get("download_button")] == ["Download the table (CSV)"]
    assert at.dataframe[0].value["term"].tolist() == [1, 2]
    at.segmented_control(key="res_space").set_value("output")
    at.segmented_control(key="res_metric").set_value("sqnr_db").run()
    figs = _charts(_ok(at))  # output space also computes on load for the built-in model
    assert "layer outputs" in figs[0].layout.title.text and figs[1].layout.yaxis.type == "linear"


def test_convergence_per_bit_width_with_bound():
    at = _visit(_app(), "convergence")
    at.multiselect(key="conv_bits").set_value([2, 4])
    at.number_input(key="conv_terms").set_value(3)
    at.button(key="run_convergence").click().run()
    weights, output = _charts(_ok(at))
    assert len(weights.data) == 4 and weights.layout.yaxis.type == "log"
    assert sorted(t.name for t in weights.data) == ["2-bit bound", "2-bit measured", "4-bit bound", "4-bit measured"]
    assert [t.name for t in output.data] == ["W2A2", "W4A4"] and list(_values(output.data[0].x)) == [1, 2, 3]
    assert any("within its proven bound" in s.value for s in at.success)


def test_accuracy_recovery_grid_equal_budget_and_x_axes():
    at = _visit(_app(), "accuracy")
    at.multiselect(key="acc_bits").set_value([2, 4])
    at.number_input(key="acc_terms").set_value(2)
    at.button(key="run_accuracy").click().run()
    rec, budget = _charts(_ok(at))
    names = [t.name for t in rec.data]
    assert "2-bit terms" in names and "4-bit one term (RTN)" in names and "FP model" in names
    assert {t.name for t in budget.data} == {"series", "single term"}
    assert list(budget.data[0].x) == ["W2x2 vs W4x1", "W4x2 vs W8x1"]
    grid = at.dataframe[0].value
    assert len(grid) == 4 and (grid["top1"] <= 100).all()
    at.segmented_control(key="acc_x").set_value("bops").run()
    assert _charts(_ok(at))[0].layout.xaxis.type == "log"


@pytest.mark.parametrize("mode", ["simulate", "integer"])
def test_basis_models_sum_exactly_and_the_laws_hold_in_one_layer_only(mode):
    at = _app()
    at.selectbox(key="mode").set_value(mode).run()
    at = _visit(at, "basis")
    charts = _charts(at)
    assert len(charts) == 5  # histograms, maps, scales, differences, group laws
    m = _metrics(at)  # both modes compute the same exact accumulators: AbelianAdd rebuilds the model bit for bit
    assert m["AbelianAdd, chosen order"] == "0 (exact)" and m["AbelianAdd, reverse order"] == "0 (exact)"
    assert float(m["sum of separately run outputs"]) > 1e-3  # nonlinearity: separate networks do not add up
    network, layer = charts[4].data
    gaps = dict(zip(network.x, network.text))
    assert gaps["AbelianAdd of all basis models (lockstep) = model"] == "0 (exact)"
    assert float(gaps["sum of separately run basis models = model"]) > 1e-2
    assert layer.name.startswith("one layer: ") and all(float(v) < 1e-6 for v in layer.text)  # rescale rounding
    at.selectbox(key="basis_layer").set_value("classifier").run()
    assert "classifier: weight (10, 64)" in " ".join(c.value for c in _ok(at).caption)


def test_compare_two_configurations():
    at = _visit(_app(), "compare")
    at.selectbox(key="cmp_w_bits").set_value(2).run()
    at.button(key="run_compare").click().run()
    table = _ok(at).dataframe[0].value
    assert list(table.columns) == ["A: W4x2 A4x2 layer", "B: W2x3 A4x3 layer", "B - A"]
    assert table.loc["integer GEMMs / forward", "B - A"] == 36 - 16
    curves, layers = _charts(at)
    assert len(curves.data) == 2 and len(layers.data) == 2
    at.selectbox(key="cmp_w_grid").set_value("full")
    at.selectbox(key="cmp_w_bits").set_value(1).run()
    assert "Configuration B is invalid" in _errors(_ok(at)) and at.dataframe  # previous comparison stays


def test_export_files_and_report():
    at = _visit(_app(), "residuals")
    at = _visit(at, "export")
    labels = [d.label for d in at.get("download_button")]
    assert labels == ["Expanded model (.safetensors)", "Its config (.json)", "Metrics (.csv)",
                      "HTML report (self-contained)"]
    assert at.multiselect(key="report_figs").value  # figures drawn on the residuals page are offered


# ----- models and data -------------------------------------------------------------------------------
def test_untrained_torchvision_model_is_labelled_and_accuracy_is_off():
    at = _app()
    at.selectbox(key="model").set_value("resnet18").run()
    _ok(at)
    assert any("Untrained" in w.value for w in at.sidebar.warning)
    assert at.selectbox(key="data").value == "random"  # no ImageNet images are bundled
    at.number_input(key="n_images").set_value(4).run()
    at.button(key="run_expand").click().run()
    m = _metrics(_ok(at))
    assert "Agreement with FP (top-1)" in m and "KL(FP ‖ expanded)" in m and "FP top-1" not in m
    at = _visit(at, "accuracy")
    assert any("Accuracy recovery is off" in w.value and "untrained" in w.value for w in at.warning)


def test_unavailable_model_says_why_and_the_app_keeps_working():
    shared = os.environ.get("FPXINT_SHARED")
    at = _app()
    at.selectbox(key="model").set_value("resnet56").run()  # not among the shared checkpoints
    err = _errors(_ok(at))
    assert "Model resnet56 is unavailable" in err and "resnet56" in err, err
    for page in ("residuals", "basis", "export"):
        _visit(at, page)
    at.selectbox(key="model").set_value("digits_cnn").run()
    assert not _ok(at).error and shared == os.environ.get("FPXINT_SHARED")


def test_cifar_resnet20_from_the_shared_folder(shared_file):
    shared_file("models/cifar10/resnet20-12fca82f.th", "the ResNet-20 checkpoint")
    at = _app({"model": "resnet20", "n_images": "100"})
    assert at.selectbox(key="data").value == "bundled"
    at.button(key="run_expand").click().run()
    m = _metrics(_ok(at))
    assert 50 < _pct(m["FP top-1"]) <= 100 and "100 stratified" in " ".join(c.value for c in at.caption)


def test_uploaded_checkpoint_loads_and_pickled_code_is_refused(tmp_path):
    from safetensors.torch import save as st_save

    from fpxint.zoo import load_model

    state = {k: v.contiguous() for k, v in load_model("digits_cnn").model.state_dict().items()}
    at = _app()
    at.file_uploader(key="weights_upload").set_value(("mine.safetensors", st_save(state), "application/octet-stream"))
    at.run()
    at.button(key="run_expand").click().run()
    assert _pct(_metrics(_ok(at))["FP top-1"]) > 95
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(1), "evil": _Evil(tmp_path / "pwned")}, buf)
    at.file_uploader(key="weights_upload").set_value(("evil.pt", buf.getvalue(), "application/octet-stream")).run()
    err = _errors(_ok(at))
    assert "Model digits_cnn is unavailable" in err and ("refusing to unpickle" in err or "Weights only load failed" in err)
    assert not (tmp_path / "pwned").exists() and _metrics(at)  # nothing ran; the last results stay


class _Evil:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):  # runs a command if anyone unpickles this with code allowed
        return (os.system, (f"touch {self.path}",))


def test_zip_of_images_as_data():
    from PIL import Image

    from fpxint.zoo.digits import digits_split

    x, y = digits_split("test")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(60):
            img = io.BytesIO()
            Image.fromarray((x[i, 0].numpy() * 16).clip(0, 255).astype("uint8")).save(img, format="PNG")
            zf.writestr(f"digits/{int(y[i])}/{i:03d}.png", img.getvalue())
    at = _app()
    at.selectbox(key="data").set_value("upload").run()
    assert "no zip uploaded yet" in _errors(_ok(at))
    at.file_uploader(key="data_upload").set_value(("digits.zip", buf.getvalue(), "application/zip")).run()
    at.button(key="run_expand").click().run()
    m = _metrics(_ok(at))
    assert _pct(m["FP top-1"]) > 80 and not at.error
    at.file_uploader(key="data_upload").set_value(("broken.zip", b"not a zip", "application/zip")).run()
    assert "Data unavailable" in _errors(_ok(at)) and _metrics(at)


def test_streamlit_is_only_imported_by_app():
    import subprocess
    import sys

    code = "import sys, fpxint, fpxint.plots, fpxint.reports, fpxint.analysis; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
    import ast

    importers = set()
    for f in (ROOT / "fpxint").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "streamlit" or n.startswith("streamlit.") for n in names):
                importers.add(f.relative_to(ROOT).parts[:2])
    assert importers == {("fpxint", "app")}, importers  # only the fpxint/app/ package imports Streamlit
