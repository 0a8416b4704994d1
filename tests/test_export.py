"""Save / load round trip of an expanded model: identical outputs, clear errors on bad files."""
import pytest
import torch
import torch.nn as nn

from fpxint import ExpansionConfig, expand, set_mode
from fpxint.export import load_expanded, save_expanded


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
    assert q2.fpxint_config == cfg


def test_bad_files(tmp_path):
    q = expand(net(), ExpansionConfig())
    blob, text = save_expanded(q)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_expanded(net(), b"garbage", text)
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
