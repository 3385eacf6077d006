"""AppTest of the Compare page: two to four subnets side by side.

Each test points the app at its own results file (the `db` fixture).
"""

from tests.apptest import (
    figures,
    open_page,
    trace_names,
)
from tests.factories import make_run


def test_compare_two_to_four_subnets(db):
    make_run(db)
    at = open_page("pages/compare.py")
    picked = at.multiselect[0]
    assert len(picked.value) == 2
    assert at.dataframe[0].value.shape[0] == 3  # the parent and two subnets
    assert not any("runtime" in c for c in at.dataframe[0].value.columns)  # an older run
    assert len(trace_names(figures(at)[0])) == 3
    assert any(b.label == "Compute per-class accuracy" for b in at.button)
    picked.set_value([1, 2, 3, 4]).run()
    assert not at.exception
    assert at.dataframe[0].value.shape[0] == 5
    assert len(trace_names(figures(at)[0])) == 5
