"""fpxint app from a checkout: `streamlit run app.py` (installed: `fpxint app`; both run fpxint.app.main).

Streamlit runs this file as a script (`__name__ == "__main__"`) for every session: that is the app. It also
imports it once as a module to look for an ASGI app: there it finds `app = st.App(...)`, whose lifespan
computes the default view into the app's caches before the server accepts its first connection.
"""
import streamlit as st

from fpxint.app import main

if __name__ == "__main__":
    main.run()
else:
    app = st.App(__file__, lifespan=main.warm_at_start)
