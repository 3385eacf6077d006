"""Every page renders through app.py, on an empty results database and on a populated one."""

import pytest

from tests.apptest import open_page, title_of
from tests.factories import make_run
from ui.nav import PAGES

PAGE_PATHS = [p.path for p in PAGES if p.title != "Home"]


@pytest.mark.parametrize("page", PAGE_PATHS)
def test_page_renders_on_empty_database(db, page):
    at = open_page(page)
    assert at.title[0].value == title_of(page)
    assert not at.error
    if page != "pages/search.py":
        assert "No runs" in at.info[0].value


@pytest.mark.parametrize("page", PAGE_PATHS)
def test_page_renders_on_populated_database(db, page):
    make_run(db)
    at = open_page(page)
    assert at.title[0].value == title_of(page)
    assert not at.error
