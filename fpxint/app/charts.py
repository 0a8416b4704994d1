"""The app's one way to draw a figure (its own module: the language-model pages use it too, below widgets)."""
from __future__ import annotations

import streamlit as st


def chart(fig, name: str) -> None:
    """Renders a figure with Streamlit's theme and remembers it for the HTML report."""
    st.plotly_chart(fig, theme="streamlit", key=f"chart_{name}")
    st.session_state.setdefault("_figures", {})[name] = fig
