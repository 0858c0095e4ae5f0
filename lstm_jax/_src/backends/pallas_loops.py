r"""Recurrent layers as Pallas kernels that keep the recurrence on chip (TPU and GPU).

The layer is a ``jax.custom_vjp`` in the manner of :mod:`~lstm_jax._src.fused`: only what
is sequential runs inside the loops, and every other product runs once over all steps.

- before the loop: the input projection of all steps, ``cell.input_projection(params,
  x)`` ``[time, batch, G]``, one large product (biases folded in);
- forward kernel: ``W_hh`` (transposed, ``[Hp, G_blocks * Hp]``, in the parameters'
  dtype) stays on chip for the whole sequence, ``h`` and ``c`` are the kernel's carries;
  each step is one product per gate block, ``h_{t-1} @ W_hh^T``, and the gate math in
  float32. For the backward pass it stores the gate activations, the state before each
  step (``h_{t-1}``, and ``c_{t-1}`` for the LSTM) and, for the GRU,
  ``W_hn h_{t-1} + b_hn``;
- backward kernel: the recurrence of the gate gradients, ``dz_t``, ``dh_{t-1} = dz_t @
  W_hh`` (``W_hh`` on chip) and ``dc_{t-1}``, with the gate derivatives written out for
  each cell below;
- after the loop: ``dW_hh = dZ_h^T H_{prev}`` is one product over all steps, and ``dx``,
  ``dW_ih`` and the biases are autodiff's VJP of the input projection, again single
  products over all steps.

Gate derivatives (``a`` an activation, ``d·`` the gradient reaching it; the LSTM's
``dc`` includes ``dh * o * (1 - tanh(c_t)^2)``):

.. math::

   \text{LSTM:}\quad & dz_i = dc\, g\, i(1-i),\; dz_f = dc\, c_{t-1} f(1-f),\;
       dz_g = dc\, i (1-g^2),\; dz_o = dh \tanh(c_t)\, o(1-o),\;
       dc_{t-1} = dc\, f \\
   \text{GRU:}\quad & dn = dh (1-z)(1-n^2),\; dz_z = dh (h_{t-1}-n) z(1-z),\;
       dz_{hn} = dn\, r,\; dz_r = dn\, (W_{hn} h_{t-1} + b_{hn})\, r(1-r),\;
       dh_{t-1} \mathrel{+}= dh\, z \\
   \text{RNN:}\quad & dz = dh (1 - h_t^2) \;(\tanh), \quad dz = dh\,[h_t > 0] \;(\mathrm{ReLU})

For the GRU the recurrent product's gradient differs from the input projection's in the
``n`` block: ``dz_{hn}`` (``r`` times ``dn``) feeds ``dW_hn`` and ``db_hn``, ``dn`` feeds
``dW_in``, ``db_in`` and ``dx``.

Precision: products run in the parameters' dtype and accumulate in float32
(``preferred_element_type``); gate math, carries, outputs and stored activations are
float32, as :mod:`~lstm_jax._src.cells` keeps them.

Layout: each gate block of the hidden size is padded to ``Hp`` with zero weights and
biases (TPU: a multiple of 128 lanes; GPU: a power of two >= 16, as Triton's blocks and
dots need); from a zero padded state, padded units stay exactly zero in the LSTM (``c =
f c + i g = 0``, ``h = o tanh 0``), the GRU (``n = tanh 0``, ``h = (1-z) 0 + z 0``) and
the RNN, and their gradients are zero. The batch is padded to a multiple of the batch
block; padded rows run with length 0 and are sliced away. Gates are never split as
values (Triton has no ``slice`` of values): each gate is a slice of a ref, ``w_ref[:,
pl.ds(k * Hp, Hp)]``, with one product per gate.

Variants: on TPU (Mosaic) the grid is ``(batch_blocks, time_chunks)``, batch blocks
parallel and time sequential ("arbitrary"), the carries in VMEM scratch and the weight's
block constant, so it is loaded once and stays resident. On GPU (Triton) grid programs
are not sequential, so the grid is ``(batch_blocks,)`` and each program runs a
``lax.fori_loop`` over every step. ``seq_lengths`` and the reverse direction are
handled inside the kernels: each step computes its time index and validity from a
lengths ref; padded steps keep the state and write zeros, and run in reverse the masked
steps ``T-1 .. n`` come first (:mod:`~lstm_jax._src.scan`'s semantics).

Platforms: ``lax.platform_dependent`` picks the compiled TPU kernel on TPU, the compiled
Triton kernel on CUDA and, elsewhere, interpret mode: the TPU variant, or the GPU
variant inside :func:`variant` ``("gpu")``, both run by Pallas's HLO interpreter
(``interpret=True``), which runs the grid in order and carries the scratch between grid
steps as Mosaic does. Mosaic's own interpreter (``pltpu.InterpretParams``) gives the same
numbers (the tests compare them) but works through ordered IO callbacks, which
``custom_partitioning`` cannot lower ("KeyError: OrderedIOEffect") and which cannot be
exported; it is also ~75x slower here (GRU, T40 B3 H6: 0.18 s against 2.5 ms per call).
Each kernel call is wrapped by :func:`~lstm_jax._src.custom_calls.batch_parallel`, so it
is split along the batch under ``jit`` with sharded inputs, folded into one call under
``vmap``, and typed for ``jax.shard_map``. Two things Pallas needs besides: under
explicit mesh axes a ref typed as sharded cannot be indexed by a step, so the kernels are
traced with the axes made automatic (``jax.sharding.auto_axes``); inside ``shard_map``
the results' types name the manual axes they vary over (``manual_axis_type``).

Export: ``jax.export`` for ``["tpu"]`` works as it is (``tpu_custom_call`` is a stable
custom call, and ``custom_partitioning`` is inlined for a single device). For
``["cuda"]`` the Triton kernels are ``__gpu$xla.gpu.triton`` custom calls, which
``jax.export`` refuses unless told, as Triton's IR has no compatibility guarantee:
``disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]``.
One export for several platforms at once fails: JAX lowers every branch of
``platform_dependent`` for every platform of the module, and a compiled ``pallas_call``
lowers for its own platform only ("Compiler params for platform tpu cannot be used for
gpu lowering"); export once per platform.

Derivatives of the kernels themselves (a gradient of a gradient) are not provided: they
raise ``NotImplementedError`` naming the backends that have them. Forward-mode
(``jax.jvp``) is refused by JAX for any ``custom_vjp``, as for the fused layer.

The tests check numbers in interpret mode and shapes by lowering to Mosaic's and
Triton's IR; what happens after that IR (their compilers) and speed show only on a
device. In particular a step multiplies a
``[batch_block, Hp]`` state by whole ``[Hp, Hp]`` gate tiles, which Triton holds in
registers and shared memory: for large ``Hp`` (predicted: above 128 in float32, above
256 in bfloat16) the Triton compiler may run out of them, and the GPU variant would then
need the product tiled over ``Hp`` inside the step.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu
from jax.sharding import PartitionSpec as P

from lstm_jax._src import compat, custom_calls
from lstm_jax._src.cells import (
    GRU_CELL,
    LSTM_CELL,
    RNN_RELU_CELL,
    RNN_TANH_CELL,
    CellDef,
    lstm_variants,
)
from lstm_jax._src.types import LSTMParams

_F32 = jnp.dtype(jnp.float32)


class _Kind(NamedTuple):
    """What the kernels need to know of a cell kind."""

    name: str
    gates: int  # gate blocks in W_hh
    saved: int  # blocks of stored activations
    has_c: bool  # an LSTM cell state beside h


_KINDS = {
    "lstm": _Kind("lstm", 4, 4, True),
    "gru": _Kind("gru", 3, 4, False),  # r, z, n and W_hn h + b_hn
    "rnn_tanh": _Kind("rnn_tanh", 1, 1, False),
    "rnn_relu": _Kind("rnn_relu", 1, 1, False),
}
_CELLS = (LSTM_CELL, GRU_CELL, RNN_TANH_CELL, RNN_RELU_CELL)

# On-chip budgets the plans are sized against. TPU: VMEM per core is 64 MiB (v7x) to
# 128 MiB (v5e, v6e); the plan keeps a kernel within 40 MiB and asks Mosaic for that
# plus headroom. GPU: the weights are held in registers across the loop only while they
# are small (a prediction, not measured); larger weights are read per step from L2.
_TPU_VMEM_BUDGET = 40 * 2**20
_TPU_VMEM_LIMIT_MAX = 60 * 2**20
_TPU_MAX_TIME_BLOCK = 32
_TPU_MAX_BATCH_BLOCK = 128
_GPU_RESIDENT_WEIGHT_BYTES = 64 * 2**10
_GPU_MAX_BATCH_BLOCK = 64

_VARIANT = custom_calls.trace_context(None)


@contextlib.contextmanager
def variant(name: str):
    """A context in which interpret mode (on platforms other than TPU and CUDA) runs the
    ``"tpu"`` or the ``"gpu"`` variant of the kernels.

    Outside it, interpret mode runs the TPU variant. On TPU and CUDA the compiled kernel
    of that platform runs whatever the context. The context is part of jit's cache key.

    Raises:
      ValueError: ``name`` is neither ``"tpu"`` nor ``"gpu"``.

    Example:
      >>> from lstm_jax._src.init import init_rnn_layer
      >>> p = init_rnn_layer(jax.random.key(0), 3, 4)
      >>> x = jnp.ones((2, 1, 3), jnp.float32)
      >>> with variant("gpu"):
      ...     out, _ = run_pallas_layer(RNN_TANH_CELL, p, x, RNN_TANH_CELL.zero_state(p, 1))
      >>> out.shape
      (2, 1, 4)
    """
    if name not in ("tpu", "gpu"):
        raise ValueError(f"variant must be 'tpu' or 'gpu', got {name!r}")
    with _VARIANT(name):
        yield


def _kind_of(cell: CellDef) -> _Kind | None:
    for known in _CELLS:
        if cell == known:
            return _KINDS[known.name]
    return None


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class BlockPlan(NamedTuple):
    """How a layer is laid out on chip by one variant of the kernels.

    Attributes:
      hidden_padded: ``Hp``, the hidden size of each gate block after padding.
      batch_padded: the batch after padding to a multiple of ``batch_block``.
      batch_block: rows per grid program.
      time_block: steps per grid step (TPU); every step (GPU).
      grid: ``(batch_blocks, time_blocks)`` (TPU) or ``(batch_blocks,)`` (GPU).
      weights_resident: whether ``W_hh`` stays on chip for the whole sequence.
      forward_bytes: on-chip bytes of the forward kernel: weights, carries and the
        per-step tiles (TPU: double-buffered blocks in VMEM; GPU: registers and shared
        memory of one program).
      backward_bytes: the same for the backward kernel.
    """

    hidden_padded: int
    batch_padded: int
    batch_block: int
    time_block: int
    grid: tuple[int, ...]
    weights_resident: bool
    forward_bytes: int
    backward_bytes: int


def _tpu_bytes(kind: _Kind, hp: int, bb: int, tc: int, itemsize: int) -> tuple[int, int]:
    """VMEM bytes of the forward and backward TPU kernels: the weight (one buffer, its
    block is the whole array), double-buffered row and time blocks, and the scratch
    carries."""
    row = bb * hp * 4
    step = tc * row  # one [time_block, batch_block, Hp] float32 block
    weight = hp * kind.gates * hp * itemsize + 8 * hp * 4  # W_hh, b_hn
    lengths = 2 * bb * 128 * 4
    carries = (2 if kind.has_c else 1) * row
    state_rows = 2 * (2 if kind.has_c else 1) * row  # h0, c0 in; h_T, c_T out
    forward = (
        weight
        + lengths
        + carries
        + 2 * (state_rows + row)  # states and the recurrent mask
        + 2 * step * (kind.gates + 1)  # gates_x in, y out
        + 2 * step * (kind.saved + 2)  # activations, h_{t-1}, c_{t-1} out
    )
    backward = (
        weight
        + lengths
        + carries
        + row  # the mask gradient's accumulator
        + 2 * (state_rows + 2 * row)  # dh_T, dc_T in; dh_0, dc_0, mask, d mask
        + 2 * step * (kind.saved + 3)  # activations, h_{t-1}, c_{t-1}, dy in
        + 2 * step * (kind.gates + 1)  # dgates_x, dz_hn out
    )
    return forward, backward


def block_plan(
    cell_name: str,
    hidden_size: int,
    batch: int,
    dtype,
    variant: str,
    *,
    time: int | None = None,
) -> BlockPlan:
    """The padded sizes, blocks, grid and on-chip bytes of the kernels for one layer.

    Args:
      cell_name: ``"lstm"``, ``"gru"``, ``"rnn_tanh"`` or ``"rnn_relu"``.
      hidden_size: ``H``.
      batch: ``B``.
      dtype: the parameters' dtype (float32 or bfloat16), that of the resident weight.
      variant: ``"tpu"`` or ``"gpu"``.
      time: ``T``; without it the plan is that of the largest time block and one time
        block in the grid.

    Returns:
      A :class:`BlockPlan`.

    Raises:
      ValueError: an unknown cell or variant.

    Example:
      >>> block_plan("lstm", 650, 20, jnp.float32, "tpu", time=100)[:5]
      (768, 24, 24, 13, (1, 8))
      >>> block_plan("lstm", 650, 20, jnp.float32, "gpu", time=100)[:5]
      (1024, 32, 16, 100, (2,))
    """
    kind = _KINDS.get(cell_name)
    if kind is None:
        raise ValueError(f"unknown cell {cell_name!r}; expected one of {', '.join(_KINDS)}")
    itemsize = jnp.dtype(dtype).itemsize
    if variant == "tpu":
        hp = _round_up(max(hidden_size, 1), 128)
        sub = 8 if itemsize >= 4 else 16  # sublanes of a packed tile
        rows = _round_up(batch, sub)
        blocks = -(-rows // _TPU_MAX_BATCH_BLOCK)
        bb = _round_up(-(-rows // blocks), sub)
        t = _TPU_MAX_TIME_BLOCK if time is None else time
        chunks = -(-t // _TPU_MAX_TIME_BLOCK)
        tc = -(-t // chunks)
        while max(_tpu_bytes(kind, hp, bb, tc, itemsize)) > _TPU_VMEM_BUDGET:
            if tc > 1:
                tc = -(-tc // 2)
            elif bb > sub:
                bb = _round_up(bb // 2, sub)
            else:
                break
        tc = -(-t // -(-t // tc))  # the same number of time blocks, least padding
        forward, backward = _tpu_bytes(kind, hp, bb, tc, itemsize)
        bp = _round_up(batch, bb)
        time_blocks = 1 if time is None else -(-time // tc)
        return BlockPlan(hp, bp, bb, tc, (bp // bb, time_blocks), True, forward, backward)
    if variant == "gpu":
        hp = max(16, _next_pow2(hidden_size))
        # One program per 16 rows spreads a small batch over as many SMs as it can; a
        # large one gets larger blocks (a prediction, not measured).
        bb = min(_GPU_MAX_BATCH_BLOCK, max(16, _next_pow2(-(-batch // 128))))
        bp = _round_up(batch, bb)
        weight = hp * kind.gates * hp * itemsize
        resident = weight <= _GPU_RESIDENT_WEIGHT_BYTES
        weight_on_chip = weight if resident else hp * hp * itemsize  # else one gate's tile
        row = bb * hp * 4
        carries = (2 if kind.has_c else 1) * row
        forward = weight_on_chip + carries + row * (kind.gates + kind.saved + 3)
        backward = weight_on_chip + carries + 2 * row + row * (kind.saved + kind.gates + 4)
        return BlockPlan(hp, bp, bb, time or 1, (bp // bb,), resident, forward, backward)
    raise ValueError(f"variant must be 'tpu' or 'gpu', got {variant!r}")


def unsupported_reason(cell: CellDef, params: Any, dtype) -> str | None:
    """Why the Pallas kernels cannot run a layer, or ``None`` when they can.

    They run the plain LSTM (no peepholes, layer norm, coupled gates or projection), the
    GRU and the Elman RNN (tanh and ReLU), in float32 or bfloat16, with a recurrent
    weight that fits in a TPU core's VMEM.

    Args:
      cell: the cell kind (compared by value).
      params: that cell's parameters for one layer and direction.
      dtype: the layer's compute dtype.

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5)
      >>> unsupported_reason(LSTM_CELL, p, jnp.float32) is None
      True
      >>> unsupported_reason(LSTM_CELL, init_lstm_layer(jax.random.key(0), 3, 5, proj_size=2),
      ...                    jnp.float32)
      'the Pallas kernel has no LSTM projection (proj_size > 0)'
    """
    kind = _kind_of(cell)
    if kind is None:
        return f"the Pallas kernel runs the LSTM, GRU and RNN cells only, got {cell.describe()}"
    if kind.name == "lstm":
        if not isinstance(params, LSTMParams):
            return f"the Pallas kernel runs LSTMParams, got {type(params).__name__}"
        if params.weight_hr is not None:
            return "the Pallas kernel has no LSTM projection (proj_size > 0)"
        variants = lstm_variants(params)
        if variants:
            return (
                "the Pallas kernel runs the plain LSTM, GRU and RNN cells only, got "
                + ", ".join(variants)
            )
    fields = getattr(params, "_fields", ())
    if "weight_hh" not in fields or "weight_ih" not in fields:
        return f"the Pallas kernel needs weight_ih and weight_hh, got {fields}"
    hidden = params.weight_hh.shape[1]
    if params.weight_hh.shape[0] != kind.gates * hidden:
        return (
            f"the Pallas kernel needs weight_hh of {kind.gates} * hidden_size rows, got "
            f"{params.weight_hh.shape}"
        )
    wrong = sorted(
        {str(jnp.dtype(d)) for d in (dtype, params.weight_hh.dtype)} - {"float32", "bfloat16"}
    )
    if wrong:
        return f"the Pallas kernel runs float32 or bfloat16, got {', '.join(wrong)}"
    smallest = _tpu_bytes(
        kind, _round_up(hidden, 128), 8, 1, jnp.dtype(params.weight_hh.dtype).itemsize
    )
    if max(smallest) > _TPU_VMEM_BUDGET:
        return (
            f"hidden_size={hidden} needs more than {_TPU_VMEM_BUDGET >> 20} MiB of TPU VMEM "
            "for the recurrent weight and one step"
        )
    return None


# -- padding -----------------------------------------------------------------------------


def _pad_blocks(a: jax.Array, blocks: int, hidden: int, hp: int) -> jax.Array:
    """``[..., blocks * hidden] -> [..., blocks * hp]``, each block padded with zeros."""
    if hp == hidden:
        return a
    a = a.reshape(a.shape[:-1] + (blocks, hidden))
    a = jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, hp - hidden)])
    return a.reshape(a.shape[:-2] + (blocks * hp,))


def _unpad_blocks(a: jax.Array, blocks: int, hidden: int, hp: int) -> jax.Array:
    if hp == hidden:
        return a
    a = a.reshape(a.shape[:-1] + (blocks, hp))[..., :hidden]
    return a.reshape(a.shape[:-2] + (blocks * hidden,))


def _pad_axis(a: jax.Array | None, axis: int, size: int) -> jax.Array | None:
    """``a`` padded with zeros at the end of ``axis`` to ``size``."""
    if a is None or a.shape[axis] == size:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, size - a.shape[axis])
    return jnp.pad(a, pad)


class _Padding(NamedTuple):
    """The sizes a kernel runs at, and the arrays padded to them and back."""

    time: int
    time_padded: int
    batch: int
    batch_padded: int
    hidden: int
    hp: int

    def steps(self, a, blocks=1):
        """``[time, batch, blocks * hidden] -> [time_padded, batch_padded, blocks * hp]``."""
        a = _pad_blocks(a, blocks, self.hidden, self.hp)
        return _pad_axis(_pad_axis(a, 1, self.batch_padded), 0, self.time_padded)

    def rows(self, a):
        """``[batch, hidden] -> [batch_padded, hp]``."""
        return _pad_axis(_pad_blocks(a, 1, self.hidden, self.hp), 0, self.batch_padded)

    def weight(self, w_t, gates):
        """``W_hh^T`` ``[hidden, gates * hidden] -> [hp, gates * hp]``."""
        return _pad_axis(_pad_blocks(w_t, gates, self.hidden, self.hp), 0, self.hp)

    def steps_back(self, a, blocks=1):
        return _unpad_blocks(a[: self.time, : self.batch], blocks, self.hidden, self.hp)

    def rows_back(self, a):
        return _unpad_blocks(a[: self.batch], 1, self.hidden, self.hp)


# -- the loops inside the kernels --------------------------------------------------------


class _Layout(NamedTuple):
    """Static facts a kernel body is built from."""

    kind: _Kind
    variant: str  # "tpu" or "gpu"
    hp: int
    batch_block: int
    time_block: int  # TPU: steps per grid step; GPU: all steps
    backwards: bool  # iterate from the last step to the first
    masked: bool  # a lengths ref is present
    has_mask: bool  # a recurrent mask is present
    resident: bool  # GPU: weights loaded once before the loop
    vmem_limit: int  # TPU: Mosaic's VMEM limit in bytes


def _sequential(lay: _Layout, scratch, init, step, finish):
    """Runs ``step(local, t, carry) -> carry`` over time in the kernel.

    ``local`` indexes the time-blocked refs, ``t`` is the step's time in the sequence.
    TPU: one time block per grid step, the carries kept in ``scratch`` between grid
    steps (``init()`` fills them at the first, ``finish(carry)`` runs at the last). GPU:
    every step in one loop.
    """
    tc = lay.time_block
    # Scalars are int32 throughout: Mosaic rejects the int64 that constants become with
    # jax_enable_x64.
    first, steps = jnp.int32(0), jnp.int32(tc)

    def local_index(s):
        return jnp.int32(tc - 1) - s if lay.backwards else s

    if lay.variant == "gpu":
        carry = init()
        carry = lax.fori_loop(
            first, steps, lambda s, c: step(local_index(s), local_index(s), c), carry
        )
        finish(carry)
        return

    j = pl.program_id(1)
    chunks = pl.num_programs(1)
    chunk = chunks - 1 - j if lay.backwards else j

    @pl.when(j == 0)
    def _():
        for ref, value in zip(scratch, init(), strict=True):
            ref[...] = value

    def body(s, carry):
        local = local_index(s)
        return step(local, chunk * jnp.int32(tc) + local, carry)

    carry = lax.fori_loop(first, steps, body, tuple(ref[...] for ref in scratch))
    for ref, value in zip(scratch, carry, strict=True):
        ref[...] = value

    @pl.when(j == chunks - 1)
    def _():
        finish(carry)


def _weight_reader(lay: _Layout, w_ref, transposed: bool):
    """``weight(k)``: gate block ``k`` of ``W_hh`` as ``[Hp, Hp]``, ready for ``h @ ·``
    (``transposed``: from ``W_hh^T`` ``[Hp, G*Hp]``) or ``dz_k @ ·`` (from ``W_hh``
    ``[G*Hp, Hp]``)."""
    hp = lay.hp

    def read(k):
        if transposed:
            return w_ref[:, pl.ds(k * hp, hp)]
        return w_ref[pl.ds(k * hp, hp), :]

    if lay.variant == "gpu" and lay.resident:
        blocks = [read(k) for k in range(lay.kind.gates)]
        return lambda k: blocks[k]
    return read


def _dot(a: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.dot(a.astype(w.dtype), w, preferred_element_type=_F32)


def _sigmoid_grad(a):
    return a * (1.0 - a)


def _forward_kernel(lay: _Layout, save: bool, *refs, names):
    r = dict(zip(names, refs, strict=True))
    kind, hp = lay.kind, lay.hp
    weight = _weight_reader(lay, r["w"], transposed=True)
    mask = r["mask"][...] if lay.has_mask else None
    lengths = None
    if lay.masked:
        lengths = jnp.broadcast_to(r["lengths"][...], (lay.batch_block, hp))

    def gate_x(local, k):
        return r["gx"][local, :, pl.ds(k * hp, hp)]

    def step(local, t, carry):
        h = carry[0]
        c = carry[1] if kind.has_c else None
        hm = h if mask is None else h * mask

        def pre(k):
            return gate_x(local, k) + _dot(hm, weight(k))

        if kind.name == "lstm":
            i, f = jax.nn.sigmoid(pre(0)), jax.nn.sigmoid(pre(1))
            g, o = jnp.tanh(pre(2)), jax.nn.sigmoid(pre(3))
            c_new = f * c + i * g
            h_new = o * jnp.tanh(c_new)
            acts = (i, f, g, o)
        elif kind.name == "gru":
            rr, z = jax.nn.sigmoid(pre(0)), jax.nn.sigmoid(pre(1))
            hn = _dot(hm, weight(2)) + r["b_hn"][...]
            n = jnp.tanh(gate_x(local, 2) + rr * hn)
            h_new = (1.0 - z) * n + z * h
            acts = (rr, z, n, hn)
        else:
            h_new = jnp.tanh(pre(0)) if kind.name == "rnn_tanh" else jnp.maximum(pre(0), 0.0)
            acts = (h_new,)
        if save:
            for k, a in enumerate(acts):
                r["acts"][local, :, pl.ds(k * hp, hp)] = a
            r["h_prev"][local, :, :] = h
            if kind.has_c:
                r["c_prev"][local, :, :] = c
        y = h_new
        if lengths is not None:
            valid = t < lengths
            h_new = jnp.where(valid, h_new, h)
            y = jnp.where(valid, y, jnp.zeros_like(y))
            if kind.has_c:
                c_new = jnp.where(valid, c_new, c)
        r["y"][local, :, :] = y
        return (h_new, c_new) if kind.has_c else (h_new,)

    def init():
        return (r["h0"][...], r["c0"][...]) if kind.has_c else (r["h0"][...],)

    def finish(carry):
        r["h_t"][...] = carry[0]
        if kind.has_c:
            r["c_t"][...] = carry[1]

    scratch = [r[n] for n in ("h_scratch", "c_scratch") if n in r]
    _sequential(lay, scratch, init, step, finish)


def _backward_kernel(lay: _Layout, *refs, names):
    r = dict(zip(names, refs, strict=True))
    kind, hp = lay.kind, lay.hp
    weight = _weight_reader(lay, r["w"], transposed=False)
    mask = r["mask"][...] if lay.has_mask else None
    lengths = None
    if lay.masked:
        lengths = jnp.broadcast_to(r["lengths"][...], (lay.batch_block, hp))

    def act(local, k):
        return r["acts"][local, :, pl.ds(k * hp, hp)]

    def step(local, t, carry):
        dh = carry[0]
        dc = carry[1] if kind.has_c else None
        d_mask = carry[-1] if lay.has_mask else None
        d_new = dh + r["dy"][local, :, :]
        dc_new = dc
        keep_h = keep_c = None
        if lengths is not None:  # a padded step passed the state through, output zeros
            valid = t < lengths
            zero = jnp.zeros_like(dh)
            keep_h, d_new = jnp.where(valid, zero, dh), jnp.where(valid, d_new, zero)
            if kind.has_c:
                keep_c, dc_new = jnp.where(valid, zero, dc), jnp.where(valid, dc, zero)
        direct = None  # gradient reaching h_{t-1} other than through W_hh
        if kind.name == "lstm":
            i, f, g, o = (act(local, k) for k in range(4))
            c_prev = r["c_prev"][local, :, :]
            tc = jnp.tanh(f * c_prev + i * g)
            dc_tot = dc_new + d_new * o * (1.0 - tc * tc)
            dz = (
                dc_tot * g * _sigmoid_grad(i),
                dc_tot * c_prev * _sigmoid_grad(f),
                dc_tot * i * (1.0 - g * g),
                d_new * tc * _sigmoid_grad(o),
            )
            dz_h = dz
            dc_prev = dc_tot * f
            if keep_c is not None:
                dc_prev = dc_prev + keep_c
        elif kind.name == "gru":
            rr, z, n, hn = (act(local, k) for k in range(4))
            h_prev = r["h_prev"][local, :, :]
            dn = d_new * (1.0 - z) * (1.0 - n * n)
            dz_r = dn * hn * _sigmoid_grad(rr)
            dz_z = d_new * (h_prev - n) * _sigmoid_grad(z)
            dz_hn = dn * rr
            dz, dz_h = (dz_r, dz_z, dn), (dz_r, dz_z, dz_hn)
            direct = d_new * z
            r["dz_hn"][local, :, :] = dz_hn
        else:
            a = act(local, 0)
            if kind.name == "rnn_tanh":
                dz = (d_new * (1.0 - a * a),)
            else:  # as jax.nn.relu's derivative: zero where the activation is not > 0
                dz = (jnp.where(a > 0.0, d_new, jnp.zeros_like(d_new)),)
            dz_h = dz
        for k, d in enumerate(dz):
            r["dgx"][local, :, pl.ds(k * hp, hp)] = d
        dh_rec = _dot(dz_h[0], weight(0))
        for k in range(1, kind.gates):
            dh_rec = dh_rec + _dot(dz_h[k], weight(k))
        if mask is not None:
            d_mask = d_mask + r["h_prev"][local, :, :] * dh_rec
            dh_rec = dh_rec * mask
        dh_prev = dh_rec if direct is None else direct + dh_rec
        if keep_h is not None:
            dh_prev = dh_prev + keep_h
        out = (dh_prev,) + ((dc_prev,) if kind.has_c else ())
        return out + ((d_mask,) if lay.has_mask else ())

    def init():
        carry = (r["dh_t"][...],) + ((r["dc_t"][...],) if kind.has_c else ())
        if lay.has_mask:
            carry += (jnp.zeros((lay.batch_block, hp), _F32),)
        return carry

    def finish(carry):
        r["dh0"][...] = carry[0]
        if kind.has_c:
            r["dc0"][...] = carry[1]
        if lay.has_mask:
            r["d_mask"][...] = carry[-1]

    scratch = [r[n] for n in ("dh_scratch", "dc_scratch", "d_mask_scratch") if n in r]
    _sequential(lay, scratch, init, step, finish)


# -- building the pallas_calls -----------------------------------------------------------


def _call(lay: _Layout, kernel, inputs, outputs, scratch, grid, mode, name):
    """One ``pallas_call`` from ``(name, array, kind)`` inputs, ``(name, shape, kind)``
    float32 outputs and ``(name, shape)`` float32 scratch (TPU only), with the block
    specs of ``lay.variant``; the kernel gets its refs by name (``names=``).

    An array's kind is ``"time"`` (``[time, batch, width]``, blocked over batch and
    time), ``"rows"`` (``[batch, width]``) or ``"shared"`` (the same block for every
    program: weights). ``mode`` is ``"compiled"``, ``"interpret"`` (the HLO
    interpreter, for either variant) or ``"mosaic_interpret"`` (the TPU variant under
    Mosaic's interpreter, ``pltpu.InterpretParams``).
    """
    bb, tc = lay.batch_block, lay.time_block
    tpu = lay.variant == "tpu"

    def chunk(j):
        return pl.num_programs(1) - 1 - j if lay.backwards else j

    def spec(kind_, shape):
        width = shape[-1]
        if kind_ == "time":
            if tpu:
                return pl.BlockSpec((tc, bb, width), lambda b, j: (chunk(j), b, 0))
            return pl.BlockSpec((shape[0], bb, width), lambda b: (0, b, 0))
        if kind_ == "rows":
            if tpu:
                return pl.BlockSpec((bb, width), lambda b, j: (b, 0))
            return pl.BlockSpec((bb, width), lambda b: (b, 0))
        if tpu:
            return pl.BlockSpec(shape, lambda b, j: (0, 0))
        return pl.BlockSpec(shape, lambda b: (0, 0))

    # Inside jax.shard_map every operand varies over the manual axes any of them varies
    # over, and so do the results, whose type must say so.
    arrays = custom_calls.match_vma([a for _, a, _ in inputs], [a for _, a, _ in inputs])
    manual = getattr(jax.typeof(arrays[0]), "manual_axis_type", None)
    typed = {} if manual is None else {"manual_axis_type": manual}
    in_specs = [spec(k, a.shape) for _, a, k in inputs]
    out_specs = [spec(k, s) for _, s, k in outputs]
    out_shape = [jax.ShapeDtypeStruct(s, _F32, **typed) for _, s, _ in outputs]
    names = [n for n, _, _ in inputs] + [n for n, _, _ in outputs]
    scratch_shapes = []
    if tpu:
        names += [n for n, _ in scratch]
        scratch_shapes = [pltpu.VMEM(s, _F32) for _, s in scratch]
        compiler_params = pltpu.CompilerParams(
            dimension_semantics=("parallel", "arbitrary"),
            vmem_limit_bytes=lay.vmem_limit,
        )
        interpret = {
            "compiled": False,
            "interpret": True,
            "mosaic_interpret": pltpu.InterpretParams(),
        }[mode]
    else:
        num_warps = 4 if lay.hp <= 64 else 8
        compiler_params = plgpu.CompilerParams(num_warps=num_warps, num_stages=1)
        interpret = mode == "interpret"
        if interpret:
            compiler_params = None
    return pl.pallas_call(
        functools.partial(kernel, names=names),
        out_shape=out_shape,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        scratch_shapes=scratch_shapes,
        compiler_params=compiler_params,
        interpret=interpret,
        name=name,
    )(*arrays)


def _vmem_limit(plan: BlockPlan) -> int:
    """Mosaic's VMEM limit for a plan: its bytes and a quarter more, plus 4 MiB."""
    need = max(plan.forward_bytes, plan.backward_bytes)
    return int(min(max(need * 5 // 4 + (4 << 20), 32 << 20), _TPU_VMEM_LIMIT_MAX))


class _Static(NamedTuple):
    """The static arguments of the layer's custom VJP."""

    kind: _Kind
    reverse: bool
    time: int
    hidden: int


def _prepare(static: _Static, variant_name, dtype, batch, lengths, has_mask, backwards):
    """The layout, grid and padding of one kernel call, and the lengths ref's contents:
    ``[batch_padded, 1]`` int32 (0 for padded rows), or ``None`` where no step is
    masked. Time padded to whole time blocks is masked, so lengths are made for it."""
    plan = block_plan(static.kind.name, static.hidden, batch, dtype, variant_name, time=static.time)
    time_padded = static.time
    if variant_name == "tpu":
        time_padded = plan.grid[1] * plan.time_block
    if lengths is None and time_padded != static.time:
        lengths = jnp.full((batch,), static.time, jnp.int32)
    if lengths is not None:
        lengths = _pad_axis(lengths.astype(jnp.int32), 0, plan.batch_padded)[:, None]
    lay = _Layout(
        static.kind,
        variant_name,
        plan.hidden_padded,
        plan.batch_block,
        plan.time_block,
        backwards,
        lengths is not None,
        has_mask,
        plan.weights_resident,
        _vmem_limit(plan),
    )
    pad = _Padding(
        static.time, time_padded, batch, plan.batch_padded, static.hidden, plan.hidden_padded
    )
    return lay, plan.grid, pad, lengths


def _run_forward(static: _Static, save: bool, variant_name: str, mode: str, operands):
    """The forward kernel over the rows of ``operands`` (see ``_recurrence``): returns
    ``(y, h_T, c_T)`` and, with ``save``, ``(acts, h_prev, c_prev)``; ``None`` for what
    the cell does not have."""
    gx, w_t, b_hn, h0, c0, lengths, mask = operands
    kind = static.kind
    lay, grid, pad, lengths = _prepare(
        static, variant_name, w_t.dtype, gx.shape[1], lengths, mask is not None, static.reverse
    )
    hp, bp, bb = lay.hp, pad.batch_padded, lay.batch_block
    inputs = [
        ("gx", pad.steps(gx, kind.gates), "time"),
        ("w", pad.weight(w_t, kind.gates), "shared"),
    ]
    if kind.name == "gru":
        inputs.append(("b_hn", _pad_blocks(b_hn, 1, pad.hidden, hp)[None, :], "shared"))
    inputs.append(("h0", pad.rows(h0), "rows"))
    if kind.has_c:
        inputs.append(("c0", pad.rows(c0), "rows"))
    if lengths is not None:
        inputs.append(("lengths", lengths, "rows"))
    if mask is not None:
        inputs.append(("mask", pad.rows(mask), "rows"))
    steps = (pad.time_padded, bp, hp)
    outputs = [("y", steps, "time"), ("h_t", (bp, hp), "rows")]
    if kind.has_c:
        outputs.append(("c_t", (bp, hp), "rows"))
    if save:
        outputs.append(("acts", (pad.time_padded, bp, kind.saved * hp), "time"))
        outputs.append(("h_prev", steps, "time"))
        if kind.has_c:
            outputs.append(("c_prev", steps, "time"))
    scratch = [("h_scratch", (bb, hp))] + ([("c_scratch", (bb, hp))] if kind.has_c else [])
    kernel = functools.partial(_forward_kernel, lay, save)
    outs = _call(lay, kernel, inputs, outputs, scratch, grid, mode, f"{kind.name}_forward")
    named = dict(zip([n for n, _, _ in outputs], outs, strict=True))
    result = (
        pad.steps_back(named["y"]),
        pad.rows_back(named["h_t"]),
        pad.rows_back(named["c_t"]) if kind.has_c else None,
    )
    if save:
        result += (
            pad.steps_back(named["acts"], kind.saved),
            pad.steps_back(named["h_prev"]),
            pad.steps_back(named["c_prev"]) if kind.has_c else None,
        )
    return result


def _run_backward(static: _Static, variant_name: str, mode: str, operands):
    """The backward kernel over the rows of ``operands`` (see ``_recurrence_bwd``):
    returns ``(dgates_x, dz_hn, dh0, dc0, d_mask)``, ``None`` for what does not exist."""
    acts, h_prev, c_prev, dy, w_t, lengths, mask, dh_t, dc_t = operands
    kind = static.kind
    lay, grid, pad, lengths = _prepare(
        static, variant_name, w_t.dtype, dy.shape[1], lengths, mask is not None, not static.reverse
    )
    hp, bp, bb = lay.hp, pad.batch_padded, lay.batch_block
    inputs = [("acts", pad.steps(acts, kind.saved), "time"), ("dy", pad.steps(dy), "time")]
    if kind.name == "gru" or mask is not None:
        inputs.append(("h_prev", pad.steps(h_prev), "time"))
    if kind.has_c:
        inputs.append(("c_prev", pad.steps(c_prev), "time"))
    inputs.append(("w", pad.weight(w_t, kind.gates).T, "shared"))
    inputs.append(("dh_t", pad.rows(dh_t), "rows"))
    if kind.has_c:
        inputs.append(("dc_t", pad.rows(dc_t), "rows"))
    if lengths is not None:
        inputs.append(("lengths", lengths, "rows"))
    if mask is not None:
        inputs.append(("mask", pad.rows(mask), "rows"))
    outputs = [("dgx", (pad.time_padded, bp, kind.gates * hp), "time")]
    if kind.name == "gru":
        outputs.append(("dz_hn", (pad.time_padded, bp, hp), "time"))
    outputs.append(("dh0", (bp, hp), "rows"))
    if kind.has_c:
        outputs.append(("dc0", (bp, hp), "rows"))
    if mask is not None:
        outputs.append(("d_mask", (bp, hp), "rows"))
    scratch = [("dh_scratch", (bb, hp))] + ([("dc_scratch", (bb, hp))] if kind.has_c else [])
    if mask is not None:
        scratch.append(("d_mask_scratch", (bb, hp)))
    kernel = functools.partial(_backward_kernel, lay)
    outs = _call(lay, kernel, inputs, outputs, scratch, grid, mode, f"{kind.name}_backward")
    named = dict(zip([n for n, _, _ in outputs], outs, strict=True))
    return (
        pad.steps_back(named["dgx"], kind.gates),
        pad.steps_back(named["dz_hn"]) if kind.name == "gru" else None,
        pad.rows_back(named["dh0"]),
        pad.rows_back(named["dc0"]) if kind.has_c else None,
        pad.rows_back(named["d_mask"]) if mask is not None else None,
    )


# -- platforms, batch parallelism, derivatives -------------------------------------------


def _dispatch(run, operands):
    """``run(variant, mode, operands)`` for the platform it is lowered for: the compiled
    TPU kernel on TPU, the compiled Triton kernel on CUDA, interpret mode elsewhere."""
    default_variant = _VARIANT.value or "tpu"
    return lax.platform_dependent(
        operands,
        tpu=functools.partial(run, "tpu", "compiled"),
        cuda=functools.partial(run, "gpu", "compiled"),
        default=functools.partial(run, default_variant, "interpret"),
    )


def _no_derivatives(fn):
    """``fn`` with a JVP rule that says it has none (derivatives of the kernels)."""
    wrapped = jax.custom_jvp(fn)

    def jvp(primals, tangents):
        raise NotImplementedError(
            "the Pallas recurrent kernels have no derivatives of their own (a gradient of "
            "a gradient): use backend='scan' or backend='fused'"
        )

    wrapped.defjvp(jvp)
    return wrapped


def _kernel_call(run, in_axes, out_axes, present, operands):
    """``run`` over the batch rows of ``operands``, wrapped by ``batch_parallel``;
    ``present`` says which results exist (the others are ``None``)."""
    axes = tuple(a for a, p in zip(out_axes, present, strict=True) if p)

    def dense(*args):
        return tuple(o for o in _dispatch(run, args) if o is not None)

    def rows(*args):
        # Under explicit mesh axes every array's type carries its sharding, and a Pallas
        # ref typed as sharded cannot be indexed by a step; inside, the axes are automatic.
        spec = tuple(getattr(jax.typeof(args[0]).sharding, "spec", None) or ())
        if not any(spec):
            return dense(*args)
        entry = spec[in_axes[0]]
        # Results are [time, batch, width] (batch axis 1) or [batch, width] (axis 0).
        out_sharding = tuple(
            custom_calls.sharding_like(
                args[0], P(*[entry if d == a else None for d in range(a + 2)])
            )
            for a in axes
        )
        return jax.sharding.auto_axes(dense, out_sharding=out_sharding)(*args)

    outs = iter(_no_derivatives(custom_calls.batch_parallel(rows, in_axes, axes))(*operands))
    return tuple(next(outs) if p else None for p in present)


# Batch axes of the kernels' operands and results (``None``: shared by every row).
_FORWARD_IN_AXES = (1, None, None, 0, 0, 0, 0)  # gx, w_t, b_hn, h0, c0, lengths, mask
_FORWARD_OUT_AXES = (1, 0, 0, 1, 1, 1)  # y, h_T, c_T, acts, h_prev, c_prev
# acts, h_prev, c_prev, dy, w_t, lengths, mask, dh_T, dc_T
_BACKWARD_IN_AXES = (1, 1, 1, 1, None, 0, 0, 0, 0)
_BACKWARD_OUT_AXES = (1, 1, 0, 0, 0)  # dgx, dz_hn, dh0, dc0, d_mask


def _forward_call(static: _Static, save: bool, *operands):
    has_c = static.kind.has_c
    present = (True, True, has_c) + ((True, True, has_c) if save else ())
    run = functools.partial(_run_forward, static, save)
    return _kernel_call(run, _FORWARD_IN_AXES, _FORWARD_OUT_AXES[: len(present)], present, operands)


def _backward_call(static: _Static, *operands):
    mask = operands[6]
    kind = static.kind
    present = (True, kind.name == "gru", True, kind.has_c, mask is not None)
    run = functools.partial(_run_backward, static)
    return _kernel_call(run, _BACKWARD_IN_AXES, _BACKWARD_OUT_AXES, present, operands)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _recurrence(static: _Static, gx, w_t, b_hn, h0, c0, lengths, mask):
    y, h_t, c_t = _forward_call(static, False, gx, w_t, b_hn, h0, c0, lengths, mask)
    return y, h_t, c_t


def _recurrence_fwd(static: _Static, gx, w_t, b_hn, h0, c0, lengths, mask):
    y, h_t, c_t, acts, h_prev, c_prev = _forward_call(
        static, True, gx, w_t, b_hn, h0, c0, lengths, mask
    )
    # Of gx, h0 and c0 the backward pass needs only the dtype and the variance inside
    # shard_map of their cotangents: it keeps empty slices of them, not the arrays.
    gx, h0, c0 = (None if a is None else lax.slice_in_dim(a, 0, 0, axis=-1) for a in (gx, h0, c0))
    residuals = (gx, w_t, b_hn, h0, c0, lengths, mask, acts, h_prev, c_prev)
    return (y, h_t, c_t), residuals


def _recurrence_bwd(static: _Static, residuals, cotangents):
    gx, w_t, b_hn, h0, c0, lengths, mask, acts, h_prev, c_prev = residuals
    dy, dh_t, dc_t = cotangents
    kind = static.kind
    dgx, dz_hn, dh0, dc0, d_mask = _backward_call(
        static, acts, h_prev, c_prev, dy, w_t, lengths, mask, dh_t, dc_t
    )
    dz_h = dgx
    if kind.name == "gru":  # the recurrent product's n block gets r * dn
        hidden = static.hidden
        dz_h = jnp.concatenate([dgx[..., : 2 * hidden], dz_hn], axis=-1)
    h_in = h_prev if mask is None else h_prev * mask[None]
    dw_t = _weight_gradient(h_in, dz_h, w_t.dtype)
    db_hn = None if b_hn is None else jnp.sum(dz_hn, axis=(0, 1))

    def cotangent(g, p):  # the primal's dtype, and its variance inside shard_map
        return None if p is None else custom_calls.sum_to_vma(g.astype(p.dtype), p)

    return (
        cotangent(dgx, gx),
        cotangent(dw_t, w_t),
        cotangent(db_hn, b_hn),
        cotangent(dh0, h0),
        cotangent(dc0, c0),
        None,
        cotangent(d_mask, mask),
    )


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def _weight_gradient(inputs, dgates, dtype):
    """``sum_t,b inputs[t, b, k] dgates[t, b, g]`` ``[K, G]``: one product over all steps,
    operands in ``dtype``, accumulated in float32."""
    return compat.einsum(
        "tbk,tbg->kg",
        inputs.astype(dtype),
        dgates.astype(dtype),
        preferred_element_type=_F32,
        **custom_calls.summed_out_sharding(inputs),
    )


def run_pallas_layer(
    cell: CellDef,
    params: Any,
    x: jax.Array,
    initial_state: Any,
    *,
    seq_lengths: jax.Array | None = None,
    reverse: bool = False,
    recurrent_mask: jax.Array | None = None,
) -> tuple[jax.Array, Any]:
    """One layer in one direction as Pallas kernels: the contract of ``scan.run_layer``.

    Gives the outputs and gradients of ``run_layer(cell, ...)`` for the cells
    :func:`unsupported_reason` accepts, with the recurrence of the forward and backward
    passes inside one kernel each (``W_hh`` and the state on chip) and every other
    product outside the loops.

    Args:
      cell: ``LSTM_CELL``, ``GRU_CELL``, ``RNN_TANH_CELL`` or ``RNN_RELU_CELL``.
      params: its parameters for this layer and direction.
      x: ``[time, batch, input_size]``.
      initial_state: the cell's state, leaves ``[batch, hidden_size]``.
      seq_lengths: optional int32 ``[batch]`` in ``1..time``; may be traced.
      reverse: run from each row's last valid step to the first.
      recurrent_mask: optional ``[batch, hidden_size]`` multiplier of ``h_{t-1}`` where
        it enters ``W_hh h_{t-1}`` (variational dropout), the same at every step.

    Returns:
      ``(outputs, final_state)``: ``outputs`` ``[time, batch, hidden_size]`` in float32
      (zero at padded steps) and the state after each row's last valid step, of the
      structure of ``initial_state``.

    Raises:
      ValueError: :func:`unsupported_reason` gives a reason.

    Example:
      >>> from lstm_jax._src.init import init_lstm_layer
      >>> p = init_lstm_layer(jax.random.key(0), 3, 5)
      >>> x = jnp.ones((4, 2, 3), jnp.float32)
      >>> out, (h, c) = run_pallas_layer(LSTM_CELL, p, x, LSTM_CELL.zero_state(p, 2))
      >>> out.shape, bool(jnp.allclose(out[-1], h))
      ((4, 2, 5), True)
    """
    dtype = params.weight_hh.dtype
    reason = unsupported_reason(cell, params, dtype)
    if reason is not None:
        raise ValueError(reason)
    kind = _kind_of(cell)
    time, hidden = x.shape[0], params.weight_hh.shape[1]
    initial_state = custom_calls.match_vma(initial_state, params, x, seq_lengths, recurrent_mask)
    initial_state = custom_calls.match_batch_sharding(initial_state, x, 1, 0)
    gx = cell.input_projection(params, x).astype(_F32)
    w_t = params.weight_hh.T
    b_hn = None
    if kind.name == "gru":
        b_hn = jnp.zeros((hidden,), _F32)
        if params.bias_hh is not None:
            b_hn = params.bias_hh[2 * hidden :].astype(_F32)
    h0 = initial_state.h.astype(_F32)
    c0 = initial_state.c.astype(_F32) if kind.has_c else None
    lengths = None if seq_lengths is None else seq_lengths.astype(jnp.int32)
    mask = None if recurrent_mask is None else recurrent_mask.astype(_F32)
    static = _Static(kind, bool(reverse), time, hidden)
    y, h_t, c_t = _recurrence(static, gx, w_t, b_hn, h0, c0, lengths, mask)
    final = initial_state._replace(h=h_t, c=c_t) if kind.has_c else initial_state._replace(h=h_t)
    return y, final
