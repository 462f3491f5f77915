"""Backend tuning in one room: how the model's dense layers, LayerNorms and gradient all-reduce
are computed, chosen by one execution-only setting, ``ModelConfig.grad_kernels``.

Model code (attention, layers, models) states the mathematics and builds its dense layers and
LayerNorms through this module (:func:`dense`, :func:`dense_general`, :func:`matmul`,
:class:`LayerNorm`); the training step sums gradients over devices with :func:`device_sum`. The
setting changes how those are differentiated and reduced, never the parameters (the same names,
shapes and logical axes; checkpoints and the Hugging Face mapping do not see it).

``grad_kernels`` (:class:`tfm.config.GradKernels`; "auto" is resolved once by the backend policy,
:mod:`tfm.backend`, into "cpu" on CPU and "autodiff" elsewhere):

* ``"autodiff"``: plain JAX everywhere. Dense layers are flax's ``nn.Dense`` / ``nn.DenseGeneral``
  with ``lax.dot_general``, LayerNorm is differentiated by JAX, devices sum with ``lax.psum``. No
  ``custom_vjp`` anywhere in the model, so ``jax.jvp``, ``jax.jacfwd``, Hessian-vector products
  and ``dot_general`` hooks (quantisation libraries) work through it.
* ``"cpu"`` (``"auto"`` on CPU): the three kernels below, each measured to win on XLA:CPU
  (the numbers are in benchmarks/README.md); on any other backend nothing was measured, so
  ``"auto"`` is ``"autodiff"`` there. With ``"cpu"``, dense layers and LayerNorms are
  ``jax.custom_vjp`` functions: reverse mode (``jax.grad``, ``jax.vjp``) works, forward mode
  (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``) raises JAX's standard error about applying
  forward-mode autodiff to a custom_vjp function. Use ``grad_kernels="autodiff"`` for those.

The CPU kernels:

1. **Dense weight gradients in YNNPACK's layout** (:func:`dense_dot_general`). A dense layer
   computes ``y = x W`` with x (M, K) (M = all the tokens) and W (K, N); its weight gradient
   ``dW = x^T dy`` contracts both operands over their leading (token) dimension. XLA:CPU's fast
   matmul library (YNNPACK) only takes products whose left operand is contracted over its last
   dimension and whose right operand over its first, so XLA hands every weight gradient to the
   slower Eigen path; and XLA folds a transpose written in front of the product back into it.
   The weight gradient is therefore computed from an explicitly transposed operand held apart
   by ``lax.optimization_barrier``:

   * K <= N (e.g. the FFN's W_1, the attention projections): ``dW = (x^T) dy``, transposing x.
   * K > N (e.g. the FFN's W_2): ``dW = ((dy^T) x)^T``, transposing dy and the (K, N) result.
     Transposing x there would make XLA recompute x's producer (the GELU) in transposed order
     inside the copy, which costs more than the product saves.

   The forward product and the input gradient are those of ``lax.dot_general``; only the
   weight gradient's schedule differs, so the numbers agree up to float summation order.
2. **Closed-form LayerNorm gradient** (:func:`layer_norm`). With x^ the normalised input,
   s = 1 / sqrt(var + eps), g' = g * scale and means over the last axis::

       dx = s * (g' - mean(g') - x^ * mean(g' * x^)),  dscale = sum(g * x^),  dbias = sum(g)

   The same numbers as autodiff's derivation in far fewer elementwise ops; on XLA:CPU
   autodiff's version also let the fusion pass copy the whole residual-stream gradient chain
   (every later layer's LayerNorm backward) into each of its consumers.
3. **One flat all-reduce** (:func:`psum_flat`). XLA combines a pytree's all-reduces into one op
   over a tuple of buffers, which XLA:CPU's in-process collectives run buffer by buffer, each
   with its own rendezvous of every device. Concatenating the leaves first costs one copy of
   the gradients and leaves a single rendezvous.

The platform is decided when the model is built (:class:`tfm.backend.BackendPolicy`), not at lowering
(``lax.platform_dependent``): a platform switch at lowering would keep the ``custom_vjp`` in the
program on every backend, so forward mode and ``dot_general`` hooks would fail on GPU and TPU
too, where the kernels were never measured to help. The cost: a program traced for CPU and
lowered for another platform (``jax.export`` with several platforms) keeps the CPU kernels,
which are correct there, only not tuned.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tfm.config import GradKernels, parse_enum

DimensionNumbers = tuple[tuple[Sequence[int], Sequence[int]], tuple[Sequence[int], Sequence[int]]]


def cpu_kernels(grad_kernels: GradKernels | str) -> bool:
    """Whether ``grad_kernels`` takes the CPU kernels: "cpu" (what the backend policy,
    :mod:`tfm.backend`, makes of "auto" on CPU). "auto" that reached a module without the policy
    is the plain path. Raises ValueError for an unknown setting."""
    return parse_enum(GradKernels, grad_kernels, "grad_kernels") is GradKernels.CPU


# ---------------------------------------------------------------------- dense layers (modules)
def dense(features: int, *, grad_kernels: GradKernels | str, **kwargs: Any) -> nn.Dense:
    """``flax.linen.Dense(features, **kwargs)`` computed as ``grad_kernels`` says."""
    return nn.Dense(features, dot_general=_dot_general(grad_kernels), **kwargs)


def dense_general(features: int | Sequence[int], *, grad_kernels: GradKernels | str,
                  **kwargs: Any) -> nn.DenseGeneral:
    """``flax.linen.DenseGeneral(features, **kwargs)`` computed as ``grad_kernels`` says."""
    return nn.DenseGeneral(features, dot_general=_dot_general(grad_kernels), **kwargs)


def matmul(x: jax.Array, w: jax.Array, *, grad_kernels: GradKernels | str) -> jax.Array:
    """(..., K) x (K, N) -> (..., N), a dense layer's product (e.g. the tied output projection
    with the transposed embedding table as ``w``)."""
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    return _dot_general(grad_kernels, lax.dot_general)(x, w, dims)


def _dot_general(grad_kernels: GradKernels | str, plain: Any = None) -> Any:
    """The ``dot_general`` for flax's dense layers: :func:`dense_dot_general` with the CPU
    kernels, else ``plain`` (None = flax's default, ``lax.dot_general``)."""
    return dense_dot_general if cpu_kernels(grad_kernels) else plain


# ---------------------------------------------------------------------- LayerNorm (module)
class LayerNorm(nn.Module):
    """LayerNorm over the last axis (Ba et al. 2016) with statistics in float32 whatever the
    compute dtype: y = (x - mean) / sqrt(var + eps) * scale + bias, returned in ``dtype``.

    Parameters ``scale`` and ``bias`` (D,), logical axis 'embed'. ``grad_kernels`` chooses how
    it is differentiated (:func:`layer_norm`); the forward numbers are the same either way."""

    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    grad_kernels: GradKernels = GradKernels.AUTO

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        axes = ("embed",)
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, axes), (d,), self.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, axes), (d,), self.param_dtype)
        return layer_norm(x, scale, bias, self.epsilon, self.grad_kernels).astype(self.dtype)


# ---------------------------------------------------------------------- all-reduce
def device_sum(tree: Any, axis_name: str | tuple[str, ...], grad_kernels: GradKernels | str) -> Any:
    """``lax.psum(tree, axis_name)``; one flat all-reduce (:func:`psum_flat`) with the CPU
    kernels."""
    if cpu_kernels(grad_kernels):
        return psum_flat(tree, axis_name)
    return lax.psum(tree, axis_name)


def psum_flat(tree: Any, axis_name: str | tuple[str, ...]) -> Any:
    """``lax.psum`` of a pytree as one flat buffer per dtype (a bucketed all-reduce): the same
    result as ``lax.psum(tree, axis_name)`` with one collective per dtype."""
    leaves, treedef = jax.tree.flatten(tree)
    groups: dict[Any, list[int]] = {}
    for i, leaf in enumerate(leaves):
        groups.setdefault(jnp.result_type(leaf), []).append(i)
    out = list(leaves)
    for idx in groups.values():
        flat = lax.psum(jnp.concatenate([jnp.ravel(leaves[i]) for i in idx]), axis_name)
        offsets = np.cumsum([np.size(leaves[i]) for i in idx])[:-1]
        for i, piece in zip(idx, jnp.split(flat, offsets)):
            out[i] = piece.reshape(jnp.shape(leaves[i]))
    return jax.tree.unflatten(treedef, out)


# ---------------------------------------------------------------------- pure functions
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
               grad_kernels: GradKernels | str = GradKernels.AUTO) -> jax.Array:
    """LayerNorm over the last axis, computed in float32 (the result is float32): (x - mean) /
    sqrt(var + eps) * scale + bias. x (..., D); scale, bias (D,).

    With the CPU kernels the gradient is the closed form of the module docstring (a
    ``custom_vjp``), else JAX's autodiff of the same forward pass. The casts to float32 happen
    outside the ``custom_vjp``, so autodiff casts each gradient back to its input's dtype."""
    x, scale, bias = (a.astype(jnp.float32) for a in (x, scale, bias))
    if cpu_kernels(grad_kernels):
        return _layer_norm_closed_form(x, scale, bias, epsilon)
    return _layer_norm_forward(x, scale, bias, epsilon)[0]


def _layer_norm_forward(x, scale, bias, epsilon):
    """float32 (..., D), (D,), (D,) -> (y, (x^, 1/sqrt(var + eps)))."""
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    rstd = lax.rsqrt(var + jnp.float32(epsilon))
    xhat = (x - mean) * rstd
    return xhat * scale + bias, (xhat, rstd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm_closed_form(x, scale, bias, epsilon):
    return _layer_norm_forward(x, scale, bias, epsilon)[0]


def _layer_norm_closed_form_fwd(x, scale, bias, epsilon):
    y, (xhat, rstd) = _layer_norm_forward(x, scale, bias, epsilon)
    return y, (xhat, rstd, scale)


def _layer_norm_closed_form_bwd(epsilon, residuals, g):
    xhat, rstd, scale = residuals
    batch_axes = tuple(range(g.ndim - 1))
    gs = g * scale
    dx = rstd * (gs - gs.mean(-1, keepdims=True) - xhat * (gs * xhat).mean(-1, keepdims=True))
    return dx, jnp.sum(g * xhat, axis=batch_axes), jnp.sum(g, axis=batch_axes)


_layer_norm_closed_form.defvjp(_layer_norm_closed_form_fwd, _layer_norm_closed_form_bwd)


def dense_dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: DimensionNumbers,
    precision: lax.PrecisionLike = None,
    preferred_element_type: jnp.dtype | None = None,
) -> jax.Array:
    """``lax.dot_general`` with the weight gradient of the module docstring (kernel 1): a
    drop-in ``dot_general`` for flax's Dense / DenseGeneral.

    Products of the dense form (``lhs``'s last k dims contracted with ``rhs``'s first k in
    order, no batch dims, equal dtypes, no precision or output-type request) get that weight
    gradient; anything else goes to ``lax.dot_general``.
    """
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    k = len(lhs_contract)
    dense_form = (
        not lhs_batch
        and not rhs_batch
        and tuple(d % lhs.ndim for d in lhs_contract) == tuple(range(lhs.ndim - k, lhs.ndim))
        and tuple(d % rhs.ndim for d in rhs_contract) == tuple(range(k))
        and precision is None
        and preferred_element_type is None
        and lhs.dtype == rhs.dtype
    )
    if not dense_form:
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)
    return _dense_product(lhs, rhs, k)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_product(x: jax.Array, w: jax.Array, k: int) -> jax.Array:
    """(M..., K...) x (K..., N...) -> (M..., N...): x's last ``k`` dims contracted with w's first."""
    return jnp.tensordot(x, w, axes=k)


def _dense_product_fwd(x, w, k):
    return jnp.tensordot(x, w, axes=k), (x, w)


def _dense_product_bwd(k, residuals, g):
    x, w = residuals
    out_dims = tuple(range(k, w.ndim))
    dx = jnp.tensordot(g, w, axes=(tuple(range(g.ndim - len(out_dims), g.ndim)), out_dims))
    x2 = x.reshape(-1, math.prod(w.shape[:k]))  # (M, K)
    g2 = g.reshape(-1, math.prod(w.shape[k:]))  # (M, N)
    dw = _weight_grad(x2, g2)  # (K, N)
    return dx.astype(x.dtype), dw.reshape(w.shape).astype(w.dtype)


_dense_product.defvjp(_dense_product_fwd, _dense_product_bwd)


def _weight_grad(x2: jax.Array, g2: jax.Array) -> jax.Array:
    """(M, K), (M, N) -> x2^T g2 (K, N), with the product's operands in YNNPACK's layout."""
    if x2.shape[1] <= g2.shape[1]:
        return lax.optimization_barrier(x2.T) @ g2  # (K, M) @ (M, N)
    return lax.optimization_barrier(lax.optimization_barrier(g2.T) @ x2).T  # ((N, M) @ (M, K))^T
