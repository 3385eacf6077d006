"""The process-wide job registry (engine.jobs), cached so every session and tab shares it."""

from __future__ import annotations

import streamlit as st

from engine.jobs import JobRegistry


@st.cache_resource(show_spinner=False)
def registry() -> JobRegistry:
    """The registry of this server process, shared by every session and tab."""
    return JobRegistry()
