"""Save / load round trip of an expanded model: identical outputs, clear errors on bad files."""
import hashlib
import json

import pytest
from conftest import fail_writes_to
import torch
import torch.nn as nn

from fpxint import ExpansionConfig, LayerOverride, expand, set_mode
from fpxint.export import ExportError, load_expanded, save_expanded, read_meta
from fpxint.model import state_sha256
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 4)).eval()


@pytest.mark.parametrize("cfg", [ExpansionConfig(), ExpansionConfig(w_grid="asymmetric", truncation="total_order",
                                                                    w_terms=3, first_last="fp")])
def test_round_trip_identical_outputs(tmp_path, cfg):
    m = net()
    q = expand(m, cfg)
    blob, text = save_expanded(q, "toy", path=tmp_path / "toy")
    assert (tmp_path / "toy.safetensors").read_bytes() == blob
    x = torch.randn(2, 3, 6, 6)
    for src, meta in ((blob, text), (tmp_path / "toy.safetensors", tmp_path / "toy.json")):
        q2 = load_expanded(net(), src, meta)
        with torch.no_grad():
            assert torch.equal(q2(x), q(x))
            assert torch.equal(set_mode(q2, "integer")(x), set_mode(q, "integer")(x))
            set_mode(q, "simulate")
    assert q2.fpxint_config == cfg.replace(mode="integer")  # set_mode above updates the config
    assert set_mode(q2, "simulate").fpxint_config == cfg


def test_bad_files(tmp_path):
    q = expand(net(), ExpansionConfig())
    blob, text = save_expanded(q)
    with pytest.raises(ValueError, match="sha256 differs"):
        load_expanded(net(), b"garbage", text)
    with pytest.raises(ValueError, match="not a readable safetensors"):  # garbage whose hash was recorded
        load_expanded(net(), b"garbage", _rehash(json.loads(text), b"garbage"))
    with pytest.raises(ValueError, match="fpxint expansion JSON"):
        load_expanded(net(), blob, '{"format": "other"}')
    other = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 4))
    with pytest.raises(ValueError, match="does not match this architecture"):
        load_expanded(other, blob, text)
    with pytest.raises(ValueError, match="not an expanded model"):
        save_expanded(net())


def test_prefix_with_a_dot_keeps_its_name(tmp_path):
    save_expanded(expand(net(), ExpansionConfig()), path=tmp_path / "r20.w4a4")
    assert (tmp_path / "r20.w4a4.safetensors").exists() and (tmp_path / "r20.w4a4.json").exists()


def _rehash(meta: dict, blob: bytes) -> dict:
    """The JSON an attacker (or a careless edit) would write to go with `blob`: the hash matches."""
    return {**meta, "tensors_sha256": hashlib.sha256(blob).hexdigest()}


def _tampered(edit) -> tuple[bytes, dict]:
    q = expand(net(), ExpansionConfig(w_bits=8, w_terms=2, a_bits=8, a_terms=2))
    blob, text = save_expanded(q, "toy")
    state = st_load(blob)
    edit(state)
    blob = st_save(state, metadata={"format": "fpxint-expanded/2"})
    return blob, _rehash(json.loads(text), blob)


def _edit_pairs(state):
    state["0.pairs"][1, 1] = 0  # a cross term dropped that the config keeps


@pytest.mark.parametrize("edit, match", [
    (lambda s: s["0.w_scale"].__setitem__((0, 0), float("nan")), "NaN or Inf in 0.w_scale"),
    (lambda s: s["4.w_scale"].__setitem__((1, 0), -1.0), "negative scales"),
    (lambda s: s["4.bias"].__setitem__(0, float("inf")), "NaN or Inf in 4.bias"),
    (_edit_pairs, "kept pairs of 0"),
    (lambda s: s.pop("4.w_q"), "1 missing"),
    (lambda s: s.__setitem__("0.w_q", s["0.w_q"].to(torch.int16)), "0.w_q"),
])
def test_tampered_tensors_are_refused_even_with_a_matching_hash(edit, match):
    blob, meta = _tampered(edit)
    with pytest.raises(ExportError, match=match):
        load_expanded(net(), blob, meta)


def test_swapped_pairs_are_refused():
    cfg = ExpansionConfig(w_terms=3, a_terms=2, truncation="total_order", overrides={"4": LayerOverride(w_terms=2)})
    blob, text = save_expanded(expand(net(), cfg), "toy")
    state = st_load(blob)
    state["0.pairs"], state["4.pairs"] = state["4.pairs"], state["0.pairs"]
    blob = st_save(state, metadata={"format": "fpxint-expanded/2"})
    with pytest.raises(ExportError, match="pairs"):
        load_expanded(net(), blob, _rehash(json.loads(text), blob))


def test_json_edited_to_claim_fewer_bits_is_refused():
    q = expand(net(), ExpansionConfig(w_bits=8, w_terms=2))
    blob, text = save_expanded(q, "toy")
    meta = json.loads(text)
    meta["config"]["w_bits"] = 2  # W2 label over W8 tensors: same shapes and dtypes
    with pytest.raises(ExportError, match=r"outside the 2-bit symmetric grid \[-1, 1\]"):
        load_expanded(net(), blob, meta)
    meta["config"]["w_bits"] = 8
    meta["config"]["w_terms"] = 3  # more terms than the file holds
    with pytest.raises(ExportError, match="does not match this architecture and config"):
        load_expanded(net(), blob, meta)


def test_truncated_tensors_file_and_broken_json_are_refused(tmp_path):
    blob, text = save_expanded(expand(net(), ExpansionConfig()), "toy", path=tmp_path / "toy")
    st = tmp_path / "toy.safetensors"
    st.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ExportError, match="sha256 differs"):
        load_expanded(net(), st, tmp_path / "toy.json")
    meta = json.loads(text)
    deep = "[" * 100_000 + "]" * 100_000
    for bad, match in [('{"format": "fpxint-expanded/2", "x": ' + deep + "}", "nested too deeply"),
                       ({**meta, "config": None}, "no valid 'config'"),
                       ({k: v for k, v in meta.items() if k != "tensors_sha256"}, "no valid 'tensors_sha256'"),
                       ({**meta, "config": {**meta["config"], "w_bits": "x"}}, "invalid config"),
                       ({**meta, "format": "fpxint-expanded/1"}, "older fpxint")]:
        with pytest.raises(ExportError, match=match):
            load_expanded(net(), blob, bad)


def test_json_records_tensor_hash_and_fp_weights():
    m = net()
    blob, text = save_expanded(expand(m, ExpansionConfig()), "toy", weights_source="toy.pt")
    meta = read_meta(text)
    assert meta["tensors_sha256"] == hashlib.sha256(blob).hexdigest()
    assert meta["fp_weights"] == {"model": "toy", "source": "toy.pt", "sha256": state_sha256(m)}
    other = net()
    with torch.no_grad():
        other[0].weight.add_(1e-3)
    assert state_sha256(other) != state_sha256(m)


def test_writes_are_atomic_and_never_overwrite_unasked(tmp_path, monkeypatch):
    prefix = tmp_path / "toy"
    blob, text = save_expanded(expand(net(), ExpansionConfig()), "toy", path=prefix)
    with pytest.raises(ExportError, match="already exist.*overwrite=True"):
        save_expanded(expand(net(), ExpansionConfig(w_terms=3)), "toy", path=prefix)
    assert (tmp_path / "toy.safetensors").read_bytes() == blob and (tmp_path / "toy.json").read_text() == text

    fail_writes_to(monkeypatch, ".toy.json.")  # the JSON write fails after the tensors were written
    with pytest.raises(OSError, match="No space"):
        save_expanded(expand(net(), ExpansionConfig(w_terms=3)), "toy", path=prefix, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.json", "toy.safetensors"]  # no temporaries
    assert (tmp_path / "toy.safetensors").read_bytes() == blob and (tmp_path / "toy.json").read_text() == text
    blob3, text3 = save_expanded(expand(net(), ExpansionConfig(w_terms=3)), "toy", path=prefix, overwrite=True)
    assert (tmp_path / "toy.safetensors").read_bytes() == blob3 and (tmp_path / "toy.json").read_text() == text3


def test_mode_set_after_expansion_survives_save_and_load():
    q = set_mode(expand(net(), ExpansionConfig(a_bits=4, a_terms=2)), "integer")
    assert q.fpxint_config.mode == "integer"
    blob, text = save_expanded(q, "toy")
    assert json.loads(text)["config"]["mode"] == "integer"
    loaded = load_expanded(net(), blob, text)
    assert {m.mode for m in loaded.modules() if hasattr(m, "w_q")} == {"integer"}
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), q(x))
