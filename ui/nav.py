"""The page list, defined once: app.py routes with it and Home describes it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class PageInfo:
    path: str  # script under pages/
    title: str  # navigation title, exactly as users see it
    icon: str  # material icon
    blurb: str  # one line for the Home page


PAGES = [
    PageInfo("pages/home.py", "Home", ":material/home:", "What Prunescope does and where to start."),
]
