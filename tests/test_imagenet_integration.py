"""EfficientNet-Lite0 (real ImageNet weights) on real ILSVRC2012 validation images, through the CLI.

The shared folder holds 1,300 validation JPEGs with a labels.csv and the Lite0 checkpoint. FP top-1
on all 1,300 with Resize(256) / CenterCrop(224) / mean 127/255 / std 128/255 is 82.38 % (measured
when the data was prepared, and again here through `fpxint.zoo` + `fpxint.data`). This test uses
the 50-image stratified subset (seed 0; 50 distinct classes), where this repository measured
(2-core CPU, torch 2.14.1, defaults spelled out below):

    FP 88.0 % (44 of 50)
    W8A8 2 terms: 88.0 %, top-1 agreement with FP 100 %, logit SQNR 66.8 dB
    W8A8 1 term:  88.0 %, agreement 100 %, SQNR 18.7 dB
    W4A4 2 terms: 84.0 %, agreement 94 %, SQNR 17.6 dB
    W4A4 1 term:  4.0 %, agreement 6 % (one 4-bit term breaks this depthwise network)

The FP value is asserted exactly (same images, same preprocessing, deterministic CPU forward). The
expanded ones get floors with margin: W8A8 x 2 must agree with FP on >= 49 of 50 images and keep
>= 50 dB; W4A4 x 2 on >= 45 of 50 (measured 47).
"""
import json

import pytest

from fpxint.cli import main

FIXED = ["--level", "layer", "--w-granularity", "per_channel", "--a-granularity", "per_sample",
         "--w-grid", "symmetric", "--a-grid", "symmetric", "--scale-rule", "max", "--truncation", "full",
         "--first-last", "same", "--mode", "simulate"]


@pytest.fixture(scope="module")
def imagenet(shared_dir, shared_file):
    shared_file("models/imagenet/efficientnet-lite0-57934424.pth", "the EfficientNet-Lite0 checkpoint")
    shared_file("data/imagenet-val-1300/labels.csv", "the ImageNet validation subset")
    return shared_dir


def test_lite0_fp_and_w8a8_fidelity_on_real_imagenet_images(imagenet, capsys):
    # no --data: the model's default data is the shared 1,300 images, labelled from labels.csv
    code = main(["sweep", "efficientnet_lite0", "--shared", str(imagenet), "--limit", "50", "--seed", "0",
                 "--pairs", "8:8,4:4", "--terms", "2", "--batch-size", "50", "--no-cache", "--quiet", "--json",
                 "--device", "cpu", *FIXED])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["n_images"] == 50 and "imagenet-val-1300: 50 stratified (seed 0) of 1300" in doc["data"]
    assert "labels from labels.csv" in doc["data"]
    assert doc["fp_top1"] == pytest.approx(88.0, abs=1e-9)  # 44 of 50, measured
    rows = {(r["w_bits"], r["terms"]): r for r in doc["rows"]}
    w8, w4 = rows[(8, 2)], rows[(4, 2)]
    assert w8["agreement"] >= 98.0 and w8["logit_sqnr_db"] >= 50.0, w8
    assert abs(w8["top1"] - doc["fp_top1"]) <= 2.0
    assert w4["agreement"] >= 90.0, w4
