"""Metrics for expanded language models: perplexity over token windows, next-token top-1 agreement and
KL against the FP model (causal LMs), STS-B Spearman (sentence encoders), and a per-Linear-layer report
that puts each layer's one-layer output error beside its activation outlier statistic.

Models here are the wrapped ones of `fpxint.zoo.hf` (ids in, logits [tokens, vocab] or embeddings out).
Only nn.Linear layers are expanded; embeddings, attention scores, softmax and normalization stay in FP,
so the cost counts the Linear layers' multiply-accumulates per token (attention's QK^T and AV are not
counted: they are FP and grow with the context).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ExpansionConfig
from .cost import cost_summary
from .layers import expand_layer
from .model import expand, expandable_layers, layer_position
from .progress import Progress
from .text import TextWindows


__all__ = ["LMData", "lm_config", "linear_macs_per_token", "lm_cost", "reference", "quality", "evaluate_lm",
           "sweep_lm", "allocate_lm", "layer_kind", "layer_block", "layer_report", "spearman"]


def lm_config(cfg: ExpansionConfig) -> ExpansionConfig:
    """The config as run on a language model: no BatchNorm to fold (transformers have none)."""
    return cfg.replace(fold_bn=False) if cfg.fold_bn else cfg


@dataclass
class LMData:
    """What a language model is scored on: token windows (causal LM) or STS pairs (encoder)."""

    windows: TextWindows | None = None
    ids1: list[torch.Tensor] | None = None  # padded id batches of the first / second sentences
    ids2: list[torch.Tensor] | None = None
    scores: torch.Tensor | None = None
    source: str = ""

    @staticmethod
    def sts(tokenizer, s1: list[str], s2: list[str], scores: torch.Tensor, source: str,
            batch: int = 64) -> "LMData":
        def enc(sents):
            return [tokenizer(sents[i:i + batch], padding=True, truncation=True, max_length=128,
                              return_tensors="pt")["input_ids"] for i in range(0, len(sents), batch)]
        return LMData(ids1=enc(s1), ids2=enc(s2), scores=scores, source=source)

    def describe(self) -> str:
        if self.windows is not None:
            return self.windows.describe()
        return f"{len(self.scores)} STS-B pairs of {self.source}"

    def probe(self, tokens: int | None = None) -> torch.Tensor:
        """A small id batch for layer analyses: the first window (or first sentence batch)."""
        x = self.windows.ids[:1] if self.windows is not None else self.ids1[0]
        return x[:, :tokens] if tokens else x


def linear_macs_per_token(model: nn.Module) -> dict[str, int]:
    """Multiply-accumulates per token of every expandable Linear layer (each runs once per token)."""
    return {n: m.weight.numel() for n, m in expandable_layers(model)}


def lm_cost(model: nn.Module, cfg: ExpansionConfig) -> dict:
    """`cost.cost_summary` with MACs counted per token (`macs` is then MACs per token)."""
    return cost_summary(model, lm_config(cfg), None, macs=linear_macs_per_token(model))


def _scored_mask(windows: TextWindows) -> torch.Tensor:
    """[count, seq_len - 1] bool: which next-token predictions count (see fpxint.text)."""
    n, t = windows.ids.shape
    mask = torch.zeros(n, t - 1, dtype=torch.bool)
    mask[:, max(windows.n_context - 1, 0):] = True
    if windows.first_scored_all:
        mask[0] = True
    return mask


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (average ranks for ties), as scipy.stats.spearmanr."""
    from scipy.stats import spearmanr

    return float(spearmanr(a.double().numpy(), b.double().numpy()).statistic)


@torch.no_grad()
def _embed(model: nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    dev = next(model.parameters()).device
    return torch.cat([model(b.to(dev)).double().cpu() for b in batches])


@torch.no_grad()
def reference(model: nn.Module, data: LMData, progress: Progress | None = None):
    """The FP outputs the quantized model is compared with: per-window logits, or the two embeddings."""
    dev = next(model.parameters()).device
    if data.windows is not None:
        out = []
        for i, w in enumerate(data.windows.ids):
            out.append(model(w[None].to(dev)).float().cpu())
            if progress:
                progress((i + 1) / len(data.windows.ids), f"FP window {i + 1}/{len(data.windows.ids)}")
        return out
    return _embed(model, data.ids1), _embed(model, data.ids2)


def _ppl_terms(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    nll = F.cross_entropy(logits[:-1].double(), ids[1:], reduction="none")
    return float(nll[mask].sum()), int(mask.sum())


@torch.no_grad()
def quality(model: nn.Module, data: LMData, ref, progress: Progress | None = None) -> dict:
    """Scores `model` (FP or expanded) against the FP reference `ref` from `reference`.

    Returns:
        Causal LM: fp_ppl, ppl, agreement (next-token top-1 equal to FP's), kl (mean KL(FP || model) per
        scored token, nats), tokens. Encoder: fp_spearman, spearman, cosine_to_fp (mean over sentences), pairs.
    """
    dev = next(model.parameters()).device
    if data.windows is not None:
        mask = _scored_mask(data.windows)
        nll = fp_nll = agree = kl = 0.0
        n = 0
        for i, (w, fp) in enumerate(zip(data.windows.ids, ref)):
            lg = model(w[None].to(dev)).float().cpu()
            m = mask[i]
            a, k = _ppl_terms(lg, w, m)
            b, _ = _ppl_terms(fp, w, m)
            nll, fp_nll, n = nll + a, fp_nll + b, n + k
            lq, lp = F.log_softmax(lg[:-1][m].double(), -1), F.log_softmax(fp[:-1][m].double(), -1)
            kl += float((lp.exp() * (lp - lq)).sum())
            agree += float((lg[:-1][m].argmax(-1) == fp[:-1][m].argmax(-1)).sum())
            if progress:
                progress((i + 1) / len(data.windows.ids), f"window {i + 1}/{len(data.windows.ids)}")
        return {"fp_ppl": float(torch.tensor(fp_nll / n).exp()), "ppl": float(torch.tensor(nll / n).exp()),
                "agreement": agree / n, "kl": kl / n, "tokens": n}
    e1, e2 = _embed(model, data.ids1), _embed(model, data.ids2)
    fp1, fp2 = ref
    return {"fp_spearman": spearman(F.cosine_similarity(fp1, fp2), data.scores),
            "spearman": spearman(F.cosine_similarity(e1, e2), data.scores),
            "cosine_to_fp": float(torch.cat([F.cosine_similarity(e1, fp1), F.cosine_similarity(e2, fp2)]).mean()),
            "pairs": len(data.scores)}


def evaluate_lm(model: nn.Module, cfg: ExpansionConfig | None, data: LMData, ref=None, device: str | None = None,
                progress: Progress | None = None) -> dict:
    """Expands `model` with `cfg` (None: FP) and scores it; the FP reference is computed when not given."""
    ref = ref if ref is not None else reference(model, data)
    q = model if cfg is None else expand(model, lm_config(cfg), device=device)
    out = quality(q, data, ref, progress)
    if cfg is not None:
        out["cost"] = lm_cost(model, cfg)
    return out


def sweep_lm(model: nn.Module, data: LMData, cfgs: Sequence[ExpansionConfig], device: str | None = None,
             progress: Progress | None = None) -> pd.DataFrame:
    """One row per config: its label, settings, metrics and cost (BOPs per token vs FP)."""
    ref = reference(model, data)
    rows = []
    for i, cfg in enumerate(cfgs):
        r = evaluate_lm(model, cfg, data, ref, device)
        cost = r.pop("cost")
        rows.append({"config": cfg.label(), "w_bits": cfg.w_bits, "a_bits": cfg.a_bits, "w_terms": cfg.w_terms,
                     "a_terms": cfg.a_terms, **r, "effective_bits": cost["effective_bits"],
                     "int_gemms": cost["int_gemms"], "bops_vs_fp": cost["bops_vs_fp"]})
        if progress:
            progress((i + 1) / len(cfgs), cfg.label())
    return pd.DataFrame(rows)


def allocate_lm(model: nn.Module, cfg: ExpansionConfig, budget, calib: LMData, *, max_terms: int = 4,
                solver: str = "dp", mode: str = "unlabeled", sensitivity: pd.DataFrame | None = None,
                device: str | None = None, progress: Progress | None = None):
    """Per-layer term allocation (`fpxint.allocation.allocate`) for a language model.

    The noise is measured on the model's output, the next-token logits of every token (or the sentence
    embeddings of an encoder), with one layer expanded at a time; costs count MACs per token. `calib`
    chooses the allocation: keep it disjoint from the text it is evaluated on (`TextWindows.end`).
    The measured noise takes 2 x max_terms forward passes per layer; in a transformer each runs only from
    the layer's block on (the blocks before it replay the FP pass, `allocation.sensitivity.BlockReplay`).
    `mode="weights"` skips the forward passes and predicts each layer's noise from its weights and a
    Gaussian stand-in input, which knows nothing of the activation outliers; the choice is then not
    measured before use (on SmolLM2 it chose badly: docs/RESULTS.md).

    Returns:
        `fpxint.allocation.Allocation`; its config's costs are per token.

    Example:
        >>> ev = LMData(windows=token_windows(tok, path, 256, 2))
        >>> cal = LMData(windows=token_windows(tok, path, 128, 1, start=ev.windows.end))
        >>> a = allocate_lm(model, cfg.with_terms(3), "gemms=0.75x", cal)
        >>> evaluate_lm(model, a.config, ev)["ppl"]
    """
    from .allocation import allocate  # the allocation package imports the engine, not this module

    probe = calib.windows.ids if calib.windows is not None else calib.ids1[0]  # encoder: first sentence batch
    return allocate(model, lm_config(cfg), budget, probe, mode=mode, max_terms=max_terms, solver=solver,
                    sensitivity=sensitivity, device=device, progress=progress, macs=linear_macs_per_token(model))


_KINDS = (  # (regex on the layer name, kind): Llama/Qwen/Mistral, BERT, GPT-2 (after Conv1D -> Linear)
    (r"q_proj$|attention\.self\.query$", "q"), (r"k_proj$|attention\.self\.key$", "k"),
    (r"v_proj$|attention\.self\.value$", "v"), (r"o_proj$|attention\.output\.dense$|attn\.c_proj$", "o"),
    (r"c_attn$", "qkv"), (r"gate_proj$", "gate"), (r"up_proj$|intermediate\.dense$|mlp\.c_fc$", "up"),
    (r"down_proj$|\d\.output\.dense$|mlp\.c_proj$", "down"), (r"lm_head$", "head"),
)


def layer_kind(name: str) -> str:
    """q, k, v, o, gate, up, down, head or other, from a transformer layer's name."""
    return next((k for pat, k in _KINDS if re.search(pat, name)), "other")


def layer_block(name: str) -> int | None:
    """The transformer block index in a layer's name (`layers.7.`, `layer.7.`, `h.7.`), or None."""
    m = re.search(r"(?:layers|layer|h)\.(\d+)\.", name)
    return int(m.group(1)) if m else None


@torch.no_grad()
def _inputs_outputs(model: nn.Module, names: list[str], ids: torch.Tensor) -> dict[str, tuple]:
    mods = dict(model.named_modules())
    got: dict[str, tuple] = {}
    hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, (i[0].detach(), o.detach())))
             for n in names]
    try:
        model(ids)
    finally:
        for h in hooks:
            h.remove()
    return got


def _rel_l2(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref, out = ref.double(), out.double()
    return float((out - ref).norm() / ref.norm()) if ref.norm() > 0 else float("nan")


@torch.no_grad()
def layer_report(model: nn.Module, cfg: ExpansionConfig, ids: torch.Tensor, terms: Sequence[int] = (1,),
                 progress: Progress | None = None) -> pd.DataFrame:
    """Per expandable Linear layer, each fed its own FP input (isolated, nothing accumulates):
    the output's relative L2 error for each number of terms, and the input's outlier statistic.

    The outlier statistic is max |x| over the median of the per-channel max |x| (channels = the last
    dim, max over all tokens of `ids`): 1 when every channel has the same range; large when a few
    channels dominate, which is what a per-token activation scale cannot absorb.

    Returns:
        Columns: layer, index, block, kind, in_features, out_features, outlier, terms, rel_l2, sqnr_db.
    """
    cfg = lm_config(cfg)
    layers = expandable_layers(model)
    names = [n for n, _ in layers]
    io = _inputs_outputs(model, names, ids.to(next(model.parameters()).device))
    rows = []
    for idx, (name, layer) in enumerate(layers):
        x, y = io[name]
        ch = x.abs().reshape(-1, x.shape[-1]).amax(0)
        outlier = float(ch.max() / ch.median().clamp_min(1e-12))
        pos = layer_position(idx, len(layers))
        for k in terms:
            c = cfg.with_terms(k)
            spec = c.layer_spec(name, pos)
            err = 0.0 if spec.fp else _rel_l2(y, expand_layer(layer, c, spec)(x))
            rows.append({"layer": name, "index": idx, "block": layer_block(name), "kind": layer_kind(name),
                         "in_features": layer.in_features, "out_features": layer.out_features,
                         "outlier": outlier, "terms": k, "rel_l2": err,
                         "sqnr_db": -20 * torch.log10(torch.tensor(err)).item() if err > 0 else float("inf")})
        if progress:
            progress((idx + 1) / len(layers), name)
    return pd.DataFrame(rows)
