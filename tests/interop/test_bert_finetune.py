"""Fine-tuning a tiny imported BERT (the bert_base fixture: BertModel + pooler) as a classifier on
a small local TSV written here (configs/bert_classify.py): it learns the rule behind the labels
(validation accuracy well above chance), resumes from the workdir alone, and the result
classifies with the file's label names; the local-file reader names its bad rows."""

from __future__ import annotations

import importlib.util
import json
import logging
import pathlib

import numpy as np
import pytest

import tfm
from tfm.data import labeled_files
from tfm.data.config import DataConfig
from tfm.training.loop import run

from interop_helpers import FIXTURES

WORDS = "the quick brown fox jumps over lazy dog how are you today weather is nice and sun shining".split()


def _write_tsv(path, n, seed):
    """Label 'yes' when the text starts with 'hello', 'no' when it starts with 'numbers'."""
    rng = np.random.default_rng(seed)
    lines = ["label\ttext"]
    for _ in range(n):
        yes = bool(rng.integers(2))
        body = " ".join(rng.choice(WORDS, size=rng.integers(2, 6)))
        lines.append(f"{'yes' if yes else 'no'}\t{'hello' if yes else 'numbers'} {body}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _config(train_file, valid_file, **train):
    spec = importlib.util.spec_from_file_location(
        "bert_classify", pathlib.Path(__file__).resolve().parents[2] / "configs" / "bert_classify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.data.classification_file = str(train_file)
    c.data.classification_valid_file = str(valid_file)
    c.data.max_len = 16
    c.data.max_target_len = 16
    c.data.batch_size = 16
    c.data.eval_batch_size = 32
    c.model.dropout_rate = 0.0
    c.model.attention_dropout_rate = 0.0
    c.train.init_from = str(FIXTURES / "bert_base")
    c.train.num_steps = 40
    c.train.learning_rate = 3e-3
    c.train.warmup_steps = 5
    c.train.checkpoint_every_steps = 20
    c.train.eval_every_steps = 0
    c.train.eval_at_end = True
    c.train.strategy = "single"
    c.train.async_checkpointing = False
    c.train.progress_bar = False
    c.train.log_every_steps = 10
    for k, v in train.items():
        setattr(c.train, k, v)
    return c


def test_finetune_learns_a_local_tsv_and_resumes(tmp_path):
    train_file = _write_tsv(tmp_path / "train.tsv", 200, 0)
    valid_file = _write_tsv(tmp_path / "valid.tsv", 64, 1)
    workdir = tmp_path / "run"
    result = run(_config(train_file, valid_file, num_steps=20), workdir)
    assert result["step"] == 20
    result = run(_config(train_file, valid_file), workdir)  # resumes from the workdir
    assert result["step"] == 40
    accuracy = result["eval"]["accuracy"]
    assert accuracy > 0.85, result["eval"]
    assert result["eval"]["f1_yes"] > 0.8 and result["eval"]["f1_no"] > 0.8 and "macro_f1" in result["eval"]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["head"] == "classifier" and saved["model"]["class_names"] == ["no", "yes"]
    pre = tfm.inference.load(workdir)
    got = tfm.classify(pre, ["hello the quick fox", "numbers the quick fox"])
    assert [g["label"] for g in got] == ["yes", "no"]
    # the encoder started from the import, the classifier did not exist there
    out = tmp_path / "export"
    tfm.save_pretrained(pre, out)
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "no", "1": "yes"}
    try:  # transformers (when installed) loads the fine-tuned classifier with the same logits
        import torch
        import transformers
    except ImportError:
        return
    back = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    enc = hf_tok(["hello the quick fox", "numbers the lazy dog today"], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = back(**enc).logits.numpy()
    got = pre.model.apply({"params": pre.params}, np.asarray(enc["input_ids"], np.int32),
                          token_types=np.asarray(enc["token_type_ids"], np.int32),
                          segment_ids=np.asarray(enc["attention_mask"], np.int32))
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=0)
    assert back.config.id2label == {0: "no", 1: "yes"}


def test_bad_rows_are_counted_and_named(tmp_path, caplog):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "good one", "label": "pos"}\n{"text": "", "label": "neg"}\n'
                    '{"label": "neg"}\n{"text": "x", "label": "maybe"}\nnot json\n'
                    '{"text": "bad one", "label": 0}\n', encoding="utf-8")
    cfg = DataConfig(dataset="classification_file", classification_file=str(path), label_names=("neg", "pos"))
    with caplog.at_level(logging.WARNING):
        rows = labeled_files.read_examples(cfg, str(path), cfg.label_names)
    assert rows == [("good one", 1), ("bad one", 0)]
    message = caplog.text
    for part in (f"{path}: 4 of 6 rows left out", f"{path}:2 (empty text)", f"{path}:3 (no column 'text')",
                 f"{path}:4 (unknown label 'maybe')", f"{path}:5 (not a JSON object)"):
        assert part in message, part
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\n\"a, b\",2\nc,0\nd,\n", encoding="utf-8")
    cfg = DataConfig(dataset="classification_file", classification_file=str(csv))
    assert labeled_files.label_names(cfg) == ("0", "1", "2")
    # the workdir records the file's content: resuming on a changed file is refused
    from tfm.training.workdir_guard import provenance

    before = provenance(cfg)
    csv.write_text("text,label\n\"a, b\",2\nc,1\n", encoding="utf-8")
    assert before["data.classification_file sha256"] != provenance(cfg)["data.classification_file sha256"]
    with pytest.raises(ValueError, match="DataConfig.classification_file"):
        DataConfig(dataset="classification_file")
    with pytest.raises(ValueError, match="DataConfig.label_names"):
        DataConfig(dataset="classification_file", classification_file=str(csv), label_names=("a",))


def test_sentence_pairs_reach_the_model_with_token_types(tmp_path):
    """A text_pair_column: batches hold [CLS] a [SEP] b [SEP] with token types 0/1."""
    from tfm.data.pipeline import build_pipeline

    path = tmp_path / "pairs.jsonl"
    rows = [{"premise": f"hello {w}", "hypothesis": f"the {w} dog", "label": "yes" if i % 2 else "no"}
            for i, w in enumerate(WORDS)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    cfg = DataConfig(dataset="classification_file", classification_file=str(path), text_column="premise",
                     text_pair_column="hypothesis", tokenizer="pretrained", max_len=16, max_target_len=16,
                     batch_size=4, eval_batch_size=4)
    tok = tfm.interop.load_tokenizer(FIXTURES / "bert_base")
    pipe = build_pipeline(cfg, "encoder_classifier", pretrained_tokenizer=tok)
    batch = next(iter(pipe.eval_batches("validation")))
    ids, types, seg = batch["inputs"][0], batch["token_types"][0], batch["segment_ids"][0]
    (want_ids, want_types), = tok.encode_for_model(*[[x] for x in pipe._eval_data("validation")[1][0][0]],
                                                   max_len=16)
    n = len(want_ids)
    assert ids[:n].tolist() == want_ids.tolist() and types[:n].tolist() == want_types.tolist()
    assert seg[:n].all() and not seg[n:].any() and types[:n].max() == 1
    # and a run trains on them (the steps hand token_types to the model)
    c = _config(path, "", num_steps=2, checkpoint_every_steps=2)
    c.data.text_column, c.data.text_pair_column = "premise", "hypothesis"
    result = run(c, tmp_path / "run")
    assert result["step"] == 2 and np.isfinite(result["eval"]["loss"])
