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


def test_no_page_restates_a_default():
    """Pages take widget defaults from the engine's dataclasses (ui/forms.py), never a dict."""
    import ast

    for page in PAGES:
        tree = ast.parse((REPO / page.path).read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                assert not any("DEFAULT" in n for n in names), f"{page.path} defines {names}"


def test_the_untouched_forms_describe_the_engines_defaults():
    from engine.config import DataSpec, FinetuneRecipe, ModelSpec, RunConfig, SearchConfig
    from engine.runtime import channel_block
    from ui import forms

    spec = ModelSpec(weights="random")
    config = forms.search_config(forms.search_defaults(), spec, None)
    assert config == RunConfig(
        model=spec, data=DataSpec(), search=SearchConfig(channel_block=channel_block())
    )
    assert forms.finetune_recipe(forms.finetune_defaults()) == FinetuneRecipe()
    assert forms.finetune_lr("sgd") == FinetuneRecipe().train.lr
