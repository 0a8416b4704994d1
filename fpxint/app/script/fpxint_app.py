"""fpxint app from the installed package: `fpxint app` runs `streamlit run` on this file (a checkout's
`app.py` does the same; both run fpxint.app.main).

Alone in its folder on purpose: Streamlit puts the script's folder first on sys.path, and a `pages/`
folder beside the script would turn on Streamlit's legacy pages/ routing. As in app.py, Streamlit runs
this file as `__main__` for every session, and imports it once as a module to find the st.App whose
lifespan computes the default view before the server serves.
"""
import streamlit as st

from fpxint.app import main

if __name__ == "__main__":
    main.run()
else:
    app = st.App(__file__, lifespan=main.warm_at_start)
