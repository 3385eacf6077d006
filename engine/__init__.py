"""Prunescope engine: search spaces of channel widths, subnet evaluation, Pareto fronts, export.

Pure Python + torch + duckdb. Never imports Streamlit (tests/test_import_hygiene.py proves it).
"""

__version__ = "0.1.0"
