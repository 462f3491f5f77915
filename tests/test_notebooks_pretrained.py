"""Executes the remaining notebooks (Shakespeare, and the ones on imported checkpoints: Llama
family, BERT) with small settings, in a file of their own so that pytest-xdist can run it beside
tests/test_notebooks.py."""

import pytest
from notebook_runner import NOTEBOOKS, run_notebook

PRETRAINED = [p for p in NOTEBOOKS if p.stem[:2] not in ("01", "02")]


@pytest.mark.parametrize("path", PRETRAINED, ids=lambda p: p.stem)
def test_notebook_runs_and_draws(path, tmp_path, monkeypatch, request):
    run_notebook(path, tmp_path, monkeypatch, request)
