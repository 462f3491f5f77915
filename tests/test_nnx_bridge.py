"""tfm's linen models from Flax NNX code through ``flax.nnx.bridge.ToNNX``: the wrapped model,
given the linen model's parameters, computes the same logits and gradients as ``model.apply``.

tfm's parameters carry logical axis names (``nn.with_logical_partitioning``), which NNX turns
into sharding annotations and, by default, shards at once: without a mesh, initialise inside
``nnx.use_eager_sharding(False)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import tfm


def _inputs(cfg, key):
    kx, ky = jax.random.split(key)
    # different lengths for source and target, no token 1 everywhere (the dummy inputs)
    x = jax.random.randint(kx, (2, 7), 0, cfg.vocab_size, jnp.int32)
    y = jax.random.randint(ky, (2, 5), 0, cfg.vocab_size, jnp.int32)
    return (x, y) if cfg.arch is tfm.Arch.ENCODER_DECODER else (x,)


def _loss(logits):
    return jnp.mean(jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1))


@pytest.mark.parametrize("preset", ["tiny_lm", pytest.param("tiny_encdec", marks=pytest.mark.slow)])
def test_to_nnx_gives_the_linen_logits_and_gradients(preset):
    cfg = tfm.get_preset(preset, vocab_size=37, max_len=16, num_layers=1)
    model = tfm.build_model(cfg)
    inputs = _inputs(cfg, jax.random.key(1))
    variables = jax.jit(model.init)(jax.random.key(0), *tfm.dummy_inputs(cfg))
    params = nn.meta.unbox(variables["params"])

    with nnx.use_eager_sharding(False):  # no mesh here (see the module docstring)
        # (compiled: initialising op by op takes many times longer on CPU)
        wrapped = nnx.jit(lambda: nnx.bridge.ToNNX(model, rngs=nnx.Rngs(params=2)).lazy_init(
            *tfm.dummy_inputs(cfg)))()
    state = nnx.state(wrapped, nnx.Param)
    own = nnx.to_pure_dict(state)
    # lazy_init made parameters of the same tree, shapes and logical axis names (other values)
    assert jax.tree.structure(own) == jax.tree.structure(params)
    assert jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, params)
    embedding = [v for p, v in nnx.to_flat_state(state) if p[-1] == "embedding"][0]
    assert embedding.get_metadata()["out_sharding"] == ("vocab", "embed")
    nnx.replace_by_pure_dict(state, params)
    nnx.update(wrapped, state)

    expected = jax.jit(model.apply)({"params": params}, *inputs)
    got = nnx.jit(lambda m, *xs: m(*xs))(wrapped, *inputs)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))

    # gradients: nnx.grad through the wrapper = jax.grad of the linen apply
    grads = nnx.jit(nnx.grad(lambda m: _loss(m(*inputs))))(wrapped)
    want = jax.jit(jax.grad(lambda p: _loss(model.apply({"params": p}, *inputs))))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7),
                 nnx.to_pure_dict(grads), want)


def test_to_nnx_inside_an_nnx_module_trains_with_nnx_optimizer():
    """A tfm DecoderLM as a submodule of NNX code, one nnx.Optimizer step lowers the loss."""
    import optax

    cfg = tfm.get_preset("tiny_lm", vocab_size=37, max_len=16, num_layers=1)

    class Wrapper(nnx.Module):
        def __init__(self, rngs):
            self.lm = nnx.bridge.ToNNX(tfm.build_model(cfg), rngs=rngs)

        def __call__(self, tokens):
            return self.lm(tokens)

    with nnx.use_eager_sharding(False):
        m = nnx.jit(lambda: nnx.bridge.lazy_init(Wrapper(nnx.Rngs(params=0)), *tfm.dummy_inputs(cfg)))()
    tokens = _inputs(cfg, jax.random.key(3))[0]

    def loss(m):
        logits = m(tokens[:, :-1])
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))

    opt = nnx.Optimizer(m, optax.sgd(0.5), wrt=nnx.Param)

    @nnx.jit
    def step(m, opt):
        value, grads = nnx.value_and_grad(loss)(m)
        opt.update(m, grads)
        return value

    losses = [float(step(m, opt)) for _ in range(3)]
    assert losses[2] < losses[1] < losses[0]
