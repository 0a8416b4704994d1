"""The group laws of the basis models on outputs (issue 12, item 6): the whole network against one layer.

Real CIFAR-10 ResNet-20 and its first 20 test images (stratified, seed 0), W4x2 A4x2 and W3x2 A3x2:
`views.basis_laws` (lockstep AbelianAdd vs the model; the plain sum of separately run basis models;
f(A ⊕ B) vs f(A) + f(B); f(⊖A) vs -f(A)), on the network and on layer2.1.conv2 alone with the input
it receives inside the network. Not a timing: relative gaps ||lhs - rhs|| / ||rhs||.
"""
from __future__ import annotations

from bench.common import table

TITLE = "basis models: group laws on outputs, network vs one layer (ResNet-20, 20 real images)"
CONFIGS = {"W4x2 A4x2": 4, "W3x2 A3x2": 3}


def run(opts) -> dict:
    from fpxint import ExpansionConfig, expand, views
    from fpxint.model import expandable_layers
    from fpxint.data import load_data
    from fpxint.zoo import find_shared, load_model  # the bench is an edge: it may read the environment

    shared = find_shared()
    if opts.smoke:  # the built-in model on 4 bundled images, its second layer alone
        lm = load_model("digits_cnn")
        x = load_data("digits", lm.spec, limit=4, seed=0).images
        q = expand(lm.model, ExpansionConfig(w_bits=3, w_terms=2, a_bits=3, a_terms=2), device="cpu")
        layer = [n for n, _ in expandable_layers(lm.model)][1]
        rows = views.basis_laws(q, x, layer=layer).to_dict("records")
        return {"images": len(x), "rows": rows}
    if shared is None or not (shared / "models/cifar10/resnet20-12fca82f.th").exists():
        print("skipped: ResNet-20 checkpoint not found (set FPXINT_SHARED)")
        return {"rows": []}
    lm = load_model("resnet20", shared_dir=shared)
    x = load_data(str(shared / "data/cifar10-test"), lm.spec, limit=20, seed=0).images
    rows = []
    for label, b in CONFIGS.items():
        q = expand(lm.model, ExpansionConfig(w_bits=b, w_terms=2, a_bits=b, a_terms=2), device="cpu")
        laws = views.basis_laws(q, x, layer="layer2.1.conv2")
        rows += [{"config": label, **r} for r in laws.to_dict("records")]
    print(table(rows, [("config", "config", ""), ("level", "level", ""), ("law", "law", ""),
                       ("rel_diff", "relative gap", ".3g")]))
    return {"images": len(x), "rows": rows}
