"""TensorFlow is the ``tfds`` extra: the TFDS data sets say so when it is missing, and the
default task, text files and inference never import it."""

import pathlib
import subprocess
import sys
import textwrap

import pytest

from tfm.data import sources
from tfm.data.config import DataConfig
from tfm.data.pipeline import build_pipeline

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def no_tensorflow(monkeypatch):
    """``import tensorflow`` fails as in an install without the extra (even if a test before
    imported it: a None entry in sys.modules stops the import)."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)


@pytest.mark.parametrize("dataset", ["wmt14_ende", "lm1b", "sst2"])
def test_a_tfds_data_set_without_tensorflow_names_the_extra(dataset, no_tensorflow, tmp_path):
    cfg = DataConfig(dataset=dataset, tokenizer="char", tfds_data_dir=str(tmp_path))
    with pytest.raises(sources.MissingExtraError,
                       match=rf"dataset '{dataset}' is read with TensorFlow Datasets, which needs "
                             r"TensorFlow \(.*\); install it with: pip install 'tfm\[tfds\]'"):
        sources.load_examples(cfg, "train")
    assert not list(tmp_path.iterdir())  # refused before TFDS touched its data directory


def test_tiny_shakespeare_through_the_pipeline_without_tensorflow(no_tensorflow, tmp_path):
    cfg = DataConfig(dataset="tiny_shakespeare", tokenizer="char", tfds_data_dir=str(tmp_path))
    with pytest.raises(ImportError, match=r"'tiny_shakespeare'.*pip install 'tfm\[tfds\]'"):
        build_pipeline(cfg, "decoder_lm")


def test_text_files_and_inference_import_no_tensorflow(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40)
    code = textwrap.dedent(f"""
        import sys
        from tfm.data.config import DataConfig
        from tfm.data.pipeline import build_pipeline
        p = build_pipeline(DataConfig(dataset="text_file", text_file={str(text)!r}, tokenizer="char",
                                      max_len=32, batch_size=4, eval_batch_size=4), "decoder_lm")
        next(p.train_iter); list(p.eval_batches())
        import tfm
        lm = tfm.from_pretrained({str(REPO / "tests" / "fixtures" / "hf" / "gpt2")!r})
        assert isinstance(tfm.generate(lm, "Hello", max_new_tokens=2, temperature=0), str)
        import tfm.cli, tfm.training.loop
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets", "keras"))
        assert not leaked, leaked
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, cwd=REPO)


def test_train_py_reports_the_missing_extra_in_one_line(tmp_path):
    """The launcher: exit 1 and one ``error:`` line naming the extra, no traceback."""
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.modules["tensorflow"] = None  # an install without the tfds extra
        sys.argv = ["train.py", "--config.data.dataset=wmt14_ende", "--config.data.tokenizer=char",
                    "--workdir={tmp_path / 'run'}", "--config.data.tfds_data_dir={tmp_path / 'tfds'}"]
        runpy.run_path({str(REPO / "train.py")!r}, run_name="__main__")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: dataset 'wmt14_ende' is read with TensorFlow Datasets, which needs TensorFlow "
                      "(import of tensorflow halted; None in sys.modules); install it with: "
                      "pip install 'tfm[tfds]'"], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
