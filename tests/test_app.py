"""AppTest smoke tests: each page renders without an exception."""

from streamlit.testing.v1 import AppTest

from tests.conftest import REPO
from ui.nav import PAGES


def test_home_shows_product_and_pages():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Prunescope"
    text = " ".join(m.value for m in at.markdown)
    for page in PAGES:
        assert f"**{page.title}**" in text
