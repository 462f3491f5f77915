"""The loop's outputs and failure behaviour: workdir contents, metrics, evaluation with
decoding, MFU; NaN stops the run naming the step; a workdir of another model is refused."""

import json
import math
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import tiny_config

from tfm.config import ModelConfig
from tfm.training.loop import NonFiniteLossError, WorkdirMismatchError, run
from tfm.training.workdir_guard import model_differences
from tfm.training.writer import read_metrics


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = tiny_config(**{
        "train.num_steps": 4, "train.log_every_steps": 2, "train.eval_at_end": True,
        "train.eval_decode_examples": 8, "train.peak_flops_per_device": 1e12,
    })
    return workdir, config, run(config, workdir)


def test_translation_eval_never_decodes_ids_past_the_tokenizer(tmp_path):
    """An embedding table padded past the tokenizer's vocabulary (vocab_size set larger, e.g. to
    a multiple of 128): evaluation's decoding chooses only the tokenizer's ids (an untrained
    model's argmax lands in the padding; decoding it would stop the run)."""
    config = tiny_config(**{
        "train.num_steps": 1, "train.eval_at_end": True, "train.eval_decode_examples": 8,
        "model.vocab_size": 1024,
    })
    result = run(config, tmp_path)
    assert result["step"] == 1 and 0 <= result["eval"]["bleu"] <= 100


def test_workdir_holds_everything_a_run_needs(finished):
    workdir, _, result = finished
    assert result["step"] == 4
    names = set(os.listdir(workdir))
    assert {"config.json", "tokenizer", "checkpoints", "metrics.jsonl", "tensorboard"} <= names
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["vocab_size"] > 0  # resolved from the tokenizer
    assert os.listdir(workdir / "tensorboard")  # event files
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4"]


def test_metrics_are_logged_every_n_steps_with_throughput_and_mfu(finished):
    workdir, _, _ = finished
    train = read_metrics(str(workdir), "train")
    assert sorted(train) == [2, 4]  # pulled every log_every_steps=2, not every step
    record = train[4]
    for key in ("loss", "nll", "accuracy", "perplexity", "learning_rate", "grad_norm",
                "tokens_per_second", "mfu"):
        assert key in record and math.isfinite(record[key]), key
    assert 0 < record["mfu"] < 1
    assert record["perplexity"] == pytest.approx(math.exp(record["nll"]))


def test_evaluation_reports_loss_accuracy_perplexity_and_bleu(finished):
    workdir, _, result = finished
    evals = read_metrics(str(workdir), "eval")
    assert list(evals) == [4]
    record = evals[4]
    for key in ("loss", "accuracy", "perplexity", "bleu", "exact_match"):
        assert key in record, key
    assert 0 <= record["accuracy"] <= 1 and 0 <= record["bleu"] <= 100
    assert record == {**result["eval"], "step": 4, "split": "eval"}


def test_numbers_evaluation_by_magnitude_in_jsonl_and_tensorboard(finished):
    # 0..999: validation holds numbers of both buckets (round-robin order, so the 8 decoded
    # ones do too), and every number below 1,000 is decoded as well ("below_1000/...")
    workdir, _, _ = finished
    record = read_metrics(str(workdir), "eval")[4]
    for prefix in ("", "below_1000/"):
        for key in ("exact_match", "bleu", "worst_exact_match", "exact_match/0-99",
                    "exact_match/100-999", "bleu/0-99", "bleu/100-999"):
            assert 0 <= record[prefix + key] <= 100, prefix + key
        assert record[prefix + "worst_exact_match"] == min(
            record[prefix + "exact_match/0-99"], record[prefix + "exact_match/100-999"])
    assert "exact_match/1000-9999" not in record  # no such numbers in this run
    tags = _tensorboard_tags(workdir / "tensorboard")
    assert {"eval/exact_match/0-99", "eval/bleu/100-999", "eval/worst_exact_match",
            "eval/below_1000/exact_match/0-99"} <= tags


def _tensorboard_tags(directory) -> set[str]:
    """Scalar tags of the TensorBoard event files (TFRecord framing, tensorboardX's protos)."""
    import struct

    from tensorboardX.proto import event_pb2

    tags = set()
    for name in os.listdir(directory):
        data = (directory / name).read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            tags.update(v.tag for v in event.summary.value)
            pos += 12 + length + 4
    return tags


def test_a_workdir_of_a_different_model_is_refused_untouched(finished):
    workdir, config, _ = finished
    before = (workdir / "config.json").read_text(), sorted(os.listdir(workdir / "checkpoints"))
    config.model.d_model = 32
    with pytest.raises(WorkdirMismatchError, match=r"model\.d_model: 16 in the workdir, 32 now"):
        run(config, workdir)
    after = (workdir / "config.json").read_text(), sorted(os.listdir(workdir / "checkpoints"))
    assert before == after


def test_what_counts_as_a_different_model():
    base = ModelConfig(vocab_size=40)
    assert model_differences(base, base.replace(dtype="bfloat16", remat="full", grad_kernels="autodiff")) == []
    assert model_differences(base, base.replace(vocab_size=0)) == []  # 0 = from the tokenizer
    assert model_differences(base, base.replace(num_layers=3)) == [
        "model.num_layers: 6 in the workdir, 3 now"]


def test_which_steps_flush_evaluate_and_save():
    from tfm.training.config import TrainConfig
    from tfm.training.loop import _due

    def steps(what, **settings):
        train = TrainConfig(**{"num_steps": 12, "log_every_steps": 5, "eval_every_steps": 4,
                               "checkpoint_every_steps": 6, "eval_at_end": False, **settings})
        return [step for step in range(1, train.num_steps + 1) if getattr(_due(step, train), what)]

    assert steps("evaluate") == [4, 8, 12]
    assert steps("checkpoint") == [6, 12]
    assert steps("flush") == [4, 5, 6, 8, 10, 12]  # before every evaluation and save
    assert steps("evaluate", eval_every_steps=0) == []
    assert steps("evaluate", eval_every_steps=0, eval_at_end=True) == [12]
    assert steps("checkpoint", num_steps=10) == [6, 10]  # the last step is always saved
    assert steps("flush", num_steps=7, eval_every_steps=0, checkpoint_every_steps=100) == [5, 7]


def test_the_saved_run_is_read_once_and_refused_when_missing_beside_checkpoints(tmp_path):
    from tfm.training import workdir_guard
    from tfm.training.config import RunConfig

    assert workdir_guard.saved_run(str(tmp_path)) is None  # a fresh workdir
    config = RunConfig.from_config_dict(tiny_config())
    workdir_guard.write_config(str(tmp_path), config)
    assert workdir_guard.saved_run(str(tmp_path)) == config
    (tmp_path / "config.json").unlink()
    (tmp_path / "checkpoints" / "7").mkdir(parents=True)
    with pytest.raises(WorkdirMismatchError, match="has checkpoints but no config.json"):
        workdir_guard.saved_run(str(tmp_path))


def test_checkpoints_without_a_config_are_refused(tmp_path):
    (tmp_path / "checkpoints" / "7").mkdir(parents=True)
    with pytest.raises(WorkdirMismatchError, match="no config.json"):
        run(tiny_config(), tmp_path)


def test_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # lr 1e30: step 1 is computed from the initial parameters (finite), its update makes them
    # ~1e30, and the forward pass of step 2 overflows.
    config = tiny_config(**{"train.learning_rate": 1e30, "train.checkpoint_every_steps": 1})
    with pytest.raises(NonFiniteLossError, match="at step 2"):
        run(config, tmp_path)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
    state = ocp.StandardCheckpointer().restore(tmp_path / "checkpoints" / "1" / "state")
    leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
    assert leaves and all(np.all(np.isfinite(x)) for x in leaves)
    assert sorted(read_metrics(str(tmp_path))) == [1]


def test_mixed_precision_step_computes_in_bfloat16_and_keeps_float32_parameters():
    """Traced only (no compilation): the switch reaches the model and the state stays float32."""
    from tfm.models import build_model
    from tfm.training import state as state_lib
    from tfm.training import steps
    from tfm.training.config import RunConfig
    from tfm.training.optimizer import make_schedule, make_tx

    cfg = RunConfig.from_config_dict(tiny_config(**{"model.dtype": "bfloat16", "model.vocab_size": 40}))
    model = build_model(cfg.model)
    schedule = make_schedule(cfg.train, cfg.model)
    tx = make_tx(cfg.train, schedule)
    state = jax.eval_shape(
        lambda r: state_lib.unbox(state_lib.boxed_init_fn(model, cfg.model, tx)(r)), jax.random.key(0)
    )
    batch = {k: jax.ShapeDtypeStruct((4, 6), np.int32) for k in ("inputs", "decoder_inputs", "targets")}
    step = steps.make_train_step(model, cfg.model.arch, tx, schedule, label_smoothing=0.1)
    new_state, metrics = jax.eval_shape(step, state, batch, jax.random.key(1))
    dtypes = {x.dtype for x in jax.tree.leaves(new_state.params)}
    assert dtypes == {np.dtype("float32")} and metrics["loss_sum"].dtype == np.float32
    jaxpr = str(jax.make_jaxpr(step)(state, batch, jax.random.key(1)))
    assert "bf16" in jaxpr  # the matmuls run in bfloat16


@pytest.mark.slow
def test_mixed_precision_trains_with_float32_parameters(tmp_path):
    """--config.model.dtype=bfloat16: bfloat16 compute, float32 parameters and optimiser state."""
    run(tiny_config(**{"model.dtype": "bfloat16", "train.num_steps": 2,
                       "train.checkpoint_every_steps": 2}), tmp_path)
    losses = read_metrics(str(tmp_path))
    assert sorted(losses) == [1, 2] and all(math.isfinite(r["loss"]) for r in losses.values())
    state = ocp.StandardCheckpointer().restore(tmp_path / "checkpoints" / "2" / "state")
    floats = [x for x in jax.tree.leaves(state) if np.issubdtype(np.asarray(x).dtype, np.floating)]
    assert floats and all(np.asarray(x).dtype == np.float32 for x in floats)


def test_sigint_and_sigterm_only_set_a_flag_and_a_second_sigint_interrupts():
    import signal

    from tfm.training.signals import StopSignals

    before = signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
