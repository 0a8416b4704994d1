"""fpxint app: explore FP=xINT series-expansion quantization.  Run: streamlit run app.py"""
import streamlit as st

from fpxint import ui

st.set_page_config(page_title="fpxint: FP=xINT explorer", page_icon=":material/functions:", layout="wide")

# st.navigation (not pages/ auto-discovery) so that the shared sidebar is rendered ONCE, here, before
# every page: one set of widgets, one ExpansionConfig, one URL, whichever page is open. The url_paths
# differ from the file names on purpose: Streamlit's legacy pages/ routing (still consulted on a
# session's first run) then falls back to this script instead of running a page without the sidebar.
PAGES = [
    st.Page("pages/1_expand_run.py", title="Expand", icon=":material/play_arrow:", url_path="expand", default=True),
    st.Page("pages/2_layer_residuals.py", title="Layer residuals", icon=":material/grid_on:", url_path="residuals"),
    st.Page("pages/3_convergence_curves.py", title="Convergence", icon=":material/trending_down:", url_path="convergence"),
    st.Page("pages/4_accuracy_recovery.py", title="Accuracy recovery", icon=":material/target:", url_path="accuracy"),
    st.Page("pages/5_basis_models.py", title="Basis models", icon=":material/functions:", url_path="basis"),
    st.Page("pages/6_compare_configs.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page("pages/7_export_results.py", title="Export", icon=":material/download:", url_path="export"),
]
page = st.navigation(PAGES)
ui.sidebar()
page.run()
