"""The method's claim on a real checkpoint and real images, measured through the CLI.

ResNet-20 (the published CIFAR-10 checkpoint) on 500 CIFAR-10 test JPEGs (50 per class, seed 0):
weights per output channel, activations expanded at run time per sample, max rule, symmetric
grid, the full grid of cross terms, every conv and the classifier expanded (first and last too).

What this subset measured (2-core CPU, torch 2.14.1; seeds 1 and 2 of the same size in brackets):
    FP 83.2 % [80.8, 86.0]
    W4A4 1 term: 64.8 %, -18.4 points [-17.6, -20.2], top-1 agreement with FP 68.0 % [68.4, 67.2]
    W4A4 2 terms: 83.2 %, +0.0 [-0.4, -0.2], agreement 98.2 % [98.8, 99.2]
    W4A4 3 terms: 83.2 %, +0.0 [0.0, 0.0], agreement 99.8 % [100, 100]
    logit SQNR 4.6 / 28.7 / 50.9 dB: each 4-bit term gains ~23 dB, the proven factor 1/14 per term.

Why these tolerances: a 500-image accuracy has a standard error of ~1.7 points, so FP and expanded
accuracies are compared on the SAME images, where the difference can only come from the images on
which the two models disagree (2 % of them at 2 terms: at most 9 images, i.e. 1.8 points, and
measured 0-2 images). So: one term must lose at least 10 points (measured 17.6-20.2); two terms
must stay within 1 point of FP (5 images); three terms within 0.4 point (2 images) and agree with
FP on >= 99.4 % of the images. The FP accuracy itself is only checked to be plausible (the
checkpoint scores 81.0 % on all 10,000 JPEGs).
"""
import json

import pytest

from fpxint.cli import main

# everything that matters spelled out, so a change of the config's defaults cannot move this test
FIXED = ["--level", "layer", "--w-granularity", "per_channel",
         "--a-granularity", "per_sample", "--w-grid", "symmetric", "--a-grid", "symmetric", "--scale-rule", "max",
         "--truncation", "full", "--first-last", "same", "--mode", "simulate"]


@pytest.fixture(scope="module")
def w4a4(shared_dir, shared_file, cifar_test_dir):
    shared_file("models/cifar10/resnet20-12fca82f.th", "the ResNet-20 checkpoint")
    return shared_dir, cifar_test_dir


def test_w4a4_terms_converge_to_fp_on_real_images(w4a4, capsys):
    shared_dir, data_dir = w4a4
    code = main(["sweep", "resnet20", "--shared", str(shared_dir), "--data", str(data_dir), "--limit", "500",
                 "--seed", "0", "--pairs", "4:4", "--terms", "1,2,3", "--no-cache", "--quiet", "--json",
                 "--device", "cpu", *FIXED])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["n_images"] == 500 and "500 stratified" in doc["data"]
    fp = doc["fp_top1"]
    assert 75 <= fp <= 90, f"FP top-1 {fp} % on 500 JPEGs: checkpoint or preprocessing is off"
    by_terms = {r["terms"]: r for r in doc["rows"]}
    one, two, three = by_terms[1], by_terms[2], by_terms[3]
    assert all(r["fp_top1"] == fp and r["level"] == "layer" and r["a_bits"] == 4 for r in doc["rows"])

    assert one["top1"] <= fp - 10, f"1 term (round to nearest) should drop clearly: {one['top1']} vs FP {fp}"
    assert abs(two["top1"] - fp) <= 1.0, f"2 terms: {two['top1']} vs FP {fp}"
    assert two["agreement"] >= 97.0
    assert abs(three["top1"] - fp) <= 0.4, f"3 terms: {three['top1']} vs FP {fp}"
    assert three["agreement"] >= 99.4
    # the error contracts geometrically: each 4-bit term buys ~23 dB of logit SQNR (bound: 1/14)
    assert two["logit_sqnr_db"] - one["logit_sqnr_db"] >= 15
    assert three["logit_sqnr_db"] - two["logit_sqnr_db"] >= 15
    assert one["kl"] > two["kl"] > three["kl"]
