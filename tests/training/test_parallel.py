"""Parallel strategies: one device, pmap over 8, shard_map data parallelism over 8 (mesh data=8,
fsdp=1) and a GSPMD (data=2, fsdp=4) mesh log the same losses from the same seed and global
batch; gradient accumulation changes nothing; a checkpoint written under one strategy resumes
under another.

The tiny config scales the paper's learning rate by 0.2: for d_model=16 the formula alone
peaks at 0.08, where 20 Adam steps are chaotic enough to turn float rounding (which differs
with every way of splitting a sum) into 1e-4 relative differences. At a sane rate the
strategies agree to ~4e-7.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config, train_losses
from jax.sharding import PartitionSpec as P

from tfm.training import parallel
from tfm.training.loop import run
from tfm.kernels import psum_flat

STEPS = 20


def config(strategy, steps=STEPS, **overrides):
    return tiny_config(**{"train.strategy": strategy, "train.num_steps": steps,
                          "train.checkpoint_every_steps": STEPS, **overrides})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One device, STEPS + 4 steps."""
    workdir = tmp_path_factory.mktemp("single")
    run(config("single", STEPS + 4), workdir)
    return train_losses(workdir)


def assert_same(losses, reference, steps):
    got = np.array([losses[s] for s in steps])
    want = np.array([reference[s] for s in steps])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)


def test_pmap_and_sharded_log_the_same_losses_as_one_device(reference, tmp_path):
    assert jax.device_count() == 8
    steps = range(1, STEPS + 1)
    pmap_dir, sharded_dir = tmp_path / "pmap", tmp_path / "sharded"
    run(config("pmap"), pmap_dir)
    assert_same(train_losses(pmap_dir), reference, steps)
    run(config("sharded", **{"train.mesh_data": 2, "train.mesh_fsdp": 4}), sharded_dir)
    assert_same(train_losses(sharded_dir), reference, steps)
    # the losses really change over the run (so agreeing is not trivial)
    assert reference[STEPS] < reference[1] - 0.5

    # a checkpoint written under pmap resumes under the sharded strategy
    run(config("sharded", STEPS + 4, **{"train.mesh_data": 2, "train.mesh_fsdp": 4}), pmap_dir)
    assert_same(train_losses(pmap_dir), reference, range(STEPS + 1, STEPS + 5))


def test_data_parallel_shard_map_logs_the_same_losses_and_resumes_under_gspmd(reference, tmp_path):
    strategy = parallel.Sharded()  # the default mesh: data = all 8 devices, fsdp = 1
    assert strategy.axis_name == "data" and parallel.Sharded(mesh_fsdp=2).axis_name is None
    run(config("sharded"), tmp_path)
    assert_same(train_losses(tmp_path), reference, range(1, STEPS + 1))
    run(config("sharded", STEPS + 4, **{"train.mesh_data": 4, "train.mesh_fsdp": 2}), tmp_path)
    assert_same(train_losses(tmp_path), reference, range(STEPS + 1, STEPS + 5))


def test_psum_flat_equals_psum_for_mixed_dtypes_and_shapes():
    mesh = jax.make_mesh((8,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
    rng = np.random.default_rng(0)
    tree = {
        "w": rng.normal(size=(8, 3, 5)).astype(np.float32),
        "b": rng.normal(size=(8, 5)).astype(np.float32),
        "s": rng.normal(size=(8,)).astype(np.float32),  # a scalar per device
        "h": rng.normal(size=(8, 4)).astype(jnp.bfloat16),
        "n": rng.integers(0, 100, size=(8, 2)).astype(np.int32),
    }

    def per_device(fn):
        return jax.jit(jax.shard_map(lambda t: fn(jax.tree.map(lambda x: x[0], t), "d"),
                                     mesh=mesh, in_specs=P("d"), out_specs=P()))

    got, want = per_device(psum_flat)(tree), per_device(jax.lax.psum)(tree)
    for key, x in tree.items():
        assert got[key].dtype == x.dtype and got[key].shape == x.shape[1:]
        np.testing.assert_array_equal(np.asarray(got[key], np.float64),
                                      np.asarray(want[key], np.float64))
    # and against a float64 sum written here
    np.testing.assert_allclose(got["w"], tree["w"].astype(np.float64).sum(0), rtol=1e-6)
    np.testing.assert_array_equal(got["n"], tree["n"].sum(0))


def test_gradient_accumulation_gives_the_same_updates(reference, tmp_path):
    run(config("single", **{"train.grad_accum_steps": 4}), tmp_path)
    assert_same(train_losses(tmp_path), reference, range(1, STEPS + 1))


def test_parameters_are_sharded_over_fsdp_by_logical_names():
    sharded = parallel.Sharded(mesh_data=2, mesh_fsdp=4)
    # (vocab, embed): 'embed' has priority; a vocabulary of 37 does not split four ways anyway
    assert sharded.mesh_spec(P("vocab", "embed"), (37, 16)) == P(None, "fsdp")
    # (embed, heads, kv) with embed=6 not divisible by 4: the next rule, heads, takes fsdp
    assert sharded.mesh_spec(P("embed", "heads", "head_dim"), (6, 8, 2)) == P(None, "fsdp", None)
    # nothing divisible: replicated; unnamed axes (e.g. Adam's count) replicated
    assert sharded.mesh_spec(P("embed",), (6,)) == P(None)
    assert sharded.mesh_spec(P(), ()) == P()
