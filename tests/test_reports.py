"""The self-contained HTML report (fpxint/reports.py): plotly.js inlined once, every figure and table in
order, everything the user typed escaped."""
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from fpxint.reports import build_report


def test_report_holds_every_figure_and_table_in_order_and_escapes_text():
    figs = {"first <b>": go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), "second": go.Figure(go.Bar(x=["a"], y=[1]))}
    tables = {"Metrics & more": pd.DataFrame({"top1": [97.123456]})}
    page = build_report("T <script>", figs, tables, config_json='{"w_bits": 4, "x": "<i>"}', subtitle="s & t")
    assert page.count(get_plotlyjs()) == 1  # the library once, offline
    assert page.count('class="plotly-graph-div"') == 2 and "<script src=" not in page
    assert page.index("Metrics &amp; more") < page.index("first &lt;b&gt;") < page.index("<h2>second</h2>")
    assert "<title>T &lt;script&gt;</title>" in page and "s &amp; t" in page
    assert "97.12" in page and "97.123456" not in page  # tables at 4 significant digits
    assert "<h2>Configuration</h2><pre>{&quot;w_bits&quot;: 4, &quot;x&quot;: &quot;&lt;i&gt;&quot;}</pre>" in page


def test_report_without_tables_or_config():
    page = build_report("only", {})
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</body></html>")
    assert "<h2>Configuration</h2>" not in page and 'class="plotly-graph-div"' not in page
