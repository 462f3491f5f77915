"""Issue 22: a batch that cannot fit in memory is refused before anything is allocated, in one
line saying what fits; running out of device memory in a step (XLA RESOURCE_EXHAUSTED) is one
line naming the batch size."""

import os

import jax
import pytest
from conftest import tiny_config

from tfm.config import get_preset
from tfm.data.config import DataConfig
from tfm.training import memory
from tfm.training.config import RunConfig
from tfm.training.loop import run

GiB = 2**30


def test_host_batch_estimate_and_refusal():
    data = DataConfig(max_len=16, max_target_len=16, batch_size=100_000_000)
    assert memory.host_row_bytes(data, get_preset("tiny_encdec").arch) == 8 * 32  # two int32 per position
    with pytest.raises(memory.BatchMemoryError, match=r"DataConfig.batch_size=100000000: .* 23.8 GiB .* "
                                                      r"at most ~33,554,432 rows per process fit"):
        memory.check_host_batch(data, get_preset("tiny_encdec").arch, available=8 * GiB)
    memory.check_host_batch(DataConfig(batch_size=4096), get_preset("tiny_encdec").arch, available=8 * GiB)


def test_device_estimate_counts_activations_logits_and_adam():
    model = get_preset("tiny_lm", vocab_size=100, d_model=32, d_ff=64, num_layers=2)
    data = DataConfig(dataset="tiny_shakespeare", tokenizer="char", max_len=10, batch_size=64)
    # float32: 10 positions x (2 layers x (4*32 + 64) + 100 logits) x 4 bytes
    assert memory.device_row_bytes(model, data) == 4 * 10 * (2 * (4 * 32 + 64) + 100)
    per_row, params = memory.device_row_bytes(model, data), 1000
    need = 64 // 4 // 2 * per_row + 16 * params  # 4 devices, 2 micro-batches
    kw = dict(devices=4, local_devices=4, grad_accum_steps=2, params=params)
    memory.check_device_batch(model, data, available=need, **kw)
    with pytest.raises(memory.BatchMemoryError, match=r"batch_size=64: .* at most ~56 rows fit"):
        memory.check_device_batch(model, data, available=need - 1, **kw)


def test_device_estimate_of_an_encoder_decoder_and_of_token_count_batches():
    model = get_preset("tiny_encdec", vocab_size=50, d_model=16, d_ff=32, num_layers=1)
    data = DataConfig(max_len=12, max_target_len=7, batch_size=8)
    # source positions: the encoder layer only; target positions: the decoder layer and the logits
    assert memory.device_row_bytes(model, data) == 4 * (12 * (4 * 16 + 32) + 7 * (4 * 16 + 32 + 50))
    assert memory.train_rows(data) == ("batch_size", 8)
    tokens = DataConfig(max_len=12, max_target_len=7, tokens_per_batch=1000)
    assert memory.train_rows(tokens) == ("tokens_per_batch", 83)
    with pytest.raises(memory.BatchMemoryError, match=r"DataConfig.tokens_per_batch=1000: "):
        memory.check_device_batch(model, tokens, devices=1, local_devices=1, available=1000)


def test_out_of_memory_errors_become_one_line():
    data = DataConfig(batch_size=200_000)
    oom = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 GiB.\nmore")
    error = memory.out_of_memory(oom, data)
    assert isinstance(error, ValueError) and "\n" not in str(error)
    assert "batch_size=200000" in str(error) and "RESOURCE_EXHAUSTED" in str(error)
    assert memory.out_of_memory(MemoryError("Unable to allocate 95.4 GiB"), data) is not None
    cpu = jax.errors.JaxRuntimeError("INTERNAL: Error dispatching computation: Out of memory allocating 94626001480 bytes.")
    assert "Out of memory allocating" in str(memory.out_of_memory(cpu, data))
    assert memory.out_of_memory(jax.errors.JaxRuntimeError("INTERNAL: something else"), data) is None


def test_run_refuses_batches_that_cannot_fit_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 2 * GiB)
    monkeypatch.setattr(memory, "device_available_bytes", lambda: None)  # as on CPU: the host's
    config = tiny_config(**{"data.batch_size": 100_000_000})
    with pytest.raises(memory.BatchMemoryError, match="DataConfig.batch_size=100000000: .* host memory"):
        run(RunConfig.from_config_dict(config), str(tmp_path / "a"))
    assert not os.path.exists(tmp_path / "a" / "checkpoints")
    config = tiny_config(**{"data.batch_size": 2_000_000})  # its host rows fit; its activations do not
    with pytest.raises(memory.BatchMemoryError, match=r"DataConfig.batch_size=2000000: a step needs .* rows fit"):
        run(RunConfig.from_config_dict(config), str(tmp_path / "b"))


def test_resource_exhausted_during_a_step_is_one_line(tmp_path, monkeypatch):
    from tfm.training import loop

    def train(*args):  # what a too-large step raises (compiling a real one would take seconds)
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 1234 bytes\n(details)")

    monkeypatch.setattr(loop, "_Run", train)
    with pytest.raises(memory.BatchMemoryError, match=r"out of memory while training with DataConfig.batch_size=16") as e:
        run(RunConfig.from_config_dict(tiny_config()), str(tmp_path))
    assert "\n" not in str(e.value)
