"""tfm.backend: every backend choice decided once, by the policy; nothing else reads the backend."""

import pathlib
import re

import jax
import pytest

from tfm import attention as A
from tfm import kernels
from tfm.backend import BackendPolicy
from tfm.config import AttentionImpl, GradKernels, get_preset
from tfm.models import build_model
from tfm.training.config import TrainConfig

TFM = pathlib.Path(__file__).resolve().parents[1] / "tfm"


def test_only_the_policy_reads_the_backend():
    """No module of tfm but tfm/backend.py asks JAX for the backend or imports JAX's internals."""
    readers = [str(p.relative_to(TFM)) for p in sorted(TFM.rglob("*.py"))
               if re.search(r"default_backend\(|jax\._src", p.read_text(encoding="utf-8"))]
    assert readers == ["backend.py"]


def test_every_module_of_tfm_reads_in_one_sitting():
    """The house rule (one concept per file): no module of tfm is over 500 lines."""
    long = {str(p.relative_to(TFM)): n for p in sorted(TFM.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert long == {}


@pytest.mark.parametrize("platform, grad, attn", [
    ("cpu", GradKernels.CPU, AttentionImpl.BLOCKED),
    ("gpu", GradKernels.AUTODIFF, AttentionImpl.CUDNN_IF_SUPPORTED),
    ("tpu", GradKernels.AUTODIFF, AttentionImpl.XLA),
])
def test_auto_resolves_per_platform(platform, grad, attn):
    cfg = get_preset("tiny_lm", vocab_size=7)
    policy = BackendPolicy.resolve(cfg, TrainConfig(max_steps_in_flight=3), platform_name=platform)
    assert (policy.platform, policy.grad_kernels, policy.attention_impl, policy.max_steps_in_flight) == (
        platform, grad, attn, 3)
    resolved = policy.model_config(cfg)
    assert (resolved.grad_kernels, resolved.attention_impl) == (grad, attn)
    assert cfg.grad_kernels is GradKernels.AUTO  # the config itself keeps "auto"


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_explicit_settings_are_kept_on_every_platform(platform):
    cfg = get_preset("tiny_lm", vocab_size=7, grad_kernels="autodiff", attention_impl="xla")
    policy = BackendPolicy.resolve(cfg, platform_name=platform)
    assert (policy.grad_kernels, policy.attention_impl) == (GradKernels.AUTODIFF, AttentionImpl.XLA)
    cfg = get_preset("tiny_lm", vocab_size=7, grad_kernels="cpu", attention_impl="cudnn")
    policy = BackendPolicy.resolve(cfg, platform_name=platform)
    assert (policy.grad_kernels, policy.attention_impl) == (GradKernels.CPU, AttentionImpl.CUDNN)


def test_build_model_builds_the_policys_choices(monkeypatch):
    cfg = get_preset("tiny_lm", vocab_size=7)
    gpu = BackendPolicy.resolve(cfg, platform_name="gpu")
    assert build_model(cfg, gpu).cfg.grad_kernels is GradKernels.AUTODIFF
    assert build_model(cfg).cfg.grad_kernels is BackendPolicy.resolve(cfg).grad_kernels
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # the one read: at resolution
    assert build_model(cfg).cfg.attention_impl is AttentionImpl.CUDNN_IF_SUPPORTED


def test_pure_functions_take_the_decision_not_the_backend(monkeypatch):
    """The kernels and the attention decide by their argument alone, whatever the backend."""
    q = jax.numpy.ones((1, 130, 2, 4))
    calls = []
    real = A.causal_attention
    monkeypatch.setattr(A, "causal_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    for backend in ("cpu", "gpu"):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        calls.clear()
        A.scaled_dot_product_attention(q, q, q, causal=True, implementation="blocked")
        assert calls == [1]
        assert kernels.cpu_kernels("cpu") and not kernels.cpu_kernels("auto")
