"""fpxint app: explore FP=xINT series-expansion quantization.  Run: streamlit run app.py"""
import streamlit as st

from fpxint import ui

st.set_page_config(page_title="fpxint: FP=xINT explorer", page_icon=":material/functions:", layout="wide")

# st.navigation (not pages/ auto-discovery) so that the shared sidebar is rendered ONCE, here, before
# every page: one set of widgets, one ExpansionConfig, one URL, whichever page is open. Each url_path
# equals the name Streamlit's legacy pages/ routing derives from the file name; that routing still
# handles a server's very first run, and ui.header() then hands control back to this script.
PAGES = [
    st.Page("pages/1_expand.py", title="Expand", icon=":material/play_arrow:", url_path="expand", default=True),
    st.Page("pages/2_residuals.py", title="Layer residuals", icon=":material/grid_on:", url_path="residuals"),
    st.Page("pages/3_convergence.py", title="Convergence", icon=":material/trending_down:", url_path="convergence"),
    st.Page("pages/4_accuracy.py", title="Accuracy recovery", icon=":material/target:", url_path="accuracy"),
    st.Page("pages/5_basis.py", title="Basis models", icon=":material/functions:", url_path="basis"),
    st.Page("pages/6_compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page("pages/7_export.py", title="Export", icon=":material/download:", url_path="export"),
    st.Page("pages/8_allocate.py", title="Allocate terms", icon=":material/tune:", url_path="allocate"),
]
page = st.navigation(PAGES)
ui.sidebar()
page.run()
