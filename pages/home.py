"""Home: the product in one paragraph and the pages that exist."""

import streamlit as st

from engine.workspace import db_path
from ui.nav import PAGES, through_app

through_app()

st.title("Prunescope")
st.markdown(
    "Make a trained network smaller and faster without guessing: Prunescope turns a model into a "
    "space of channel widths, evaluates many real subnets (accuracy after BatchNorm "
    "recalibration, exact FLOPs and parameters), and plots the accuracy-versus-FLOPs Pareto front."
)
st.subheader("Pages")
for page in PAGES:
    st.markdown(f"- **{page.title}** — {page.blurb}")
st.caption(f"Results database: `{db_path()}`")
