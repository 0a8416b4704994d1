"""hf:<name or path> safety (fpxint/zoo/hf_files.py, the hf: branch of fpxint/zoo/hf.py): local folders
confined to a root on a server, weights from safetensors only, and the size from the config before any
weights are read. Real transformers parts, no network."""
from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from fpxint.admission import AdmissionError, Limits, check_model
from fpxint.zoo.hf_files import MAX_LAYERS, resolve_ref
from fpxint.zoo.registry import ModelLoadError
from tests.test_lm import _need

# Meta-Llama-3-70B's config.json (the fields that set its shapes): 70,553,706,496 parameters.
LLAMA_70B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
             "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
             "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
             "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


def _llama_params(c: dict) -> int:
    """The parameter count of a Llama config, by hand: embeddings, per block q/k/v/o + gate/up/down + two
    norms, the final norm and the untied head."""
    h, i, v, n = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    block = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return v * h + n * block + h + (0 if c["tie_word_embeddings"] else v * h)


class _Tripwire:
    """Unpickling this creates the folder `path`: a visible side effect of loading a pickle."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.fixture()
def rooms(tmp_path):
    root, outside = tmp_path / "models", tmp_path / "elsewhere"
    (root / "tiny").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "alias").symlink_to(root / "tiny", target_is_directory=True)
    (root / "notes.txt").write_text("not a model")
    return root, outside


def test_confined_folders_only_inside_the_root(rooms):
    root, outside = rooms
    inside = str((root / "tiny").resolve())
    for ref in ("tiny", str(root / "tiny"), "alias", "./tiny", "tiny/../tiny"):
        src = resolve_ref(ref, root=root, confine=True)
        assert src.local and src.ref == inside, ref
    for ref in (str(outside), "../elsewhere", "tiny/../../elsewhere", "escape", "escape/", "/etc"):
        with pytest.raises(ModelLoadError, match="is outside the model folder this server allows") as e:
            resolve_ref(ref, root=root, confine=True)
        if not ref.startswith("/"):  # the message echoes what was typed, never where it resolved on the server
            assert str(outside) not in str(e.value) and str(root) not in str(e.value)
    with pytest.raises(ModelLoadError, match="is not a folder in"):
        resolve_ref("notes.txt", root=root, confine=True)
    src = resolve_ref("openai-community/gpt2", root=root, confine=True)  # not under the root: a hub id
    assert not src.local and src.ref == "openai-community/gpt2"


def test_no_root_no_local_folders_and_the_message_says_how(rooms, tmp_path, monkeypatch):
    root, _ = rooms
    for ref in (str(root / "tiny"), "../models/tiny", "~/x"):
        with pytest.raises(ModelLoadError, match="FPXINT_HF_ROOT=<folder>"):
            resolve_ref(ref, confine=True)
    monkeypatch.chdir(root)  # a hub-like name that is a folder of the working directory would be read from disk
    with pytest.raises(ModelLoadError, match="working directory"):
        resolve_ref("tiny", confine=True)
    assert resolve_ref("gpt2", confine=True) == resolve_ref("gpt2")  # a hub id either way


def test_cli_and_api_take_any_folder_but_not_a_file(rooms):
    root, outside = rooms
    assert resolve_ref(str(outside)).ref == str(outside.resolve())
    assert resolve_ref(str(root / "escape")).ref == str(outside.resolve())
    with pytest.raises(ModelLoadError, match="is not a folder"):  # transformers would torch.load a file path
        resolve_ref(str(root / "notes.txt"))


@pytest.fixture()
def pickle_folder(tmp_path):
    """A GPT-2 config and a pytorch_model.bin whose unpickling creates `tripped`; nothing else."""
    _need("transformers")
    from transformers import GPT2Config

    folder, tripped = tmp_path / "models" / "picklemodel", tmp_path / "tripped"
    GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=64).save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(tripped)))
    return folder, tripped


def test_pickle_only_folder_is_refused_without_unpickling(pickle_folder):
    from transformers import GPT2LMHeadModel

    from fpxint.zoo.hf import _pretrained, load_lm

    folder, tripped = pickle_folder
    for kw in ({}, {"local_root": folder.parent, "confine": True}):
        with pytest.raises(ModelLoadError, match="only pickle weights .pytorch_model.bin.: fpxint reads "
                                                 "safetensors only") as e:
            load_lm(f"hf:{folder.name if kw else folder}", **kw)
        assert "\n" not in str(e.value) and "save_pretrained" in str(e.value)
    with pytest.raises(OSError, match="model.safetensors"):  # the loader's one call site, behind the check
        _pretrained(GPT2LMHeadModel, folder)
    assert not tripped.exists()
    with open(folder / "pytorch_model.bin", "rb") as f:  # the oracle can fail: unpickling does trip it
        pickle.load(f)
    assert tripped.is_dir()


def test_a_folder_without_weights_is_named_as_typed(pickle_folder):
    from fpxint.zoo.hf import load_lm

    folder, _ = pickle_folder
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"hf:picklemodel could not be loaded from its folder: .*model\.safetensors"
                       r" found in directory picklemodel") as e:
        load_lm("hf:picklemodel", local_root=folder.parent, confine=True, admit=lambda size: None)
    assert str(folder.parent) not in str(e.value)


def test_safetensors_are_read_and_a_pickle_beside_them_is_not(gpt2_dir, tmp_path):
    from fpxint.zoo.hf import load_lm

    tripped = tmp_path / "tripped"
    bait = gpt2_dir / "pytorch_model.bin"
    bait.write_bytes(pickle.dumps(_Tripwire(tripped)))
    try:
        lm = load_lm(f"hf:{gpt2_dir.name}", local_root=gpt2_dir.parent, confine=True)
    finally:
        bait.unlink()
    assert not tripped.exists() and lm.spec.task == "causal_lm"


def test_size_from_config_is_the_loaded_parameter_count(gpt2_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    from fpxint.zoo.hf import load_lm
    from fpxint.zoo.hf_files import size_from_config

    seen = []
    lm = load_lm(f"hf:{gpt2_dir}", admit=seen.append)
    size = size_from_config(AutoConfig.from_pretrained(gpt2_dir), AutoModelForCausalLM)
    assert seen == [size] and size.params == lm.spec.params == sum(p.numel() for p in lm.model.parameters())
    buffers = sum(b.numel() for b in lm.model.buffers())
    assert size.bytes == 8 * size.params + 4 * buffers and size.layers == 2
    assert torch.empty(1).device.type == "cpu"  # the meta build left no device mode behind


@pytest.fixture()
def huge_folder(tmp_path):
    folder = tmp_path / "models" / "llama-70b-config-only"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(LLAMA_70B))
    return folder


def test_oversized_config_is_refused_from_the_estimate(huge_folder):
    _need("transformers")
    from fpxint.zoo.hf import load_lm

    seen = []

    def admit(size):
        seen.append(size)
        check_model("hf:llama-70b-config-only", size.params, size.bytes, Limits(max_run_mb=16 * 1024))

    with pytest.raises(AdmissionError) as e:  # a folder without weights: only the estimate can refuse it
        load_lm(f"hf:{huge_folder.name}", local_root=huge_folder.parent, confine=True, admit=admit)
    assert seen[0].params == _llama_params(LLAMA_70B) == 70_553_706_496
    assert seen[0].bytes == 8 * seen[0].params + 4 * 64  # float32 + loading's extra 4 B/param; 64 rotary inv_freq
    assert str(e.value) == ("hf:llama-70b-config-only has 70.55 B parameters: loading it needs about 525.7 GB "
                            "of memory (limit 16.0 GB per run, FPXINT_MAX_RUN_MB); choose a smaller model. No "
                            "weights were downloaded or read.")
    with pytest.raises(AdmissionError, match="over this server's limit of 1.0 M parameters .FPXINT_MAX_PARAMS."):
        check_model("hf:x", 1_000_001, 4, Limits(max_run_mb=None, max_params=1e6))
    check_model("hf:x", 1_000_000, 4_000_000, Limits(max_run_mb=4, max_params=1e6))  # at the limits: admitted


def test_config_deeper_than_any_model_is_not_built(huge_folder):
    from fpxint.zoo.hf import load_lm

    (huge_folder / "config.json").write_text(json.dumps({**LLAMA_70B, "num_hidden_layers": MAX_LAYERS + 1}))
    with pytest.raises(ModelLoadError, match=f"declares {MAX_LAYERS + 1} layers"):
        load_lm(f"hf:{huge_folder}", admit=lambda size: None)


def test_cli_refuses_an_oversized_hf_model_in_one_line(huge_folder, monkeypatch, capsys):
    _need("transformers")
    from fpxint.cli import main

    monkeypatch.setenv("FPXINT_MAX_RUN_MB", "2048")
    assert main(["eval", f"hf:{huge_folder}", "--windows", "1", "--seq-len", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "70.55 B parameters" in err and "(limit 2.0 GB" in err and "--no-limits" in err


def test_limits_read_max_params():
    assert Limits.from_env({"FPXINT_MAX_PARAMS": "7e9"}).max_params == 7e9
    assert Limits.from_env({"FPXINT_MAX_PARAMS": "off"}).max_params == float("inf")
    with pytest.raises(ValueError, match="FPXINT_MAX_PARAMS"):
        Limits.from_env({"FPXINT_MAX_PARAMS": "7B"})


def test_every_from_pretrained_call_is_the_safe_one():
    """The package calls transformers' from_pretrained in one place, `zoo.hf_files.pretrained` (safetensors only);
    a new call elsewhere would bypass it (the brief's `grep -rn from_pretrained fpxint`, kept as a test)."""
    package = Path(__file__).resolve().parents[1] / "fpxint"
    calls, safe = [], None
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(package).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "from_pretrained":
                calls.append((where, node.lineno))
            if where == "zoo/hf_files.py" and isinstance(node, ast.FunctionDef) and node.name == "pretrained":
                safe = range(node.lineno, node.end_lineno + 1)
    assert safe is not None and len(calls) == 1 and calls[0][0] == "zoo/hf_files.py" and calls[0][1] in safe, calls
