"""`fpxint sweep` rows in a chosen priority order, across models, grids and first/last policies.

The CLI sweep runs one model's grid in a fixed order (bit pairs, then terms) and one FP forward per
invocation. On a shared 2-core CPU the grids behind docs/RESULTS.md's ImageNet and activation-grid
sections do not all finish, so this runs them row by row in the order given (the rows that decide
a comparison first), measures each model's FP logits once (the same images for every row) and
rewrites each row's output file (sweep format: `<prefix>.csv` / `.json`, one file per model x grid
x policy) after every row, atomically: a stopped run keeps every finished row.

    python -m bench.queue_sweep item4 --threads 1     # the activation-grid / first-last comparison
    python -m bench.queue_sweep item3 --threads 1     # EfficientNet-Lite0, both first/last policies
    python -m bench.queue_sweep item3-8bit --threads 1  # its 8-bit-ends rows alone, beside item3
    python -m bench.queue_sweep tables                # the markdown of docs/RESULTS.md from the files

Every row spells out its whole ExpansionConfig (nothing depends on the config's defaults).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from fpxint import ExpansionConfig
from fpxint.analysis import logits_of
from fpxint.cli.common import scores
from fpxint.cost import cost_summary
from fpxint.model import expand

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
# everything but bits, terms, a_grid and first_last, spelled out
BASE = dict(level="layer", w_granularity="per_channel", a_granularity="per_sample", w_grid="symmetric",
            scale_rule="max", truncation="full", fold_bn=True, mode="simulate")
GRIDS = ("symmetric", "asymmetric", "auto")
# the rows where the 1,000-image ResNet-20 run saw the grids differ, first; then the rest of the grid
AGRID_ROWS = [(4, 4, 1), (3, 3, 2), (2, 2, 3), (2, 2, 4), (3, 3, 1), (2, 2, 2), (4, 4, 2), (3, 3, 3),
              (2, 2, 1), (3, 3, 4), (4, 4, 3), (4, 4, 4)]
# Lite0 (W:A, terms, first/last): the rows that say where the series reaches FP, for both policies,
# before the rows that only confirm (1 term of 2-3 bits, 4 terms at 4 bits, W8A8 x2-4). W8A8 x1
# with 8-bit ends is the same model as with `same`, so it is not run twice.
LITE_ROWS = ([(4, 4, 1, "same"), (4, 4, 2, "same"), (4, 4, 3, "same"), (3, 3, 2, "same"), (3, 3, 3, "same"),
              (2, 4, 3, "same"), (2, 4, 4, "same"), (8, 8, 1, "same")]
             + [(4, 4, 1, "8bit"), (4, 4, 2, "8bit"), (3, 3, 2, "8bit"), (3, 3, 3, "8bit"), (2, 4, 3, "8bit"),
                (2, 4, 4, "8bit")]
             + [(3, 3, 4, "same"), (4, 4, 4, "same"), (3, 3, 1, "same"), (2, 4, 2, "same"), (2, 4, 1, "same")]
             + [(4, 4, 3, "8bit"), (3, 3, 4, "8bit"), (4, 4, 4, "8bit"), (3, 3, 1, "8bit"), (2, 4, 2, "8bit"),
                (2, 4, 1, "8bit")]
             + [(8, 8, k, fl) for fl in ("same", "8bit") for k in (2, 3, 4)])


def _cfg(w: int, a: int, k: int, grid: str, fl: str) -> ExpansionConfig:
    return ExpansionConfig(w_bits=w, a_bits=a, w_terms=k, a_terms=k, a_grid=grid, first_last=fl, **BASE)


def plan(name: str) -> list[tuple[str, int | None, str, ExpansionConfig]]:
    """(model, limit, output prefix, config) in run order."""
    q = []
    if name == "item4":  # the deciding rows of both ResNets and both policies, then the rest
        for rows in (AGRID_ROWS[:6], AGRID_ROWS[6:]):
            for fl in ("same", "8bit"):
                for model in ("resnet20", "resnet32"):
                    for w, a, k in rows:
                        for g in GRIDS:
                            q.append((model, None, f"agrid_{model}_10k_{g}_{fl}", _cfg(w, a, k, g, fl)))
    elif name == "item3":  # Lite0 on all 1,300 images, symmetric grid; then the sign-aware grids
        for w, a, k, fl in LITE_ROWS:
            q.append(("efficientnet_lite0", None, f"imagenet_lite0_1300_{fl}", _cfg(w, a, k, "symmetric", fl)))
        for w, a, k in [(4, 4, 1), (4, 4, 2), (3, 3, 2), (3, 3, 3), (2, 4, 3), (2, 4, 4)]:
            for g in ("asymmetric", "auto"):
                q.append(("efficientnet_lite0", None, f"agrid_lite0_1300_{g}_same", _cfg(w, a, k, g, "same")))
    elif name == "i12-w8":  # issue 12's first grid row: W8A8 x1-4 (x1 with 8-bit ends is the same model)
        for k in (1, 2, 3, 4):
            q.append(("efficientnet_lite0", None, "imagenet_lite0_1300_same", _cfg(8, 8, k, "symmetric", "same")))
    elif name == "i12-8bit":  # the 8-bit-ends rows item3 did not reach
        for w, a, k, fl in LITE_ROWS:
            if fl == "8bit" and (w, a, k) != (8, 8, 1):
                q.append(("efficientnet_lite0", None, "imagenet_lite0_1300_8bit", _cfg(w, a, k, "symmetric", fl)))
    elif name == "i12-same":  # the every-layer-alike rows item3 did not reach (its 8-bit rows: i12-8bit)
        for w, a, k, fl in LITE_ROWS:
            if fl == "same" and w != 8:
                q.append(("efficientnet_lite0", None, "imagenet_lite0_1300_same", _cfg(w, a, k, "symmetric", fl)))
    elif name == "i12-agrid":  # the rows that decide Lite0's activation grid, asymmetric (the default) first
        for w, a, k in [(4, 4, 1), (4, 4, 2), (3, 3, 2), (3, 3, 3), (2, 4, 4), (2, 4, 3)]:
            for g in ("asymmetric", "auto"):
                q.append(("efficientnet_lite0", None, f"agrid_lite0_1300_{g}_same", _cfg(w, a, k, g, "same")))
    elif name == "item3-8bit":  # a second process for the 8-bit-ends rows (its own FP forward)
        for w, a, k, fl in LITE_ROWS:
            if fl == "8bit":
                q.append(("efficientnet_lite0", None, "imagenet_lite0_1300_8bit", _cfg(w, a, k, "symmetric", fl)))
    else:
        raise SystemExit(f"unknown plan {name!r}; choose one of {', '.join(PLANS)}")
    return q


PLANS = ("item3", "item3-8bit", "item4", "i12-w8", "i12-8bit", "i12-same", "i12-agrid")


def _resume(prefix: Path, n_images: int, fp_top1: float) -> dict | None:
    """The finished rows of an earlier run into the same file, if it measured the same FP on the same images
    (a stopped run resumes instead of overwriting them); None if there is no such file."""
    f = prefix.with_name(prefix.name + ".json")
    if not f.is_file():
        return None
    doc = json.loads(f.read_text())
    if doc["n_images"] != n_images or abs(doc["fp_top1"] - fp_top1) > 1e-9:
        raise SystemExit(f"{f}: FP top-1 {doc['fp_top1']} on {doc['n_images']} images, not {fp_top1} on "
                         f"{n_images}; move it aside rather than mix two runs in one table")
    return doc


def _done(prefix: Path, cfg: ExpansionConfig, doc: dict | None) -> bool:
    f = prefix.with_name(prefix.name + ".json")
    if doc is None and f.is_file():
        doc = json.loads(f.read_text())
    return doc is not None and any(r.get("config") == cfg.to_json() for r in doc["rows"])


def _write(prefix: Path, doc: dict) -> None:
    for suffix, text in ((".csv", pd.DataFrame(doc["rows"]).to_csv(index=False, float_format="%.6g")),
                         (".json", json.dumps(doc, indent=2) + "\n")):
        tmp = prefix.with_name(f".{prefix.name}{suffix}.tmp")
        tmp.write_text(text)
        os.replace(tmp, prefix.with_name(prefix.name + suffix))


def _read(prefix: str) -> pd.DataFrame | None:
    f = RESULTS / f"{prefix}.csv"
    return pd.read_csv(f) if f.is_file() else None


def _key(r) -> str:
    return f"W{r.w_bits}A{r.a_bits} ×{r.terms}"


def tables() -> None:
    """Markdown: Lite0 by policy (with costs), and Δ vs FP per activation grid x policy per model."""
    cols = ["W:A", "terms", "top-1 %", "Δ pts", "agree %", "logit SQNR dB", "eff. bits/weight", "int GEMMs",
            "BOPs % of FP"]
    for fl in ("same", "8bit"):
        t = _read(f"imagenet_lite0_1300_{fl}")
        if t is None:
            continue
        t = t.sort_values(["w_bits", "a_bits", "terms"], ascending=[False, False, True])
        grids = "/".join(sorted(set(t.a_grid)))  # every row says its grid; these files hold one
        print(f"\nEfficientNet-Lite0, first/last {fl}, activation grid {grids}: FP top-1 {t.fp_top1.iloc[0]:.2f} % "
              f"on {t.n_images.iloc[0]} images\n")
        print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        for r in t.itertuples():
            sq = "-" if pd.isna(r.logit_sqnr_db) else f"{r.logit_sqnr_db:.1f}"
            print(f"| {r.w_bits}:{r.a_bits} | {r.terms} | {r.top1:.2f} | {r.delta:+.2f} | {r.agreement:.2f} | {sq} | "
                  f"{r.effective_bits:.2f} | {r.int_gemms} | {100 * r.bops_vs_fp:.2f} |")
    for model, tag in (("digits_cnn", "digits"), ("resnet20", "resnet20_10k"), ("resnet32", "resnet32_10k"),
                       ("efficientnet_lite0", "lite0_1300")):
        frames = {}
        for fl in ("same", "8bit"):
            for g in GRIDS:
                t = _read(f"agrid_{tag}_{g}_{fl}")
                if t is None and g == "symmetric" and tag == "lite0_1300":
                    t = _read(f"imagenet_lite0_1300_{fl}")
                if t is not None:
                    frames[(g, fl)] = t
        if not frames:
            continue
        fp = {round(t.fp_top1.iloc[0], 4) for t in frames.values()}
        n = {int(t.n_images.iloc[0]) for t in frames.values()}
        print(f"\n{model}: FP top-1 {', '.join(f'{v:.2f}' for v in sorted(fp))} % on {', '.join(map(str, n))} images;"
              " Δ vs FP in points (- = not run)\n")
        keys = sorted({_key(r) for t in frames.values() for r in t.itertuples()},
                      key=lambda k: (k.split()[0], int(k.split("×")[1])))
        heads = [f"{g} / {fl}" for g, fl in frames]
        print("| config | " + " | ".join(heads) + " |\n|---|" + "---|" * len(heads))
        for k in keys:
            cells = []
            for t in frames.values():
                m = [r.delta for r in t.itertuples() if _key(r) == k]
                cells.append(f"{m[0]:+.2f}" if m else "-")
            print(f"| {k} | " + " | ".join(cells) + " |")


def lite0_extras() -> None:
    """Markdown: the Lite0 peers on all 1,300 images and the 0.75x-GEMMs allocation against uniform."""
    peers = RESULTS / "peers_lite0_1300.csv"
    if peers.is_file():
        t = pd.read_csv(peers)
        print(f"\nPeers on Lite0, {len(t) - 1} run (python -m bench.peers efficientnet_lite0 1300 ... lite1300)\n")
        print("| peer | W bits stored | activations | top-1 % | Δ pts | agree w/ FP % |\n|---|---|---|---|---|---|")
        for r in t.itertuples():
            if isinstance(getattr(r, "error", None), str):
                print(f"| {r.peer} | {r.w_bits} | {r.acts} | error: {r.error} | | |")
            else:
                print(f"| {r.peer} | {r.w_bits} | {r.acts} | {r.top1:.2f} | {r.delta:+.2f} | {r.agree:.2f} |")
    curve = RESULTS / "alloc_lite0_w4a4x3_gemms075.curve.csv"
    if curve.is_file():
        t = pd.read_csv(curve)
        print(f"\nAllocation on Lite0: {int(t.n_images.iloc[0])} evaluation images, FP measured on them\n")
        print("| config | int GEMMs | BOPs % of FP | top-1 % | Δ pts | agree % | logit SQNR dB |\n|---|---|---|---|---|---|---|")
        for r in t.itertuples():
            sq = "-" if r.kind == "fp" else f"{r.sqnr_db:.1f}"
            print(f"| {r.label} | {r.int_gemms} | {100 * r.bops_vs_fp:.2f} | {r.top1:.2f} | {r.top1 - r.fp_top1:+.2f} | "
                  f"{r.agreement:.2f} | {sq} |")


def main(argv: list[str] | None = None) -> None:
    from fpxint.data import load_data
    from fpxint.zoo import cache_dir, find_shared, load_model
    from fpxint.zoo.paths import shared_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("plan", choices=PLANS + ("tables",))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.plan == "tables":
        tables()
        return lite0_extras()
    if args.threads:
        torch.set_num_threads(args.threads)
    shared, out_dir = find_shared(), Path(args.out_dir)
    loaded: dict = {}  # model -> (lm, data, fp_logits, fp_top1, fp_seconds): FP once per model
    docs: dict[str, dict] = {}
    for model, limit, prefix, cfg in plan(args.plan):
        if _done(out_dir / prefix, cfg, docs.get(prefix)):  # before the FP forward, which costs a row
            print(f"{prefix} {cfg.label()}: done already", flush=True)
            continue
        if model not in loaded:
            lm = load_model(model, shared_dir=shared)
            data = load_data(shared_dataset(lm.spec.dataset, shared), lm.spec, limit=limit, cache_dir=cache_dir())
            t0 = time.perf_counter()
            fp_logits, _ = logits_of(lm.model, (data.images, data.labels), 100, "cpu")
            loaded[model] = (lm, data, fp_logits, scores(fp_logits, data.labels)["top1"], time.perf_counter() - t0)
            print(f"{model}: {data.source}; FP top-1 {loaded[model][3]:.2f} %", flush=True)
        lm, data, fp_logits, fp_top1, fp_seconds = loaded[model]
        if prefix not in docs and (old := _resume(out_dir / prefix, len(data), fp_top1)) is not None:
            old["command"] += f"; then python -m bench.queue_sweep {args.plan} (resumed)"
            docs[prefix] = old
        doc = docs.setdefault(prefix, {
            "model": model, "weights": lm.weights_source, "trained": lm.trained, "data": data.source,
            "n_images": len(data), "fp_top1": fp_top1, "fp_seconds": fp_seconds,
            "command": f"python -m bench.queue_sweep {args.plan} (rows in its priority order)",
            "device": "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "rows": []})
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        logits, _ = logits_of(expand(lm.model, cfg, device="cpu"), (data.images, data.labels), 100, "cpu")
        s = scores(logits, data.labels, fp_logits)
        c = cost_summary(lm.model, cfg, lm.spec.input_size)
        doc["rows"].append({
            "model": model, "w_bits": cfg.w_bits, "a_bits": cfg.a_bits, "terms": cfg.w_terms, "level": cfg.level,
            "truncation": cfg.truncation, "a_grid": cfg.a_grid, "first_last": cfg.first_last, "label": cfg.label(),
            "n_images": len(data), "fp_top1": fp_top1, "top1": s["top1"], "delta": s["top1"] - fp_top1,
            "agreement": s["agreement"], "kl": s["kl"], "logit_sqnr_db": s["logit_sqnr_db"],
            "effective_bits": c["effective_bits"], "int_gemms": c["int_gemms"], "bops_vs_fp": c["bops_vs_fp"],
            "seconds": time.perf_counter() - t0, "load_before": load, "config": cfg.to_json()})
        _write(out_dir / prefix, doc)
        r = doc["rows"][-1]
        print(f"{prefix} {cfg.label()}: {r['top1']:.2f} ({r['delta']:+.2f}) agree {r['agreement']:.1f} "
              f"in {r['seconds']:.0f} s (load {load:.1f})", flush=True)


if __name__ == "__main__":
    main()
