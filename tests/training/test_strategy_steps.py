"""The strategy traces the model's init once per start and compiles the steps itself."""

import jax
import jax.numpy as jnp
import pytest

from tfm.training import parallel


@pytest.mark.parametrize("make", [parallel.SingleDevice, parallel.Pmap])
def test_the_init_is_traced_once_per_start(make):
    calls = []

    def boxed_init(rng):
        calls.append(1)
        return {"w": jax.random.normal(rng, (3, 5)), "b": jnp.zeros((5,), jnp.int32)}

    strategy = make()
    rng = jax.random.key(0)
    with pytest.raises(RuntimeError, match="before prepare"):
        strategy.abstract_state()
    strategy.prepare(boxed_init, rng)
    abstract = strategy.canonical_abstract()
    shapes = strategy.abstract_state()
    assert len(calls) == 1  # prepare's trace serves the restore target and the parameter count
    assert {k: (v.shape, v.dtype) for k, v in shapes.items()} == {
        "w": ((3, 5), jnp.float32), "b": ((5,), jnp.int32)}
    assert {k: v.shape for k, v in abstract.items()} == {"w": (3, 5), "b": (5,)}
