"""Real browser against `streamlit run app.py`."""

import re
import time
import urllib.request
import zipfile

import pytest

pytestmark = pytest.mark.e2e
expect = pytest.importorskip("playwright.sync_api").expect


def test_server_health_and_home_page(app_server, browser, artifacts):
    with urllib.request.urlopen(f"{app_server}/_stcore/health", timeout=5) as resp:
        assert resp.read().decode().strip() == "ok"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_server)
    page.get_by_role("heading", name="Prunescope").wait_for(timeout=60_000)
    page.screenshot(path=str(artifacts / "home.png"), full_page=True)
    expect(page.get_by_role("heading", name="Pages")).to_be_visible(timeout=30_000)
    page.close()


def _set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    _idle(page)
    expect(box).to_have_value(str(value))


def _metric(page, label: str) -> str:
    """The value shown by st.metric(label)."""
    card = page.get_by_test_id("stMetric").filter(has_text=label)
    return card.get_by_test_id("stMetricValue").inner_text()


def _idle(page, timeout: float = 30_000) -> None:
    """Wait until the script run triggered by the last interaction has finished."""
    page.wait_for_timeout(250)
    page.locator("[data-testid='stStatusWidget']").wait_for(state="detached", timeout=timeout)


def _nav(page, title: str) -> None:
    """Open a page from the sidebar (pages also link to each other in their content)."""
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name=title, exact=True).click()


def _small_search(page, artifacts=None) -> None:
    """A small search on the built-in dataset (built-in weights when they ship, else random),
    on 1500 training and 500 test images so that a fine-tune epoch takes seconds."""
    _nav(page, "Search")
    page.get_by_role("heading", name="Search").wait_for(timeout=60_000)
    _set_number(page, "Subnets to evaluate", 6)
    page.get_by_text("Advanced").click()
    _set_number(page, "Calibration size", 256)
    _set_number(page, "Validation size", 256)
    _set_number(page, "Training images", 1500)
    _set_number(page, "Test images", 500)
    page.get_by_role("button", name="Start search").click()
    page.get_by_text(re.compile(r"subnets · about|Finished")).first.wait_for(timeout=150_000)
    if artifacts:
        page.screenshot(path=str(artifacts / "search-running.png"), full_page=True)
    page.get_by_text("Finished: 6 subnets evaluated.").wait_for(timeout=150_000)
    _idle(page)
    if artifacts:
        page.screenshot(path=str(artifacts / "search-done.png"), full_page=True)


def test_search_explore_compare(app_server, browser, artifacts):
    page = browser.new_page(viewport={"width": 1400, "height": 2000})  # whole pages in shots
    page.goto(app_server)
    _small_search(page, artifacts)

    # Explore: keyboard on the FLOP budget slider until the best subnet under it changes.
    page.get_by_role("link", name="Explore this run").click()
    slider = page.get_by_role("slider", name="FLOP budget")
    slider.wait_for(timeout=30_000)
    _idle(page)
    page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=30_000)
    page.screenshot(path=str(artifacts / "explore-before.png"), full_page=True)
    before = {k: _metric(page, k) for k in ("Best under budget", "Accuracy lost", "FLOPs saved")}
    start = int(slider.input_value())
    after, moved = before, 0
    for key in ("ArrowLeft", "ArrowRight"):
        for _ in range(60):
            slider.focus()
            slider.press(key)
            moved += 1
            _idle(page)
            after = {k: _metric(page, k) for k in before}
            if after["Best under budget"] != before["Best under budget"]:
                break
            if slider.input_value() in (slider.get_attribute("min"), slider.get_attribute("max")):
                break
        if after["Best under budget"] != before["Best under budget"]:
            break
    assert int(slider.input_value()) != start
    assert after["Best under budget"] != before["Best under budget"], (before, after, moved)
    assert after["FLOPs saved"] != before["FLOPs saved"]
    page.screenshot(path=str(artifacts / "explore-after.png"), full_page=True)

    # Clicking a point selects it: a "Selected" ring on the chart and its widths below.
    chart = page.get_by_test_id("stPlotlyChart").filter(has_text="Pareto front")
    legend = chart.locator("text.legendtext")
    points = chart.locator("g.trace.scatter").first.locator("path.point")
    for i in range(points.count()):
        points.nth(i).click(force=True)  # the parent's star may cover a full-width subnet
        _idle(page)
        if "Selected" in legend.all_text_contents():
            break
    if (
        "Selected" not in legend.all_text_contents()
    ):  # clicks can miss on a loaded machine: pick from the list
        page.get_by_test_id("stSelectbox").filter(has_text="Subnet").click()
        page.get_by_role("option").nth(1).click()
        _idle(page)
    expect(legend.filter(has_text="Selected")).to_have_count(1, timeout=30_000)
    widths_chart = page.get_by_test_id("stPlotlyChart").filter(has_text="channels kept")
    widths = widths_chart.locator("text.legendtext")
    expect(widths.nth(1)).to_have_text(re.compile(r"^Subnet \d+$"))
    page.screenshot(path=str(artifacts / "explore-selected.png"), full_page=True)

    # Compare: two subnets by default; per-class accuracy after rebuilding them.
    page.get_by_role("link", name="Compare").click()
    page.get_by_role("heading", name="Compare").wait_for(timeout=30_000)
    _idle(page)
    chips = page.get_by_test_id("stMultiSelect").locator("span[data-tag]")
    expect(chips).to_have_count(2, timeout=30_000)  # the page may still be drawing
    started = time.time()
    page.get_by_role("button", name="Compute per-class accuracy").click()
    page.get_by_role("heading", name="Per-class accuracy (search-validation)").wait_for()
    per_class = page.get_by_test_id("stPlotlyChart").filter(has_text="accuracy (search-validation)")
    per_class.wait_for(timeout=120_000)
    _idle(page, timeout=120_000)
    assert time.time() - started < 120
    page.screenshot(path=str(artifacts / "compare.png"), full_page=True)
    page.close()


def test_finetune_export_download(app_server, browser, artifacts, tmp_path):
    """Fine-tune a subnet of the walk's run for one epoch, export it, download the zip."""
    page = browser.new_page(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
    page.goto(app_server)
    _nav(page, "Fine-tune & Export")
    heading = page.get_by_role("heading", name="Fine-tune & Export")
    heading.wait_for(timeout=60_000)
    _idle(page)
    if page.get_by_text("No runs yet").count():  # run on its own: make the walk's run first
        _small_search(page)
        _nav(page, "Fine-tune & Export")
        heading.wait_for(timeout=60_000)
        _idle(page)

    _set_number(page, "Epochs", 1)
    page.get_by_role("button", name="Start fine-tune").click()
    page.get_by_text(re.compile(r"^Epoch 1 of 1 · batch \d+ of \d+$")).wait_for(timeout=120_000)
    page.screenshot(path=str(artifacts / "finetune-running.png"), full_page=True)
    page.get_by_text(re.compile(r"^Fine-tuned in ")).wait_for(timeout=300_000)
    _idle(page)
    table = page.get_by_test_id("stDataFrame").first
    expect(table).to_contain_text("done")
    # the fine-tune just made is the export source
    expect(page.get_by_role("combobox", name="Source")).to_have_value(re.compile(r"^Fine-tune "))
    page.screenshot(path=str(artifacts / "finetune-done.png"), full_page=True)

    page.get_by_text("Also make an INT8 model").click()
    _idle(page)
    page.get_by_role("button", name="Export", exact=True).click()
    page.get_by_text(re.compile(r"^Step \d of \d+: ")).first.wait_for(timeout=120_000)
    page.get_by_text(re.compile(r"^Exported ")).wait_for(timeout=300_000)
    _idle(page)
    expect(page.get_by_text(re.compile(r"^Parity passed")).first).to_be_visible()
    expect(
        page.get_by_role("cell", name="ONNX Runtime latency, batch 32", exact=True)
    ).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile(r"^Model card: "))).to_be_visible()
    page.screenshot(path=str(artifacts / "export-done.png"), full_page=True)
    page.get_by_text("Report of").scroll_into_view_if_needed()  # the app scrolls, not the page
    page.screenshot(path=str(artifacts / "export-report.png"))
    downloads = page.get_by_role("button", name="All files (.zip)")
    downloads.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "export-downloads.png"))

    with page.expect_download(timeout=60_000) as info:
        downloads.click()
    download = info.value
    assert download.suggested_filename.endswith(".zip")
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        card = zf.read("MODEL_CARD.md").decode()
    expected = {"model.onnx", "model.int8.onnx", "model.safetensors", "subnet.json"}
    assert expected | {"model_card.json", "MODEL_CARD.md"} <= names, names
    assert "Fine-tuned (`" in card and "**passed**" in card

    # Explore: the fine-tune is a diamond over its subnet.
    _nav(page, "Explore")
    chart = page.get_by_test_id("stPlotlyChart").filter(has_text="Pareto front")
    chart.wait_for(timeout=30_000)
    page.get_by_role("slider", name="FLOP budget").wait_for(timeout=30_000)
    _idle(page)
    expect(chart.locator("text.legendtext").filter(has_text="Fine-tuned")).to_have_count(1)
    page.screenshot(path=str(artifacts / "explore-finetuned.png"), full_page=True)
    page.close()
