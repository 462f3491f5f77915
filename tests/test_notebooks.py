"""Executes the notebooks on the paper's models (attention, numbers, Shakespeare) with small
settings; the notebooks on imported checkpoints are tests/test_notebooks_pretrained.py."""

import pytest
from notebook_runner import NOTEBOOKS, run_notebook

PAPER = [p for p in NOTEBOOKS if p.stem[:2] in ("01", "02")]


def test_every_notebook_is_tested():
    from test_notebooks_pretrained import PRETRAINED

    assert NOTEBOOKS and sorted(PAPER + PRETRAINED) == NOTEBOOKS


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_notebook_runs_and_draws(path, tmp_path, monkeypatch, request):
    run_notebook(path, tmp_path, monkeypatch, request)
