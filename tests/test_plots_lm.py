"""Language-model figures (fpxint/plots_lm.py): pure DataFrame -> figure; the heatmap's cells are the table's
numbers (log10 of the error), kinds in the documented order, one scatter trace per kind present."""
import math

import numpy as np
import pandas as pd

from fpxint.plots_lm import KIND_ORDER, block_kind_map, outlier_scatter


def _report():
    rows = []
    for block in range(3):
        for kind in ("down", "q", "k"):  # deliberately out of KIND_ORDER
            for terms in (1, 2):
                err = 10.0 ** -(block + terms) * (2 if kind == "down" else 1)
                rows.append(dict(layer=f"model.layers.{block}.{kind}", block=block, kind=kind, terms=terms,
                                 rel_l2=err, sqnr_db=-20 * math.log10(err), outlier=5.0 + block))
    rows.append(dict(layer="lm_head", block=np.nan, kind="head", terms=1, rel_l2=0.5, sqnr_db=6.0, outlier=3.0))
    return pd.DataFrame(rows)


def test_block_kind_map_cells_are_the_errors():
    df = _report()
    before = df.copy()
    fig = block_kind_map(df, terms=2)
    heat = fig.data[0]
    assert list(heat.x) == ["q", "k", "down"] and list(heat.y) == [0, 1, 2]  # the head has no block: left out
    z = np.asarray(heat.z, dtype=float)
    for i, block in enumerate((0, 1, 2)):
        for j, kind in enumerate(("q", "k", "down")):
            want = df[(df.block == block) & (df.kind == kind) & (df.terms == 2)].rel_l2.iloc[0]
            assert z[i, j] == np.log10(want) and heat.text[i][j] == f"{want:.3g}"
    assert "2 terms" in fig.layout.title.text and fig.layout.yaxis.autorange == "reversed"
    sq = block_kind_map(df, terms=1, metric="sqnr_db").data[0]
    assert np.asarray(sq.z, dtype=float)[0, 0] == df[(df.layer == "model.layers.0.q") & (df.terms == 1)].sqnr_db.iloc[0]
    pd.testing.assert_frame_equal(df, before)  # the caller's table is untouched


def test_outlier_scatter_one_trace_per_kind_in_order():
    fig = outlier_scatter(_report(), terms=1)
    assert [t.name for t in fig.data] == [k for k in KIND_ORDER if k in ("q", "k", "down", "head")]
    q = fig.data[0]
    assert list(q.x) == [5.0, 6.0, 7.0] and list(q.text) == [f"model.layers.{b}.q" for b in range(3)]
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
