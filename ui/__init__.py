"""Thin Streamlit glue: cached resources, background job registry, shared widgets."""
