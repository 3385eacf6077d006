"""The page list, defined once: app.py routes with it and Home describes it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class PageInfo:
    path: str  # script under pages/
    title: str  # navigation title, exactly as users see it
    icon: str  # material icon
    blurb: str  # one line for the Home page


PAGES = [
    PageInfo(
        "pages/home.py", "Home", ":material/home:", "What Prunescope does and where to start."
    ),
    PageInfo(
        "pages/search.py",
        "Search",
        ":material/travel_explore:",
        "Pick a model, weights, dataset and constraint; run a search and watch the front grow.",
    ),
    PageInfo(
        "pages/explore.py",
        "Explore",
        ":material/scatter_plot:",
        "Accuracy versus FLOPs: slide a FLOP budget, see what you give up, inspect widths.",
    ),
    PageInfo(
        "pages/compare.py",
        "Compare",
        ":material/compare_arrows:",
        "Two to four subnets side by side: metrics, kept channels, per-class accuracy.",
    ),
    PageInfo(
        "pages/finetune_export.py",
        "Fine-tune & Export",
        ":material/model_training:",
        "Fine-tune a subnet (optionally distilled from its parent), export it to ONNX with "
        "parity, latency, INT8 and a model card, and download the files.",
    ),
    PageInfo(
        "pages/runs.py",
        "Runs",
        ":material/table_rows:",
        "Every run in the database: overlay fronts, resume interrupted runs, delete.",
    ),
]


def through_app() -> None:
    """Call first on every page: make sure it runs inside app.py's st.navigation.

    Streamlit decides per process whether `pages/` is its old multipage folder: until app.py has
    called st.navigation once, it runs `pages/*.py` on their own (no app.py, lowercase file
    names in the sidebar), and it stays so for good if the first visit of a fresh server is a
    deep link such as /search. This sets that flag off and reruns through app.py. (AppTest
    resets the flag before every run, so there the page simply runs on its own.)
    """
    import streamlit as st
    from streamlit import config
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and not config.get_option("global.appTest"):
        PagesManager.uses_pages_directory = False
        st.rerun()
