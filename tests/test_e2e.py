"""Real browser against `streamlit run app.py`."""

import urllib.request

import pytest

pytestmark = pytest.mark.e2e


def test_server_health_and_home_page(app_server, browser, artifacts):
    with urllib.request.urlopen(f"{app_server}/_stcore/health", timeout=5) as resp:
        assert resp.read().decode().strip() == "ok"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_server)
    page.get_by_role("heading", name="Prunescope").wait_for(timeout=60_000)
    page.screenshot(path=str(artifacts / "home.png"), full_page=True)
    assert page.get_by_text("Pages").count() >= 1
    page.close()
