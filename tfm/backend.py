"""The backend policy: every backend-specific choice, decided once and handed down.

Model code states the mathematics; how it is executed on the backend at hand is decided here,
in one place, from the platform and the configs (principle 7 of the architecture):

* the gradient kernels (``ModelConfig.grad_kernels``): "auto" is "cpu" (:mod:`tfm.kernels`'
  three XLA:CPU kernels, each measured to win there) on CPU and "autodiff" on every other
  backend, where none was measured;
* the attention implementation (``ModelConfig.attention_impl``): "auto" is "blocked" on CPU
  (causal self-attention skips the key blocks above the diagonal, measured there),
  "cudnn_if_supported" on GPU, "xla" elsewhere;
* the steps in flight (``TrainConfig.max_steps_in_flight``): at most this many steps are
  dispatched ahead of the devices (:mod:`tfm.training.inflight`; on XLA:CPU with several
  devices an unbounded queue hangs);
* the platform and whether JAX's backends have started, which the CPU device split
  (:mod:`tfm.training.devices`) reads before it decides how many CPU devices a run gets.

:meth:`BackendPolicy.resolve` reads the platform (this module is the only one in tfm that calls
``jax.default_backend()``) and turns every "auto" into a concrete choice;
:func:`tfm.models.build_model` builds the model from :meth:`BackendPolicy.model_config`, so the
modules and the pure functions below them receive concrete decisions as arguments and read no
process state. The configs a run saves keep "auto" (the choice is the machine's, not the run's).
"""

from __future__ import annotations

import dataclasses

import jax

from tfm.config import AttentionImpl, GradKernels, ModelConfig, parse_enum


def platform() -> str:
    """The platform JAX computes on by default: "cpu", "gpu", "tpu" (starts the backends)."""
    return jax.default_backend()


def backends_started() -> bool:
    """Whether JAX's backends have started (after which the CPU device count is fixed).

    JAX has no public call for it; this is the one private import in tfm."""
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


_GRAD_KERNELS_AUTO = {"cpu": GradKernels.CPU}
_ATTENTION_AUTO = {"cpu": AttentionImpl.BLOCKED, "gpu": AttentionImpl.CUDNN_IF_SUPPORTED}


@dataclasses.dataclass(frozen=True)
class BackendPolicy:
    """Concrete backend choices (no "auto" left).

    Attributes:
      platform: the backend they were decided for ("cpu", "gpu", "tpu").
      grad_kernels: :class:`GradKernels` CPU or AUTODIFF (the model's differentiation and the
        training step's gradient all-reduce).
      attention_impl: :class:`AttentionImpl` XLA, CUDNN, CUDNN_IF_SUPPORTED or BLOCKED.
      max_steps_in_flight: steps dispatched and not yet finished, at most.
    """

    platform: str
    grad_kernels: GradKernels
    attention_impl: AttentionImpl
    max_steps_in_flight: int = 2

    @classmethod
    def resolve(cls, model: ModelConfig, train=None, *, platform_name: str | None = None) -> BackendPolicy:
        """The policy for ``model`` (and ``train``, a TrainConfig, for the steps in flight) on
        ``platform_name`` (default: JAX's default backend)."""
        name = platform_name or platform()
        grad = parse_enum(GradKernels, model.grad_kernels, "grad_kernels")
        if grad is GradKernels.AUTO:
            grad = _GRAD_KERNELS_AUTO.get(name, GradKernels.AUTODIFF)
        attn = parse_enum(AttentionImpl, model.attention_impl, "attention_impl")
        if attn is AttentionImpl.AUTO:
            attn = _ATTENTION_AUTO.get(name, AttentionImpl.XLA)
        in_flight = train.max_steps_in_flight if train is not None else cls.max_steps_in_flight
        return cls(name, grad, attn, in_flight)

    def model_config(self, model: ModelConfig) -> ModelConfig:
        """``model`` with this policy's concrete choices (what the modules are built from)."""
        return dataclasses.replace(model, grad_kernels=self.grad_kernels,
                                   attention_impl=self.attention_impl)
