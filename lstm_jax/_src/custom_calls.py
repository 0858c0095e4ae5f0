"""Making a custom call (native CPU code, cuDNN) behave like the rest of JAX.

XLA cannot look inside a custom call, so by itself one does not compose with the
transformations a training job uses:

- under ``jit`` with inputs sharded over a mesh, XLA gathers the whole batch onto every
  device and each device computes every row;
- under ``jax.shard_map``, its outputs are not marked as varying over the manual mesh
  axes, so a loop or ``lax.platform_dependent`` around it sees mismatched types;
- under ``vmap`` it has no batching rule.

:func:`batch_parallel` wraps a function of the recurrent kernels' kind, independent
along one batch axis of its inputs, so that it does all three: each device runs its own
rows (``jax.experimental.custom_partitioning``; outputs without a batch axis, such as
weight gradients, are sums over rows and are all-reduced), its outputs vary over the
mesh axes its inputs vary over, and ``vmap`` folds the mapped axis into the batch axis
where only batched inputs are mapped (one call over a larger batch) or runs the calls
one after another otherwise. :func:`match_vma` gives a loop's initial state the
variance of its inputs, so that a zero state built inside ``shard_map`` is a valid
carry.

On meshes of explicit axes, where shardings are part of the types, :func:`sharding_like`
builds every sharding the library asks for on the operand's own mesh (a bare
``PartitionSpec`` needs ``jax.set_mesh``, which users often do not set),
:func:`match_batch_sharding` splits a loop's initial state over the batch like its inputs,
and :func:`replicate_like` replicates the weights on the batch's mesh. Outside ``jit``, a
``custom_partitioning`` call runs unpartitioned (JAX evaluates the function as it is): on
automatic axes the custom call then gets the whole batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from lstm_jax._src.compat import make_user_context
from lstm_jax._src.compat import pvary as _pvary
from lstm_jax._src.compat import reshard as _reshard
from lstm_jax._src.compat import vma as _vma

Axes = Sequence[int | None]


def match_vma(tree, *refs):
    """``tree`` with every leaf marked as varying over the manual mesh axes that any of
    ``refs``' leaves vary over (inside ``jax.shard_map``; the identity elsewhere).

    A loop's carry must keep its type, so a state created inside ``shard_map`` (zeros)
    has to vary like the inputs it will be combined with.

    Example:
      >>> h = match_vma(jnp.zeros(3), jnp.ones(3))  # outside shard_map: unchanged
      >>> h.shape
      (3,)
    """
    axes = frozenset().union(*(_vma(leaf) for leaf in jax.tree.leaves(refs)))
    if not axes:
        return tree
    return jax.tree.map(lambda leaf: _pvary(leaf, axes), tree)


def match_batch_sharding(tree, x: jax.Array, x_batch_axis: int, batch_axis: int):
    """``tree`` with each leaf's ``batch_axis`` sharded like ``x``'s ``x_batch_axis`` where
    ``x`` has an explicit sharding (a mesh with ``AxisType.Explicit`` axes, as
    ``jax.make_mesh`` makes by default); the identity elsewhere.

    With explicit sharding a loop's carry keeps its sharding in its type, so a state
    created unsharded (zeros) must be split over the batch like the inputs it meets.

    Example:
      >>> match_batch_sharding(jnp.zeros((2, 3)), jnp.ones((4, 2, 5)), 1, 0).shape
      (2, 3)
    """
    spec = tuple(getattr(jax.typeof(x).sharding, "spec", None) or ())
    entry = spec[x_batch_axis] if x_batch_axis < len(spec) else None
    if entry is None:
        return tree

    def reshard(leaf):
        want = [None] * leaf.ndim
        want[batch_axis] = entry
        have = tuple(jax.typeof(leaf).sharding.spec) + (None,) * leaf.ndim
        if tuple(have[: leaf.ndim]) == tuple(want):
            return leaf
        return _reshard(leaf, sharding_like(x, P(*want)))

    return jax.tree.map(reshard, tree)


def _explicit_mesh(x):
    """The mesh of ``x``'s type where it has an ``AxisType.Explicit`` axis, else ``None``."""
    mesh = getattr(jax.typeof(x).sharding, "mesh", None)
    types = getattr(mesh, "axis_types", None) or ()
    return mesh if any(t == AxisType.Explicit for t in types) else None


def replicate_like(tree, x: jax.Array):
    """``tree`` (weights shared by every row) replicated on the mesh of ``x``'s explicit
    axes; the identity where ``x`` has none (automatic axes, one device, ``shard_map``).

    With explicit axes every array carries its sharding in its type, and JAX accepts
    neither of two things users do: weights left unplaced beside a batch placed on a mesh
    (their gradient, a product over the sharded batch, has no mesh to be typed on), and
    weights sharded over a ``"model"`` axis entering a loop whose carry is split over the
    batch only (the carry's type would change). Replicated, the weights meet the batch on
    its mesh; the gradient of a sharded weight comes back sharded as the weight was.

    Example:
      >>> w = jnp.ones((4, 3))
      >>> replicate_like(w, jnp.ones((5, 2, 3))) is w  # no mesh: unchanged
      True
    """
    mesh = _explicit_mesh(x)
    if mesh is None:
        return tree
    replicated = sharding_like(x, P())

    def place(leaf):
        sharding = jax.typeof(leaf).sharding
        if getattr(sharding, "mesh", None) == mesh and not any(sharding.spec):
            return leaf
        return _reshard(leaf, replicated)

    return jax.tree.map(place, tree)


def sharding_like(x, spec: P) -> NamedSharding:
    """``spec`` on the mesh ``x`` is typed with: ``x``'s own mesh where ``x`` is a concrete
    array (eager), the abstract mesh of its type where it is traced.

    A bare ``PartitionSpec`` given to ``out_sharding=`` or ``jax.sharding.reshard`` needs
    a mesh context (``jax.set_mesh``); users place a batch with ``jax.device_put`` on a
    ``NamedSharding`` and often set none, so every sharding the library asks for is built
    on the operand's own mesh instead.

    Example:
      >>> sharding_like(jnp.ones(2), P()).spec == P()  # on one device: the empty mesh
      True
    """
    # Eagerly, only the concrete mesh has the devices that a reshard needs.
    if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
        if isinstance(x.sharding, NamedSharding):
            return NamedSharding(x.sharding.mesh, spec)
    return NamedSharding(jax.typeof(x).sharding.mesh, spec)


def summed_out_sharding(x) -> dict:
    """Keyword arguments for a product that sums over ``x``'s rows: ``out_sharding`` whole
    (``P()``) on ``x``'s mesh where ``x``'s type carries a sharding, none elsewhere.

    Under explicit mesh axes every array's type names its sharding, and a product that
    contracts a sharded axis (a weight gradient over the batch) is ambiguous to JAX until
    told: its result is whole on every device, like the weights. Elsewhere (one device,
    automatic axes, inside ``shard_map``) the partitioner decides and nothing is passed.

    Example:
      >>> summed_out_sharding(jnp.ones((4, 2)))  # unsharded: nothing to say
      {}
    """
    if not any(getattr(jax.typeof(x).sharding, "spec", None) or ()):
        return {}
    return {"out_sharding": sharding_like(x, P())}


def sum_to_vma(cotangent: jax.Array, primal) -> jax.Array:
    """A cotangent summed over the manual mesh axes it varies over and ``primal`` does not.

    A custom VJP's backward must return cotangents that vary like their primals inside
    ``jax.shard_map``: a weight shared by every shard (invariant) used on varying rows
    gets the sum of every shard's gradient, as autodiff's transpose of ``pcast`` gives.

    Example:
      >>> sum_to_vma(jnp.ones(2), jnp.zeros(2)).tolist()  # outside shard_map: unchanged
      [1.0, 1.0]
    """
    extra = tuple(sorted(_vma(cotangent) - _vma(primal)))
    return lax.psum(cotangent, extra) if extra else cotangent


def trace_context(default_value):
    """A context whose value decides how functions are traced: ``with ctx(v): ...`` sets
    it, ``ctx.value`` reads it, and it is part of jit's cache key, so a function traced
    under one value is traced again under another.

    Example:
      >>> flag = trace_context(False)
      >>> with flag(True):
      ...     inside = flag.value
      >>> inside, flag.value
      (True, False)
    """
    return make_user_context(default_value)


def _spec_axes(spec_entry) -> tuple[str, ...]:
    if spec_entry is None:
        return ()
    return tuple(spec_entry) if isinstance(spec_entry, tuple) else (spec_entry,)


def _batch_mesh_axes(mesh, arg_shapes, in_axes: Axes) -> tuple[str, ...]:
    """The mesh axes the batch is split over: those of the first batched operand whose
    batch dimension is sharded, if they divide the batch evenly (else none: uneven
    shards would add padded rows to the summed outputs)."""
    for shape, axis in zip(arg_shapes, in_axes, strict=True):
        if axis is None or shape is None:
            continue
        sharding = shape.sharding
        if not isinstance(sharding, NamedSharding):
            continue
        spec = tuple(sharding.spec) + (None,) * (len(shape.shape) - len(sharding.spec))
        names = _spec_axes(spec[axis])
        if names:
            shards = math.prod(mesh.shape[n] for n in names)
            return names if shape.shape[axis] % shards == 0 else ()
    return ()


def _sharding(mesh, ndim: int, axis: int | None, names: tuple[str, ...]) -> NamedSharding:
    spec = [None] * ndim
    if axis is not None and names:
        spec[axis] = names if len(names) > 1 else names[0]
    return NamedSharding(mesh, P(*spec))


def _partitioned(fn: Callable, in_axes: Axes, out_axes: Axes) -> Callable:
    """``fn`` under ``custom_partitioning``: split along the batch, weights replicated,
    row-summed outputs (``out_axes`` entry ``None``) all-reduced. Every argument is an
    array."""

    def partition(mesh, arg_shapes, result_shape):
        names = _batch_mesh_axes(mesh, arg_shapes, in_axes)
        arg_shardings = tuple(
            _sharding(mesh, len(s.shape), a, names)
            for s, a in zip(arg_shapes, in_axes, strict=True)
        )
        result_shardings = tuple(
            _sharding(mesh, len(s.shape), a, names)
            for s, a in zip(jax.tree.leaves(result_shape), out_axes, strict=True)
        )

        def lower(*args):
            outs = fn(*args)
            if not names:
                return outs
            return tuple(
                lax.psum(o, names) if a is None else o for o, a in zip(outs, out_axes, strict=True)
            )

        return mesh, lower, result_shardings, arg_shardings

    def rule(mesh, operand_types, result_types):
        # Einsum-like factors: the batch dimension is one factor ``b`` shared by every
        # operand and result that has it; every other dimension is a factor of its own.
        count = iter(range(10**6))

        def dims(ndim, axis):
            return " ".join("b" if d == axis else f"f{next(count)}" for d in range(ndim))

        operands = [dims(len(t.shape), a) for t, a in zip(operand_types, in_axes, strict=True)]
        results = [dims(len(t.shape), a) for t, a in zip(result_types, out_axes, strict=True)]
        return f"{', '.join(operands)} -> {', '.join(results)}"

    wrapped = custom_partitioning(fn)
    wrapped.def_partition(partition=partition, sharding_rule=rule)
    return wrapped


def _without_none(fn: Callable, in_axes: Axes, out_axes: Axes) -> Callable:
    """:func:`_partitioned` for arguments that may be ``None`` (an absent bias or mask):
    one partitioned function per pattern of present arguments."""
    cache: dict[tuple[bool, ...], Callable] = {}

    def call(*args):
        present = tuple(x is not None for x in args)
        if present not in cache:

            def dense(*arrays):
                it = iter(arrays)
                return tuple(fn(*(next(it) if p else None for p in present)))

            axes = [a for a, p in zip(in_axes, present, strict=True) if p]
            cache[present] = _partitioned(dense, axes, out_axes)
        return cache[present](*(x for x in args if x is not None))

    return call


def batch_parallel(fn: Callable, in_axes: Axes, out_axes: Axes) -> Callable:
    """Wraps ``fn``, independent along a batch axis, so that it shards, maps and varies
    like a JAX primitive.

    Args:
      fn: takes arrays (or ``None``) positionally and returns a tuple of arrays; each
        row of the batch is computed from that row of the batched inputs alone.
      in_axes: for each argument, its batch axis, or ``None`` for an argument shared by
        all rows (weights).
      out_axes: for each output, its batch axis, or ``None`` for a sum over rows
        (a weight gradient): such outputs are all-reduced over the batch shards.

    Returns:
      A function with ``fn``'s signature that, under ``jit`` with inputs sharded along
      the batch axis, runs ``fn`` on each device's own rows (no all-gather); under
      ``vmap`` calls ``fn`` once on a batch folded from the mapped axis when only batched
      inputs are mapped and no output is a sum over rows, else once per mapped element;
      inside ``shard_map`` returns outputs varying over the inputs' manual axes; and
      under explicit sharding returns rows sharded like the batched inputs' rows.

    Example:
      >>> def rows_and_total(x, w):
      ...     return x @ w, jnp.sum(x @ w, axis=0)
      >>> f = batch_parallel(rows_and_total, in_axes=(0, None), out_axes=(0, None))
      >>> y, total = jax.jit(f)(jnp.ones((4, 3)), jnp.ones((3, 2)))
      >>> y.shape, total.tolist()
      ((4, 2), [12.0, 12.0])
    """
    in_axes, out_axes = tuple(in_axes), tuple(out_axes)
    partitioned = _without_none(fn, in_axes, out_axes)

    @jax.custom_batching.custom_vmap
    def run(*args):
        return tuple(partitioned(*args))

    @run.def_vmap
    def run_vmapped(axis_size, in_batched, *args):
        mapped = [b for b, x in zip(in_batched, args, strict=True) if x is not None]
        shared_mapped = any(
            b
            for b, x, a in zip(in_batched, args, in_axes, strict=True)
            if x is not None and a is None
        )
        if not shared_mapped and all(a is not None for a in out_axes) and any(mapped):
            return _folded(run, axis_size, in_batched, args, in_axes, out_axes)
        args = [
            x if x is None or b else jnp.broadcast_to(x, (axis_size, *x.shape))
            for x, b in zip(args, in_batched, strict=True)
        ]
        outs = lax.map(lambda a: run(*a), tuple(args))
        return outs, (True,) * len(outs)

    def call(*args):
        outs = run(*args)
        # Under explicit sharding, rows come out split like the batched inputs' rows.
        ref, ref_axis = next(
            ((x, a) for x, a in zip(args, in_axes, strict=True) if x is not None and a is not None)
        )
        outs = tuple(
            o if a is None else match_batch_sharding(o, ref, ref_axis, a)
            for o, a in zip(outs, out_axes, strict=True)
        )
        return match_vma(outs, args)

    return call


def _folded(run, axis_size, in_batched, args, in_axes, out_axes):
    """One call of ``run`` with the vmapped axis (leading) folded into each batch axis."""

    def fold(x, batched, axis):
        if x is None or axis is None:  # absent, or a shared argument (not mapped here)
            return x
        if not batched:
            x = jnp.broadcast_to(x, (axis_size, *x.shape))
        x = jnp.moveaxis(x, 0, axis)  # [..., V, B, ...]
        return x.reshape(x.shape[:axis] + (-1,) + x.shape[axis + 2 :])

    outs = run(*(fold(x, b, a) for x, b, a in zip(args, in_batched, in_axes, strict=True)))

    def unfold(y, axis):
        y = y.reshape(y.shape[:axis] + (axis_size, -1) + y.shape[axis + 1 :])
        return jnp.moveaxis(y, axis, 0)

    return tuple(unfold(y, a) for y, a in zip(outs, out_axes, strict=True)), (True,) * len(outs)


def native_on_cpu(xla_fn, native_fn):
    """``xla_fn``, run as ``native_fn`` where lowered for CPU.

    The native code has no derivative rules of its own: derivatives of it (a gradient of
    a gradient, a JVP) are those of ``xla_fn``, which computes the same function.
    """
    native = jax.custom_jvp(native_fn)
    native.defjvp(lambda primals, tangents: jax.jvp(xla_fn, primals, tangents))
    return functools.partial(lax.platform_dependent, cpu=native, default=xla_fn)
