"""Hands a cold server's link to /convergence to the app (the page itself is fpxint/app/pages/3_convergence.py).

Streamlit routes through this pages/ folder until the process's first st.navigation call; this file
then runs the app, whose st.navigation opens the page by its url_path (see fpxint.app.main.run).
"""
from fpxint.app.main import run

run()
