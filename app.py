"""Prunescope: router and frame. Nothing heavy here; every page is a short script in pages/."""

import streamlit as st

from ui.nav import PAGES

# st.navigation first: until it runs, Streamlit treats pages/ as its old multipage folder.
pages = [st.Page(p.path, title=p.title, icon=p.icon, default=i == 0) for i, p in enumerate(PAGES)]
current = st.navigation(pages)
st.set_page_config(page_title="Prunescope", page_icon=":material/content_cut:", layout="wide")

from ui.widgets import remember  # noqa: E402 - imports torch: after navigation is settled

remember("search_")  # the Search form keeps its settings while other pages are shown
remember("fx_")  # and so does the Fine-tune & Export form
current.run()
