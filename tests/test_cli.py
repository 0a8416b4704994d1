"""Command line: every subcommand in-process through main(argv), exit codes, one-line errors."""
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from fpxint import ExpansionConfig, expand
from fpxint.analysis import logits_of
from fpxint.cli import main
from fpxint.cli.common import expanded_paths
from fpxint.data import load_data
from fpxint.export import load_expanded
from fpxint.zoo import load_model

EVAL_KEYS = {"model", "config", "n_images", "fp_top1", "top1", "seconds", "agreement", "kl", "data", "device",
             "torch", "label", "cost"}


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["--quiet" if a == "-q" else a for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits():
    lm = load_model("digits_cnn")
    return lm.model, load_data("digits", lm.spec)


def test_models_table_lists_the_registry(capsys):
    code, out, err = run(capsys, "models")
    assert code == 0 and err == ""
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert {"digits_cnn", "resnet20", "resnet32"} <= set(names)
    code, out, _ = run(capsys, "models", "--family", "cifar10", "--json")
    assert code == 0 and {r["name"] for r in json.loads(out)} >= {"resnet20", "resnet32"}


def test_python_dash_m_smoke():
    p = subprocess.run([sys.executable, "-m", "fpxint", "models"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "resnet20" in p.stdout


def test_eval_digits_json(capsys):
    code, out, err = run(capsys, "eval", "digits_cnn", "--w-bits", "4", "--a-bits", "4", "--terms", "3",
                         "--json", "--quiet", "--device", "cpu")
    assert code == 0, err
    r = json.loads(out)
    assert EVAL_KEYS <= set(r)
    assert r["model"] == "digits_cnn" and r["n_images"] == 450 and r["device"] == "cpu"
    assert r["fp_top1"] >= 97
    assert ExpansionConfig.from_dict(r["config"]) == ExpansionConfig(w_terms=3, a_terms=3)
    assert abs(r["top1"] - r["fp_top1"]) <= 1 and r["agreement"] >= 98 and r["kl"] >= 0
    assert r["cost"]["int_gemms"] == 4 * 9  # 4 layers, full 3 x 3 grid of cross terms


def test_eval_options_reach_the_config(capsys):
    code, out, err = run(capsys, "eval", "--config", '{"w_bits": 3, "level": "tensor"}', "--w-terms", "2",
                         "--scale-rule", "mse", "--first-last", "8bit", "--override", "features.1.0:w_bits=5",
                         "--limit", "50", "--json", "-q")
    assert code == 0, err
    cfg = ExpansionConfig.from_dict(json.loads(out)["config"])
    assert (cfg.w_bits, cfg.w_terms, cfg.level, cfg.scale_rule, cfg.first_last) == (3, 2, "tensor", "mse", "8bit")
    assert dict(cfg.overrides)["features.1.0"].w_bits == 5
    assert json.loads(out)["n_images"] == 50


def test_eval_human_output(capsys):
    code, out, _ = run(capsys, "eval", "--limit", "40", "-q")
    assert code == 0
    assert "FP top-1" in out and "W4x2 A4x2 layer" in out and "40 stratified" in out


@pytest.mark.parametrize("argv, fragment", [
    (["eval", "no_such_model"], "unknown model 'no_such_model'"),
    (["eval", "--w-bits", "9"], "w_bits=9 is not allowed"),
    (["eval", "--terms", "0"], "terms=0 is not allowed"),
    (["eval", "--limit", "-1"], "--limit -1"),
    (["eval", "--batch-size", "0"], "--batch-size 0"),
    (["eval", "--data", "/no/such/folder"], "no such file or folder"),
    (["eval", "--level", "planet"], "invalid choice"),
    (["eval", "--w-bits", "four"], "invalid int value"),
    (["eval", "--config", "{not json"], "not valid JSON"),
    (["eval", "--config", '{"w_bitz": 4}'], "unknown config keys"),
    (["eval", "--override", "nowhere:fp"], "does not have"),
    (["eval", "--expanded", "/no/such/prefix"], "not found"),
    (["eval", "--expanded", "/no/such/prefix", "--terms", "3"], "cannot be combined"),
    (["sweep", "--terms", "0"], "terms=0 is not allowed"),
    (["sweep", "--bits", "2,x"], "comma-separated integers"),
    (["sweep", "--levels", "layer,planet"], "choose from"),
    (["sweep", "--pairs", "4:4", "--a-bits", "4"], "either --pairs"),
    (["expand", "--terms", "2"], "--out"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_input_is_one_line_and_code_2(capsys, argv, fragment):
    code, out, err = run(capsys, *argv, *(["-q"] if argv and argv[0] != "frobnicate" else []))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err and "Traceback" not in err
    assert out == ""


def test_cuda_without_gpu_is_a_user_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run(capsys, "eval", "--device", "cuda", "-q")
    assert code == 2 and "no CUDA GPU" in err


def test_corrupt_weights_file(capsys, tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    code, _, err = run(capsys, "eval", "--weights", str(bad), "-q")
    assert code == 2 and err.startswith("error: not a PyTorch or safetensors checkpoint") and err.count("\n") == 1


def test_missing_cifar_data_names_what_to_pass(capsys, tmp_path, shared_file):
    weights = shared_file("models/cifar10/resnet20-12fca82f.th", "the ResNet-20 checkpoint")
    code, _, err = run(capsys, "eval", "resnet20", "--weights", str(weights), "--shared", str(tmp_path), "-q")
    assert code == 2 and err.count("\n") == 1
    assert "no CIFAR-10 test images" in err and "--data PATH" in err


def test_sweep_writes_csv_and_json(capsys, tmp_path, digits):
    prefix = tmp_path / "out" / "digits_sweep"
    code, out, err = run(capsys, "sweep", "--bits", "2,4", "--terms", "1,2", "--levels", "layer,tensor",
                         "--limit", "100", "--out", str(prefix), "-q")
    assert code == 0, err
    df = pd.read_csv(f"{prefix}.csv")
    doc = json.loads(prefix.with_suffix(".json").read_text())
    assert len(df) == len(doc["rows"]) == 2 * 2 * 2
    assert set(zip(df.w_bits, df.terms, df.level)) == {(b, k, lv) for b in (2, 4) for k in (1, 2)
                                                        for lv in ("layer", "tensor")}
    assert df.fp_top1.nunique() == 1 and doc["fp_top1"] == df.fp_top1[0] and doc["n_images"] == 100
    assert (df.n_images == 100).all() and df.a_bits[df.level == "tensor"].isna().all()
    for _, row in df.iterrows():  # every row's config is the one it claims, and the delta is top1 - FP
        cfg = ExpansionConfig.from_json(row.config)
        assert (cfg.w_bits, cfg.w_terms, cfg.level) == (row.w_bits, row.terms, row.level)
        assert row.delta == pytest.approx(row.top1 - row.fp_top1)
    # one row measured again directly: the sweep's number is the engine's number on the same images
    model, data = digits
    sub = load_data("digits", load_model("digits_cnn").spec, limit=100)
    cfg = ExpansionConfig.from_json(df.config[1])
    logits, labels = logits_of(expand(model, cfg), (sub.images, sub.labels))
    assert df.top1[1] == pytest.approx(100 * (logits.argmax(1) == labels).double().mean().item(), abs=1e-4)
    assert "wrote" in out


def test_sweep_pairs_and_truncations(capsys):
    code, out, err = run(capsys, "sweep", "--pairs", "4:4,2:4", "--terms", "2", "--truncations",
                         "full,total_order", "--limit", "30", "--json", "-q")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [(r["w_bits"], r["a_bits"], r["truncation"]) for r in rows] == [
        (4, 4, "full"), (2, 4, "full"), (4, 4, "total_order"), (2, 4, "total_order")]
    full, trunc = rows[0], rows[2]
    assert trunc["int_gemms"] < full["int_gemms"]  # (2, 2) dropped by i + j <= 3


def test_sweep_runs_a_one_term_total_order_model_once(capsys):
    """One term: total order (i + j <= 2) keeps the one pair (1, 1), the full-grid model; it is run once."""
    code, out, err = run(capsys, "sweep", "--pairs", "4:4", "--terms", "1,2", "--truncations",
                         "full,total_order", "--limit", "20", "--json", "-q")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [(r["terms"], r["truncation"]) for r in rows] == [(1, "full"), (2, "full"), (2, "total_order")]


def test_expand_round_trip_identical_logits(capsys, tmp_path, digits):
    prefix = tmp_path / "digits.w4x3"  # a dot inside the prefix must not eat it
    code, out, err = run(capsys, "expand", "--w-terms", "3", "--a-terms", "2", "--truncation", "total_order",
                         "--out", str(prefix), "--check", "--json", "-q")
    assert code == 0, err
    r = json.loads(out)
    st, js = expanded_paths(prefix)
    assert st.name == "digits.w4x3.safetensors" and st.is_file() and js.is_file()
    assert r["check"]["identical_logits"] and r["check"]["n_images"] == 256
    cfg = ExpansionConfig(w_terms=3, a_terms=2, truncation="total_order")
    assert json.loads(js.read_text())["config"] == cfg.to_dict()

    model, data = digits  # loaded from disk on a fresh FP model: the same logits as expanding in memory
    loaded = load_expanded(load_model("digits_cnn").model, st, js)
    with torch.no_grad():
        assert torch.equal(loaded(data.images), expand(model, cfg, device="cpu")(data.images))

    code, out, err = run(capsys, "eval", "--expanded", str(prefix), "--json", "-q")
    assert code == 0, err
    from_disk = json.loads(out)
    code, out, _ = run(capsys, "eval", "--config", str(js), "--json", "-q")  # the JSON also works as --config
    in_memory = json.loads(out)
    assert from_disk["config"] == in_memory["config"] == cfg.to_dict()
    assert from_disk["top1"] == in_memory["top1"] and from_disk["kl"] == in_memory["kl"]


def test_expanded_integer_mode_round_trip(capsys, tmp_path):
    code, out, err = run(capsys, "expand", "--mode", "integer", "--out", str(tmp_path / "int"), "--check",
                         "--limit", "64", "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["check"]["identical_logits"]


def test_corrupt_expansion_is_code_2(capsys, tmp_path):
    prefix = tmp_path / "x"
    assert run(capsys, "expand", "--out", str(prefix), "-q")[0] == 0
    st, js = expanded_paths(prefix)
    st.write_bytes(st.read_bytes()[:100])  # truncated safetensors
    code, out, err = run(capsys, "eval", "--expanded", str(prefix), "-q")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "safetensors" in err
    js.write_text("{ this is not json")
    code, _, err = run(capsys, "eval", "--expanded", str(prefix), "-q")
    assert code == 2 and "not valid JSON" in err and err.count("\n") == 1
    js.write_text(json.dumps({"format": "fpxint-expanded/2", "model": "resnet20", "config": {}, "layers": [],
                              "tensors_sha256": "", "fp_weights": {}}))
    code, _, err = run(capsys, "eval", "digits_cnn", "--expanded", str(prefix), "-q")
    assert code == 2 and "expansion of resnet20" in err


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert main(["sweep", "--help"]) == 0
    assert "--truncations" in capsys.readouterr().out


def test_expand_refuses_to_overwrite_without_force(capsys, tmp_path):
    notes = tmp_path / "notes.json"
    notes.write_text("my notes")
    code, _, err = run(capsys, "expand", "--out", str(notes), "-q")  # PREFIX.json would be notes.json
    assert code == 2 and "already exist" in err and "--force" in err and err.count("\n") == 1
    assert notes.read_text() == "my notes" and not (tmp_path / "notes.safetensors").exists()
    assert run(capsys, "expand", "--out", str(notes), "--force", "-q")[0] == 0
    assert json.loads(notes.read_text())["format"] == "fpxint-expanded/2"


def test_sweep_refuses_to_overwrite_without_force(capsys, tmp_path):
    prefix = tmp_path / "s"
    argv = ["sweep", "--bits", "4", "--limit", "20", "--out", str(prefix), "-q"]
    assert run(capsys, *argv, "--terms", "1")[0] == 0
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(first) == ["s.csv", "s.json"]
    code, _, err = run(capsys, *argv, "--terms", "2")
    assert code == 2 and "s.csv and" in err and "already exist" in err and "--force" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first  # intact, nothing else written
    assert run(capsys, *argv, "--terms", "1,2", "--force")[0] == 0
    assert list(pd.read_csv(f"{prefix}.csv").terms) == [1, 2]  # replaced, every row of the new run
    assert json.loads((tmp_path / "s.json").read_text())["rows"][1]["terms"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.json"]  # no temporary left


def test_allocate_refuses_to_overwrite_without_force(capsys, tmp_path):
    notes = tmp_path / "notes.json"
    notes.write_text("my notes")
    argv = ["allocate", "--bits", "2", "--terms", "2", "--budget-gemms", "0.75x", "--calib", "32", "--max-terms", "3",
            "--limit", "64", "-q"]
    for out in (["--out", str(notes)], ["--save", str(tmp_path / "notes")]):  # --save PREFIX writes PREFIX.json
        code, _, err = run(capsys, *argv, *out)
        assert code == 2 and "notes.json already exists" in err and "--force" in err and err.count("\n") == 1
    assert notes.read_text() == "my notes" and [p.name for p in tmp_path.iterdir()] == ["notes.json"]
    code, _, err = run(capsys, *argv, "--out", str(notes), "--save", str(tmp_path / "r"), "--force")
    assert code == 0, err
    cfg = ExpansionConfig.from_json(notes.read_text())
    assert cfg.overrides and json.loads((tmp_path / "r.json").read_text())["config"] == json.loads(cfg.to_json())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json", "r.json", "r.layers.csv"]  # no curve: --eval 0


def test_eval_expanded_compares_with_the_weights_that_were_expanded(capsys, tmp_path):
    from safetensors.torch import save_file

    model = load_model("digits_cnn").model
    with torch.no_grad():  # other FP weights: clearly worse than the bundled ones
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    mine = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(mine))
    prefix = tmp_path / "mine.w4"
    assert run(capsys, "expand", "--weights", str(mine), "--out", str(prefix), "-q")[0] == 0
    code, out, err = run(capsys, "eval", "--weights", str(mine), "--limit", "200", "--json", "-q")
    direct = json.loads(out)
    code, out, err = run(capsys, "eval", "--expanded", str(prefix), "--limit", "200", "--json", "-q")
    assert code == 0, err
    r = json.loads(out)  # the recorded weights file was reloaded: FP is the weights that were expanded
    assert r["fp_top1"] == direct["fp_top1"] and r["top1"] == direct["top1"] and r["weights"] == str(mine)
    mine.unlink()
    code, _, err = run(capsys, "eval", "--expanded", str(prefix), "-q")
    assert code == 2 and "other FP weights" in err and "--weights" in err and err.count("\n") == 1
