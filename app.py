"""Prunescope: router and frame. Nothing heavy here; every page is a short script in pages/."""

import streamlit as st

from ui.nav import PAGES

st.set_page_config(page_title="Prunescope", page_icon=":material/content_cut:", layout="wide")

pages = [st.Page(p.path, title=p.title, icon=p.icon, default=i == 0) for i, p in enumerate(PAGES)]
st.navigation(pages).run()
