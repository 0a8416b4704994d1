"""The app's Streamlit layer, the only part of fpxint that imports Streamlit. Pages write
`from fpxint import app as ui` and call `ui.X`; the names come from modules split by job:

- `main`: the pages, the navigation and the start-up warm-up (`run`, `warm_at_start`); `pages/`: the page
  scripts; `script/fpxint_app.py`: the Streamlit script of the installed package (`fpxint app`).
- `sidebar`: the shared sidebar rendered once per run; it builds ONE `ExpansionConfig` and keeps it in the
  URL (`st.query_params`).
- `context`: the `Context` every page reads, the settings' defaults and allowed values.
- `loaders`: cached loaders (`st.cache_resource`, bounded) for models (keyed by `ModelRef`), images
  (`DataRef`) and expanded models; uploads in a private folder per session (`fpxint.scratch`), removed when the
  session ends; `redact`: every message a visitor sees has the server's paths replaced by names.
- `widgets`: `header`, `run_block` (Run / Stop, progress, results kept in the session so a failed,
  invalid or stopped run never wipes what is on screen), `chart`, `table`.
- `results`: the cached page results (`st.cache_data`, keyed by model + `cfg.to_json()` + data), around
  the plain functions of `fpxint.views`; `admit`: the server's limits and its queue of heavy runs;
  `slides`: the Explain page; `lm`: the language models' half.
"""
from __future__ import annotations

from . import lm as ui_lm
from .context import (ALLOCATION_KEY, CFG_KEYS, CHOICES, DATA_SOURCES, DEFAULTS, DEVICES, FAMILY,  # noqa: F401
                      INT_RANGES, MAX_PARAM_CHARS, PAGE_PARAMS, Context, context)
from .loaders import (ModelRef, _first_line, _save_upload, _swept, expanded_model, images_of,  # noqa: F401
                      model_of, redact)
from .admit import _admitted, estimate, limits, probe_size, sweep_work  # noqa: F401
from .widgets import _Progress, chart, chosen_bits, header, metrics_table, run_block, table  # noqa: F401
from .results import (accuracy, allocation, basis_demo, compare, convergence,  # noqa: F401
                      expanded_layer_names, expansion_metrics, export_bytes, layer_terms, residuals)
from .sidebar import _bundled_source, _default_source, default_refs, prewarm, sidebar  # noqa: F401
from .slides import explain_part, page_step, slide_assets, slide_chart  # noqa: F401
