"""The matrix product of every dense layer, with a weight gradient laid out for XLA:CPU.

A dense layer computes ``y = x W`` with x (M, K) (M = all the tokens) and W (K, N). Its weight
gradient ``dW = x^T dy`` contracts both operands over their leading (token) dimension. XLA:CPU's
fast matmul library (YNNPACK) only takes products whose left operand is contracted over its
last dimension and whose right operand over its first, so XLA hands every weight gradient to
Eigen, which runs cpu_small's 384 x 128 x 512 ones at 35 - 50 GFLOP/s on a core that does 80
in YNNPACK; and XLA folds a transpose written in front of the product back into it.

:func:`dense_dot_general` computes the weight gradient, on CPU only, from an explicitly
transposed operand held apart by ``jax.lax.optimization_barrier``, so the product itself is in
YNNPACK's layout:

* K <= N (e.g. the FFN's W_1, the attention projections): ``dW = (x^T) dy``, transposing x.
* K > N (e.g. the FFN's W_2): ``dW = ((dy^T) x)^T``, transposing dy and the (K, N) result.
  Transposing x there would make XLA recompute x's producer (the GELU) in transposed order
  inside the copy, which costs more than the product saves.

A transpose of a 384 x 128 operand costs ~0.07 ms; on cpu_small the weight gradients went from
10.6 ms of Eigen per step and core to YNNPACK, and the step's op time from 46.5 to 35.7 ms
(benchmarks/README.md). On GPU and TPU, whose matmul units read transposed operands for free,
the weight gradient is the plain product: ``jax.lax.platform_dependent`` picks at lowering.

The forward product and the input gradient are those of ``jax.lax.dot_general``; only the
weight gradient's schedule differs, so the numbers agree up to float summation order. Pass the
function as the ``dot_general`` of ``flax.linen.Dense`` / ``DenseGeneral``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

DimensionNumbers = tuple[tuple[Sequence[int], Sequence[int]], tuple[Sequence[int], Sequence[int]]]


def _weight_grad(x2: jax.Array, g2: jax.Array) -> jax.Array:
    """(M, K), (M, N) -> x2^T g2 (K, N), as XLA schedules it."""
    return x2.T @ g2


def _weight_grad_cpu(x2: jax.Array, g2: jax.Array) -> jax.Array:
    """(M, K), (M, N) -> x2^T g2 (K, N), with the product's operands in YNNPACK's layout."""
    if x2.shape[1] <= g2.shape[1]:
        return lax.optimization_barrier(x2.T) @ g2  # (K, M) @ (M, N)
    return lax.optimization_barrier(lax.optimization_barrier(g2.T) @ x2).T  # ((N, M) @ (M, K))^T


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
    dw = lax.platform_dependent(x2, g2, cpu=_weight_grad_cpu, default=_weight_grad)  # (K, N)
    return dx.astype(x.dtype), dw.reshape(w.shape).astype(w.dtype)


_dense_product.defvjp(_dense_product_fwd, _dense_product_bwd)


def dense_dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: DimensionNumbers,
    precision: lax.PrecisionLike = None,
    preferred_element_type: jnp.dtype | None = None,
) -> jax.Array:
    """``jax.lax.dot_general`` for dense layers: a drop-in ``dot_general`` for flax Dense.

    Products of the dense form (``lhs``'s last k dims contracted with ``rhs``'s first k in
    order, no batch dims, equal dtypes, no precision or output-type request) get the weight
    gradient described in the module docstring; anything else goes to ``jax.lax.dot_general``.
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
