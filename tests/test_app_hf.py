"""The app's "Hugging Face model…" entry on a server shared by a room (AppTest, no network): local folders
only inside the operator's FPXINT_HF_ROOT, pickle-only folders refused unread, an oversized config refused
from its size before any weights, downloads only where the operator allows them, and `hf:<name>` kept in
the URL. The engine's side of each rule is in test_hf_files.py."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from fpxint.zoo.hf import load_lm
from tests.test_hf_files import LLAMA_70B, _Tripwire

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture()
def room(gpt2_dir, monkeypatch, tmp_path_factory):
    """The operator's settings: the GPT-2 fixture's parent folder as FPXINT_HF_ROOT, downloads off."""
    monkeypatch.setenv("FPXINT_CACHE", str(tmp_path_factory.getbasetemp() / "fpxint-cache"))
    monkeypatch.setenv("FPXINT_HF_ROOT", str(gpt2_dir.parent))
    monkeypatch.delenv("FPXINT_HF_DOWNLOAD", raising=False)
    return gpt2_dir.parent


def _app(query: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update(query)
    return at.run()


def _errors(at: AppTest) -> list[str]:
    assert not at.exception, [e.value for e in at.exception]
    return [e.value for e in at.error]


def _typed(at: AppTest, name: str) -> list[str]:
    at.text_input(key="hf_name").set_value(name).run()
    return _errors(at)


def test_local_folder_by_name_loads_and_the_url_keeps_it(room, gpt2_dir):
    at = _app({"model": f"hf:{gpt2_dir.name}", "w_terms": "3"})  # a shared link
    assert at.session_state["model"] == "hf:" and at.text_input(key="hf_name").value == gpt2_dir.name
    assert _errors(at) == [] and not at.warning
    assert at.query_params == {"model": f"hf:{gpt2_dir.name}", "w_terms": "3", "a_granularity": "per_token"}
    assert "tokens of wiki.test.raw" in " ".join(c.value for c in at.sidebar.caption)  # loaded and tokenized
    loaded = at.session_state["_ctx"].loaded
    assert loaded.spec.params == load_lm(f"hf:{gpt2_dir}").spec.params and loaded.spec.task == "causal_lm"
    assert _typed(at, str(gpt2_dir)) == []  # typing changes the URL too
    assert at.query_params["model"] == f"hf:{gpt2_dir}"


def test_bad_hf_links_are_named_and_ignored(room):
    at = _app({"model": "hf:" + "x" * 300})
    assert any("model='hf:xxxxxxxxxxxxxxxxx" in w.value and "at most 256" in w.value for w in at.sidebar.warning)
    assert at.session_state["model"] != "hf:"


def test_folders_outside_the_root_are_refused(room, gpt2_dir, tmp_path):
    (tmp_path / "out").symlink_to(room.parent, target_is_directory=True)  # inside the root, pointing out of it
    at = _app({"model": "hf:"})
    for typed in ("/etc", "..", f"{gpt2_dir.name}/../..", str(room.parent), f"{tmp_path.name}/out"):
        errors = _typed(at, typed)
        assert any("is outside the model folder this server allows (FPXINT_HF_ROOT)" in e for e in errors), errors


def test_no_root_means_no_local_folders(room, gpt2_dir, monkeypatch):
    monkeypatch.delenv("FPXINT_HF_ROOT")
    at = _app({"model": f"hf:{gpt2_dir}"})
    assert any("loads no local folders" in e and "FPXINT_HF_ROOT=<folder>" in e for e in _errors(at))


def test_pickle_only_folder_is_refused_unread(room, tmp_path):
    from transformers import GPT2Config

    folder, tripped = tmp_path / "picklemodel", tmp_path / "tripped"
    GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=64).save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(tripped)))
    errors = _typed(_app({"model": "hf:"}), f"{tmp_path.name}/picklemodel")  # "org/name" under the root
    assert any("only pickle weights (pytorch_model.bin)" in e for e in errors), errors
    assert not tripped.exists()


def test_oversized_config_is_refused_before_loading(room, tmp_path, monkeypatch):
    monkeypatch.setenv("FPXINT_MAX_RUN_MB", "4096")
    (tmp_path / "llama70b").mkdir()
    (tmp_path / "llama70b" / "config.json").write_text(json.dumps(LLAMA_70B))  # no weights at all
    errors = _typed(_app({"model": "hf:"}), f"{tmp_path.name}/llama70b")
    assert any("70.55 B parameters: loading it needs about 525.7 GB of memory (limit 4.0 GB per run" in e
               and "No weights were downloaded or read" in e for e in errors), errors


def test_downloads_need_the_operator_and_the_visitor(room, monkeypatch):
    at = _app({"model": "hf:"})
    box = at.checkbox(key="allow_download")
    assert box.disabled and "FPXINT_HF_DOWNLOAD=1" in box.help
    at.session_state["allow_download"] = True  # ticked (on an image model, where the box is live), yet off
    assert any("downloading is off" in e for e in _typed(at, "no-such-org/no-such-model-xyz"))
    monkeypatch.setenv("FPXINT_HF_DOWNLOAD", "maybe")
    at.run()
    assert at.checkbox(key="allow_download").disabled
    assert any("FPXINT_HF_DOWNLOAD='maybe' is not 1 or 0" in w.value for w in at.sidebar.warning)
    _typed(at, "")  # nothing to load: allowing downloads below must not reach for the network
    monkeypatch.setenv("FPXINT_HF_DOWNLOAD", "1")
    at.run()
    assert not at.checkbox(key="allow_download").disabled
