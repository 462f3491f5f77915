"""Parallelism strategies: the same pure steps on one device, under pmap, or on a sharded mesh.

Every strategy offers the same small interface (:class:`Parallel`), so the loop never branches
on the strategy:

* ``prepare(boxed_init, rng)``: takes the run's init and its key and traces the init once;
  ``init_state()``: the TrainState, laid out on the devices;
* ``compile_steps(model, tx, schedule, train)``: the pure steps of :mod:`tfm.training.steps`
  compiled (on first call) for the layout, kept by the strategy; ``step(state, batch, rng)`` and
  ``eval_sums(state, batch)`` run them on a host-local batch (``jit_train_step(fn)`` /
  ``jit_eval_step(fn)`` compile any such function);
* ``shard_batch(batch)``: a host-local NumPy batch -> device arrays;
* ``canonical(state)`` / ``from_canonical(state)`` / ``canonical_abstract()``: the
  layout-independent form that checkpoints store (so a checkpoint written under pmap restores
  under sharded and vice versa);
* ``to_host(metrics)``: one copy of step outputs as NumPy.

Strategies (``TrainConfig.strategy``):

* :class:`SingleDevice` -- ``jax.jit`` on the first device. One process only.
* :class:`Pmap` -- the paper-era design: ``jax.pmap`` over every device of every host, the state
  replicated (a leading device axis), gradients summed across devices with ``lax.psum``. Since
  JAX 0.8 pmap is built on jit + shard_map; this is written against that API: arrays are
  replicated with ``jax.device_put(..., NamedSharding)`` and ``make_array_from_single_device_arrays``
  (``device_put_replicated`` / ``device_put_sharded`` are deprecated).
* :class:`Sharded` -- ``jax.jit`` over a ``Mesh(('data', 'fsdp'))``: the batch is split over both
  axes, parameters and optimiser state are sharded over 'fsdp' by their logical axis names
  (:data:`LOGICAL_AXIS_RULES`), XLA inserts the all-gathers / reduce-scatters. With fsdp = all
  devices it is ZeRO-3-style sharding for models that do not fit replicated. With fsdp=1 (and
  several devices) it is plain data parallelism, written explicitly: the step runs under
  ``jax.shard_map`` over 'data' and sums its gradients over ``axis_name`` itself
  (:func:`tfm.kernels.device_sum`: on a CPU host split into devices, one flat all-reduce, which
  is faster there than the per-tensor all-reduces GSPMD inserts; benchmarks/README.md).

``axis_name`` is the named axis the pure steps sum gradients and metrics over (None when the
step is written for the whole batch).

Multi-host (:func:`tfm.training.distributed.initialize_distributed` starts the processes): every
process feeds only its own rows (the data pipeline shards by process) and the strategies
assemble global arrays from the process-local pieces.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tfm.training import steps as steps_lib
from tfm.training.config import Strategy, TrainConfig
from tfm.training.state import TrainState

log = logging.getLogger(__name__)

PMAP_AXIS = "batch"

# Logical axis name -> mesh axis, in priority order: each parameter is sharded over 'fsdp' along
# the first of its axes (in this order) whose size the fsdp axis divides; every other axis is
# replicated. 'batch' is the activations' leading axis; 'heads' are query heads and 'kv_heads'
# key/value heads (fewer with grouped-query attention). 'head_dim' (the width of one head),
# 'layers' (scan) and 'classes' are never sharded.
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "fsdp"),
    ("vocab", "fsdp"),
    ("heads", "fsdp"),
    ("kv_heads", "fsdp"),  # key/value heads of grouped-query attention
    ("head_dim", None),
    ("layers", None),
    ("classes", None),
)


# ---------------------------------------------------------------------- the interface
class Parallel:
    """Base class; see the module docstring. ``num_devices`` counts every device of every
    process taking part (the batch is split that many ways)."""

    strategy: Strategy
    num_devices: int
    axis_name: str | None = None  # see the module docstring

    _boxed_init: Callable[[jax.Array], TrainState] | None = None  # the run's init (see prepare)
    _init_rng: jax.Array | None = None
    _boxed_abstract: TrainState | None = None  # the init traced once
    _train_step: Callable | None = None  # the compiled steps (see compile_steps)
    _eval_step: Callable | None = None

    def prepare(self, boxed_init: Callable[[jax.Array], TrainState], rng: jax.Array) -> None:
        """Takes the run's init and its key, and traces the init once (``jax.eval_shape``): the
        state's shapes and logical axis names, which the layout, the restore target and the
        parameter count read; call once before anything else."""
        self._boxed_init, self._init_rng = boxed_init, rng
        self._traced_init()

    def _traced_init(self) -> TrainState:
        if self._boxed_init is None:
            raise RuntimeError(f"{type(self).__name__}: prepare() first")
        if self._boxed_abstract is None:
            self._boxed_abstract = jax.eval_shape(self._boxed_init, self._init_rng)
        return self._boxed_abstract

    def abstract_state(self) -> TrainState:
        """The state's ShapeDtypeStructs (unboxed), from :meth:`prepare`'s one trace."""
        if self._boxed_abstract is None:
            raise RuntimeError("Parallel.abstract_state() before prepare()")
        return nn.meta.unbox(self._boxed_abstract)

    def init_state(self) -> TrainState:
        """The state :meth:`prepare`'s init builds from its key, laid out on the devices."""
        raise NotImplementedError

    def compile_steps(self, model: nn.Module, tx: Any, schedule: Callable, train: TrainConfig) -> None:
        """Builds the steps of ``model`` under this strategy (compiled on their first call):
        :mod:`tfm.training.steps`' pure steps with this strategy's axis name and parameter
        gather, wrapped by :meth:`jit_train_step` / :meth:`jit_eval_step`; :meth:`step` and
        :meth:`eval_sums` run them. Call after :meth:`prepare`."""
        arch, gather = model.cfg.arch, self.gather_params()
        self._train_step = self.jit_train_step(steps_lib.make_train_step(
            model, arch, tx, schedule, label_smoothing=train.label_smoothing,
            grad_accum_steps=train.grad_accum_steps, axis_name=self.axis_name, gather_params=gather,
        ))
        self._eval_step = self.jit_eval_step(steps_lib.make_eval_step(
            model, arch, label_smoothing=train.label_smoothing, axis_name=self.axis_name,
            gather_params=gather,
        ))

    def step(self, state: TrainState, batch: dict[str, np.ndarray], rng: jax.Array
             ) -> tuple[TrainState, Any]:
        """One training step on a host-local batch: ``(state, metrics)``, dispatched (not
        waited for); ``state`` is donated."""
        return self._train_step(state, self.shard_batch(batch), rng)

    def eval_sums(self, state: TrainState, batch: dict[str, np.ndarray]) -> Any:
        """The eval step's sums (loss, tokens, ...) of a host-local batch, on the devices."""
        return self._eval_step(self.params_of(state), self.shard_batch(batch))

    def jit_train_step(self, fn: Callable) -> Callable:
        """``fn(state, batch, rng)`` compiled for this layout, the state donated."""
        raise NotImplementedError

    def jit_eval_step(self, fn: Callable) -> Callable:
        """``fn(params, batch)`` compiled for this layout."""
        raise NotImplementedError

    def shard_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        raise NotImplementedError

    def canonical(self, state: TrainState) -> TrainState:
        """The layout checkpoints store: one logical copy, as global jax.Arrays."""
        raise NotImplementedError

    def from_canonical(self, state: TrainState) -> TrainState:
        raise NotImplementedError

    def canonical_abstract(self) -> TrainState:
        """ShapeDtypeStructs with the canonical shardings: the restore target of orbax."""
        raise NotImplementedError

    def gather_params(self) -> Callable[[Any], Any] | None:
        """What the train step applies to the parameters before the forward pass (None:
        nothing); see :func:`tfm.training.steps.make_train_step`."""
        return None

    def params_of(self, state: TrainState) -> Any:
        """What ``eval_step`` takes as its params argument."""
        return state.params

    def to_host(self, tree: Any) -> Any:
        """Step outputs (scalars, identical on every device) -> NumPy, one copy."""
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)

    def describe(self) -> str:
        return f"{self.strategy.value} over {self.num_devices} device(s)"


def check_batch(name: str, rows: int, ways: int, what: str) -> int:
    """rows / ways, or a ValueError that says which setting to change."""
    if rows % ways:
        raise ValueError(
            f"{name}={rows} does not divide evenly over {ways} {what}; choose a multiple of {ways}"
        )
    return rows // ways


# ---------------------------------------------------------------------- single device
class SingleDevice(Parallel):
    strategy = Strategy.SINGLE

    def __init__(self):
        if jax.process_count() > 1:
            raise ValueError("TrainConfig.strategy='single' cannot run with several processes; "
                             "use 'pmap' or 'sharded'")
        self.device = jax.local_devices()[0]
        self.sharding = jax.sharding.SingleDeviceSharding(self.device)
        self.num_devices = 1

    def init_state(self):
        boxed_init = self._boxed_init
        return jax.jit(lambda r: nn.meta.unbox(boxed_init(r)), out_shardings=self.sharding)(self._init_rng)

    def jit_train_step(self, fn):
        return jax.jit(fn, donate_argnums=0)

    def jit_eval_step(self, fn):
        return jax.jit(fn)

    def shard_batch(self, batch):
        return jax.device_put(batch, self.sharding)

    def canonical(self, state):
        return state

    def from_canonical(self, state):
        return jax.device_put(state, self.sharding)

    def canonical_abstract(self):
        shapes = nn.meta.unbox(self._traced_init())
        return jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.sharding), shapes
        )


# ---------------------------------------------------------------------- pmap
class Pmap(Parallel):
    """jax.pmap over all devices of all processes; state replicated with a leading axis of
    local devices (the form pmap takes per process)."""

    strategy = Strategy.PMAP
    axis_name = PMAP_AXIS

    def __init__(self):
        self.local_devices = jax.local_devices()
        self.num_local = len(self.local_devices)
        self.num_devices = jax.device_count()
        # The per-process stacked layout pmap expects: leading axis over the local devices.
        self.local_mesh = Mesh(np.array(self.local_devices), (PMAP_AXIS,))
        self.stacked = NamedSharding(self.local_mesh, P(PMAP_AXIS))
        # Canonical (checkpoint) layout: one logical copy, replicated on every device.
        self.replicated = NamedSharding(Mesh(np.array(jax.devices()), ("replica",)), P())

    def _stack(self, x: jax.Array) -> jax.Array:
        """A replicated global array -> (local devices, ...) stacked, without a host trip."""
        by_device = {s.device: s.data for s in x.addressable_shards}
        pieces = [by_device[d][None] for d in self.local_devices]
        return jax.make_array_from_single_device_arrays(
            (self.num_local,) + x.shape, self.stacked, pieces
        )

    def _unstack(self, x: jax.Array) -> jax.Array:
        shape = x.shape[1:]
        by_device = {s.device: s.data for s in x.addressable_shards}
        pieces = [by_device[d].reshape(shape) for d in self.replicated.addressable_devices_indices_map(shape)]
        return jax.make_array_from_single_device_arrays(shape, self.replicated, pieces)

    def init_state(self):
        boxed_init = self._boxed_init
        state = jax.jit(lambda r: nn.meta.unbox(boxed_init(r)),
                        out_shardings=self.replicated)(self._init_rng)
        return jax.tree.map(self._stack, state)

    def jit_train_step(self, fn):
        return jax.pmap(fn, axis_name=PMAP_AXIS, in_axes=(0, 0, None), donate_argnums=0)

    def jit_eval_step(self, fn):
        return jax.pmap(fn, axis_name=PMAP_AXIS)

    def shard_batch(self, batch):
        def shard(x):
            per_device = check_batch("host-local batch rows", x.shape[0], self.num_local,
                                     "local devices (pmap)")
            x = x.reshape((self.num_local, per_device) + x.shape[1:])
            return jax.device_put(x, self.stacked)

        return jax.tree.map(shard, batch)

    def canonical(self, state):
        return jax.tree.map(self._unstack, state)

    def from_canonical(self, state):
        state = jax.device_put(state, self.replicated)
        return jax.tree.map(self._stack, state)

    def canonical_abstract(self):
        shapes = nn.meta.unbox(self._traced_init())
        return jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.replicated), shapes
        )

    def to_host(self, tree):
        # pmap outputs are stacked (local devices, ...); psum made every row the same.
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)).reshape(x.shape[1:]), tree)


# ---------------------------------------------------------------------- sharded (jit + mesh)
class Sharded(Parallel):
    """jax.jit over Mesh(('data', 'fsdp')); parameters sharded over 'fsdp' by logical names
    (fsdp > 1, GSPMD), or data parallelism under shard_map over 'data' (fsdp = 1)."""

    strategy = Strategy.SHARDED

    def __init__(self, mesh_data: int = -1, mesh_fsdp: int = 1,
                 rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES):
        n = jax.device_count()
        data, fsdp = mesh_data, mesh_fsdp
        if data == -1:
            data = check_batch("devices", n, fsdp, "fsdp ways (TrainConfig.mesh_fsdp)")
        if fsdp == -1:
            fsdp = check_batch("devices", n, data, "data ways (TrainConfig.mesh_data)")
        if data * fsdp != n:
            raise ValueError(
                f"TrainConfig.mesh_data={mesh_data} x mesh_fsdp={mesh_fsdp} = {data * fsdp} "
                f"devices, but the run has {n}; use -1 for one of them to take the rest"
            )
        self.mesh = jax.make_mesh((data, fsdp), ("data", "fsdp"),
                                  axis_types=(jax.sharding.AxisType.Auto,) * 2)
        self.rules = tuple(rules)
        self.num_devices = n
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P(("data", "fsdp")))
        # one device: the step sees the whole batch, nothing to sum
        self.axis_name = "data" if fsdp == 1 and data > 1 else None
        self._state_shardings = None

    def describe(self):
        return (f"sharded over mesh data={self.mesh.shape['data']} x "
                f"fsdp={self.mesh.shape['fsdp']} ({self.num_devices} devices)")

    def prepare(self, boxed_init, rng):
        super().prepare(boxed_init, rng)
        self.state_shardings()  # lays the traced init out

    def gather_params(self):
        """With fsdp > 1: all-gather the parameters at the start of the differentiated
        function. Without it GSPMD propagates the parameters' 'embed' sharding into the
        activations and reshards them back and forth ("involuntary full rematerialization");
        with it activations stay sharded by batch, gradients are reduce-scattered back to the
        parameters' shards, and the parameters, gradients and optimiser state still live
        sharded between steps (ZeRO-3 style); the step is faster for it
        (benchmarks/README.md, "Strategies")."""
        if self.mesh.shape["fsdp"] == 1:
            return None
        replicated = self.replicated
        return lambda params: jax.lax.with_sharding_constraint(
            params, jax.tree.map(lambda _: replicated, params))

    # -- shardings of the state, from the logical axis names of the boxed init
    def state_shardings(self) -> TrainState:
        if self._state_shardings is None:
            boxed = self._traced_init()
            logical = nn.get_partition_spec(boxed)
            shapes = nn.meta.unbox(boxed)
            self._state_shardings = jax.tree.map(
                lambda spec, s: NamedSharding(self.mesh, self.mesh_spec(spec, s.shape)),
                logical, shapes, is_leaf=lambda x: isinstance(x, P),
            )
        return self._state_shardings

    def mesh_spec(self, logical: P, shape: tuple[int, ...]) -> P:
        """Logical PartitionSpec -> mesh PartitionSpec, by :data:`LOGICAL_AXIS_RULES` priority,
        skipping an axis whose size the mesh axis does not divide (it is then replicated)."""
        names = tuple(logical) + (None,) * (len(shape) - len(logical))
        out: list[Any] = [None] * len(shape)
        used: set[str] = set()
        for name, mesh_axes in self.rules:
            if name not in names or mesh_axes is None:
                continue
            axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
            dim = names.index(name)
            size = math.prod(self.mesh.shape[a] for a in axes)
            if out[dim] is None and not used & set(axes) and shape[dim] % size == 0:
                out[dim] = mesh_axes
                used |= set(axes)
        return P(*out)

    def init_state(self):
        boxed_init = self._boxed_init
        # No logical-rules context (see jit_train_step): the shardings are already resolved.
        return jax.jit(lambda r: nn.meta.unbox(boxed_init(r)),
                       out_shardings=self.state_shardings())(self._init_rng)

    def jit_train_step(self, fn):
        assert self._state_shardings is not None, "call prepare() first"
        # The shardings are explicit, so no logical-rules or mesh context is entered: under
        # `nn.logical_axis_rules`, flax 0.12 constrains DenseGeneral's flattened multi-axis
        # kernels ((N*H, D)) with their 3-axis logical names and fails.
        state = self._state_shardings
        if self.axis_name is not None:
            fn = self._per_device(fn, (state, self.batch_sharding, self.replicated),
                                  (state, self.replicated))
        return jax.jit(
            fn,
            in_shardings=(state, self.batch_sharding, self.replicated),
            out_shardings=(state, self.replicated),
            donate_argnums=0,
        )

    def jit_eval_step(self, fn):
        assert self._state_shardings is not None, "call prepare() first"
        params = self._state_shardings.params
        if self.axis_name is not None:
            fn = self._per_device(fn, (params, self.batch_sharding), self.replicated)
        return jax.jit(fn, in_shardings=(params, self.batch_sharding),
                       out_shardings=self.replicated)

    def _per_device(self, fn, in_shardings, out_shardings):
        """``fn`` (written for one device's rows, summing over ``axis_name``) under shard_map
        with the specs of these shardings: with fsdp = 1 every parameter is whole on every
        device, so only the batch is split. ``check_vma=False`` gives pmap's semantics: the
        gradients of the replicated parameters are each device's own partial sums (summed
        explicitly by the step), not summed implicitly by autodiff."""
        def specs(tree):
            return jax.tree.map(lambda s: s.spec, tree)

        return jax.shard_map(fn, mesh=self.mesh, in_specs=specs(in_shardings),
                             out_specs=specs(out_shardings), check_vma=False)

    def shard_batch(self, batch):
        ways = self.num_devices // jax.process_count()

        def shard(x):
            check_batch("host-local batch rows", x.shape[0], ways, "local devices (sharded)")
            global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
            return jax.make_array_from_process_local_data(self.batch_sharding, x, global_shape)

        return jax.tree.map(shard, batch)

    def canonical(self, state):
        return state

    def from_canonical(self, state):
        return jax.device_put(state, self._state_shardings)

    def canonical_abstract(self):
        shardings = self.state_shardings()
        shapes = nn.meta.unbox(self._traced_init())
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
        )


def make_parallel(cfg: TrainConfig) -> Parallel:
    """The strategy ``cfg.strategy`` names."""
    if cfg.strategy is Strategy.SINGLE:
        return SingleDevice()
    if cfg.strategy is Strategy.PMAP:
        return Pmap()
    return Sharded(cfg.mesh_data, cfg.mesh_fsdp)


def check_batch_sizes(
    parallel: Parallel, *, batch_size: int, grad_accum_steps: int, eval_batch_size: int
) -> int:
    """Validates that the global batches split evenly; returns the per-device micro-batch.

    Raises a ValueError naming the setting to change, before anything is compiled.
    """
    processes = jax.process_count()
    check_batch("DataConfig.batch_size", batch_size, processes, "processes")
    check_batch("DataConfig.eval_batch_size", eval_batch_size, processes, "processes")
    devices = parallel.num_devices
    per_device = check_batch("DataConfig.batch_size", batch_size, devices,
                             f"devices ({parallel.describe()})")
    check_batch("DataConfig.eval_batch_size", eval_batch_size, devices,
                f"devices ({parallel.describe()})")
    return check_batch(f"per-device batch ({per_device} rows)", per_device, grad_accum_steps,
                       "micro-batches (TrainConfig.grad_accum_steps)")
