"""Runs one notebook of notebooks/ with small settings (shared by the notebook test files, which
are split so that pytest-xdist's whole-file scheduling can put them on different workers).

The notebooks read TFM_NOTEBOOK_SMALL=1 to shrink their training budgets to about a minute on
CPU. Each must also produce its figures (PNG outputs); a failing cell fails the test.
"""

import os
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def run_notebook(path, tmp_path, monkeypatch, request):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} is stored with outputs"
    if "shakespeare" in path.stem:  # offline, it trains on the shared copy of the text
        # the fixture, not an import of conftest: with tests/training/conftest.py collected
        # first, "from conftest import" finds that module instead
        text = request.getfixturevalue("shared_data") / "tinyshakespeare.txt"
        if not text.is_file():
            pytest.skip(f"{text} not present (and TFDS cannot download here)")
        monkeypatch.setenv("TFM_TEXT_FILE", str(text))
    monkeypatch.setenv("TFM_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("TFM_NOTEBOOK_WORKDIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # the kernel is a fresh process: undo the 8 fake devices the test conftest asked for
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", ""))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no figure"
