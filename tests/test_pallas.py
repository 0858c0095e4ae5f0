"""The Pallas kernels (``lstm_jax._src.backends.pallas_loops``) on this CPU.

Numbers come from interpret mode, for both the TPU and the GPU variant of each kernel;
the reference for every value and gradient is ``scan.run_layer`` (autodiff of
``lax.scan``), which tests/test_gru_rnn.py and tests/test_lstm_reference.py check against
float64 NumPy loops and torch. Shapes come from lowering for ``tpu`` and ``cuda`` and from
``jax.export`` for each; lowering stops at Mosaic's and Triton's IR, whose compilation
needs the device.
"""

import json
import pickle
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from forced_devices import run_on_devices
from jax import export
from once_per_session import once_per_session

from lstm_jax._src.backends import pallas_loops as pk
from lstm_jax._src.cells import GRU_CELL, LSTM_CELL, RNN_RELU_CELL, RNN_TANH_CELL, CellDef
from lstm_jax._src.init import init_lstm_layer
from lstm_jax._src.scan import run_layer

CELLS = {"lstm": LSTM_CELL, "gru": GRU_CELL, "rnn_tanh": RNN_TANH_CELL, "rnn_relu": RNN_RELU_CELL}
VARIANTS = ["tpu", "gpu"]
I = 4
F32_TOL = {"rtol": 1e-5, "atol": 1e-5}
TRITON = "__gpu$xla.gpu.triton"


def _inputs(cell, time, batch, hidden, dtype=jnp.float32, seed=0, lengths=False):
    """Parameters, ``x`` ``[time, batch, I]``, a non-zero state, lengths and a mask."""
    k = jax.random.split(jax.random.key(seed), 5)
    params = cell.init_layer(k[0], I, hidden, bias=True, dtype=dtype)
    x = jax.random.normal(k[1], (time, batch, I), dtype)
    state = jax.tree.map(
        lambda z: 0.5 * jax.random.normal(k[2], z.shape, jnp.float32),
        cell.zero_state(params, batch),
    )
    seq_lengths = None
    if lengths:
        seq_lengths = jax.random.randint(k[3], (batch,), 1, time + 1, jnp.int32)
        seq_lengths = seq_lengths.at[0].set(time)
    keep = jax.random.bernoulli(k[4], 0.75, (batch, hidden))
    mask = keep.astype(jnp.float32) / jnp.float32(0.75)
    return params, x, state, seq_lengths, mask


def _value_and_grads(run, cell, *, reverse=False, seq_lengths=None, with_mask=False):
    """A jitted ``(params, x, state, mask) -> ((loss, (outputs, final)), grads)``, grads
    w.r.t. the parameters, ``x``, the initial state and the mask."""

    def loss(params, x, state, mask):
        y, final = run(
            cell,
            params,
            x,
            state,
            seq_lengths=seq_lengths,
            reverse=reverse,
            recurrent_mask=mask if with_mask else None,
        )
        y32 = y.astype(jnp.float32)
        value = jnp.sum(jnp.tanh(y32) * jnp.cos(y32)) + sum(
            jnp.sum(jnp.sin(s.astype(jnp.float32))) for s in jax.tree.leaves(final)
        )
        return value, (y, final)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))


def _compare(cell, variant, args, *, tol=F32_TOL, **options):
    with pk.variant(variant):
        got = _value_and_grads(pk.run_pallas_layer, cell, **options)(*args)
    want = _value_and_grads(run_layer, cell, **options)(*args)
    chex.assert_trees_all_close(got, want, **tol)
    return got


# -- parity with the scan ---------------------------------------------------------------

CONFIGS = {
    "plain": {},
    "lengths-reverse-mask": {"reverse": True, "lengths": True, "with_mask": True},
    "lengths-mask": {"lengths": True, "with_mask": True},
}
CASES = [
    (cell, variant, config)
    for cell in CELLS
    for variant in VARIANTS
    for config in CONFIGS
    if config != "lengths-mask" or (cell in ("lstm", "gru") and variant == "tpu")
]


@pytest.mark.parametrize("cell_name, variant, config", CASES)
def test_outputs_and_gradients_match_the_scan(cell_name, variant, config):
    cell, options = CELLS[cell_name], dict(CONFIGS[config])
    params, x, state, lengths, mask = _inputs(cell, 7, 5, 6, lengths=options.pop("lengths", False))
    _compare(cell, variant, (params, x, state, mask), seq_lengths=lengths, **options)


@pytest.mark.parametrize(
    "cell_name, variant",
    [
        ("lstm", "tpu"),
        ("lstm", "gpu"),
        ("gru", "tpu"),
        ("gru", "gpu"),
        ("rnn_tanh", "tpu"),
        ("rnn_relu", "gpu"),
    ],
)
def test_bfloat16_matches_the_scan(cell_name, variant):
    cell = CELLS[cell_name]
    params, x, state, lengths, mask = _inputs(cell, 6, 4, 20, jnp.bfloat16, lengths=True)
    args = (params, x, state, mask)
    options = {"reverse": True, "seq_lengths": lengths, "with_mask": True}
    # Both multiply in bfloat16 and accumulate in float32. The scan's autodiff rounds the
    # gradient reaching h_{t-1} to bfloat16 at each step (the transpose of a bfloat16
    # product) where the kernel keeps it in float32: gradients differ by ~5e-3 of their
    # largest value, outputs not at all (measured).
    (value, (y, final)), _ = _compare(
        cell, variant, args, tol={"rtol": 3e-2, "atol": 3e-2}, **options
    )
    assert y.dtype == jnp.float32 and all(s.dtype == jnp.float32 for s in final)


@pytest.mark.parametrize(
    "cell_name, variant, time, batch, hidden, reverse",
    [
        ("lstm", "tpu", 3, 3, 1, True),
        ("lstm", "tpu", 2, 3, 200, False),
        ("gru", "gpu", 2, 3, 200, True),
        ("lstm", "tpu", 2, 2, 650, True),
        ("lstm", "gpu", 2, 2, 650, False),
        ("lstm", "tpu", 1, 2, 1024, False),  # one step, the largest hidden size
        ("gru", "gpu", 1, 1, 1024, True),
        ("gru", "tpu", 4, 1, 8, False),
        ("rnn_tanh", "gpu", 4, 1, 8, True),
        ("lstm", "tpu", 3, 128, 8, True),
        ("gru", "gpu", 3, 128, 8, False),
        ("lstm", "tpu", 256, 2, 8, True),  # eight time blocks of 32
        ("lstm", "gpu", 256, 2, 8, True),
        ("gru", "tpu", 37, 3, 8, True),  # two time blocks of 19: one padded step
    ],
)
def test_sizes_that_pad_match_the_scan(cell_name, variant, time, batch, hidden, reverse):
    cell = CELLS[cell_name]
    params, x, state, lengths, mask = _inputs(cell, time, batch, hidden, lengths=True)
    _compare(cell, variant, (params, x, state, mask), reverse=reverse, seq_lengths=lengths)


def test_padded_time_without_lengths_runs_in_reverse():
    # 37 steps run as two blocks of 19 on TPU: the padded step comes first in reverse.
    params, x, state, _, mask = _inputs(LSTM_CELL, 37, 2, 5)
    _compare(LSTM_CELL, "tpu", (params, x, state, mask), reverse=True)


@pytest.mark.parametrize("cell_name", CELLS)
def test_padded_units_stay_exactly_zero(cell_name):
    """A layer of 5 units equals the same layer zero-padded to 128 units (no padding
    inside the kernel), whose extra units stay exactly zero."""
    cell, hidden, wide = CELLS[cell_name], 5, 128
    params, x, state, lengths, _ = _inputs(cell, 4, 3, hidden, lengths=True)
    gates = params.weight_hh.shape[0] // hidden

    def pad_gates(a):  # [G * H, ...] -> [G * wide, ...]
        a = a.reshape((gates, hidden) + a.shape[1:])
        a = jnp.pad(a, [(0, 0), (0, wide - hidden)] + [(0, 0)] * (a.ndim - 2))
        return a.reshape((gates * wide,) + a.shape[2:])

    padded = params._replace(
        weight_ih=pad_gates(params.weight_ih),
        weight_hh=jnp.pad(pad_gates(params.weight_hh), [(0, 0), (0, wide - hidden)]),
        bias_ih=pad_gates(params.bias_ih),
        bias_hh=pad_gates(params.bias_hh),
    )
    padded_state = jax.tree.map(lambda s: jnp.pad(s, [(0, 0), (0, wide - hidden)]), state)
    y, final = pk.run_pallas_layer(cell, params, x, state, seq_lengths=lengths)
    y_wide, final_wide = pk.run_pallas_layer(cell, padded, x, padded_state, seq_lengths=lengths)
    assert bool(jnp.all(y_wide[..., hidden:] == 0.0))
    assert all(bool(jnp.all(s[:, hidden:] == 0.0)) for s in final_wide)
    chex.assert_trees_all_close(
        (y_wide[..., :hidden], jax.tree.map(lambda s: s[:, :hidden], final_wide)),
        (y, final),
        **F32_TOL,
    )


@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
def test_mosaic_interpreter_agrees_with_the_hlo_interpreter(cell_name):
    """The TPU variant under Mosaic's interpreter (``pltpu.InterpretParams``, which also
    checks Mosaic's memory semantics) gives the numbers of the HLO interpreter that
    interpret mode runs: two batch blocks, two time blocks, lengths, reverse, a mask."""
    cell = CELLS[cell_name]
    kind = pk._KINDS[cell_name]
    time, batch, hidden = 37, 130, 6
    params, x, state, lengths, mask = _inputs(cell, time, batch, hidden, lengths=True)
    assert pk.block_plan(cell_name, hidden, batch, jnp.float32, "tpu", time=time).grid == (2, 2)
    static = pk._Static(kind, True, time, hidden)
    gx = cell.input_projection(params, x)
    b_hn = params.bias_hh[2 * hidden :] if cell_name == "gru" else None
    c0 = state.c if kind.has_c else None
    forward = (gx, params.weight_hh.T, b_hn, state.h, c0, lengths, mask)

    def both(run, operands):
        return [
            jax.jit(lambda o, m=m: run(o, m))(operands) for m in ("interpret", "mosaic_interpret")
        ]

    hlo, mosaic = both(lambda o, m: pk._run_forward(static, True, "tpu", m, o), forward)
    chex.assert_trees_all_close(mosaic, hlo, rtol=1e-6, atol=1e-6)
    _, _, _, acts, h_prev, c_prev = hlo
    dy = jnp.cos(hlo[0])
    backward = (acts, h_prev, c_prev, dy, params.weight_hh.T, lengths, mask, state.h, c0)
    hlo, mosaic = both(lambda o, m: pk._run_backward(static, "tpu", m, o), backward)
    chex.assert_trees_all_close(mosaic, hlo, rtol=1e-6, atol=1e-6)


# -- composition ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_vmap_of_per_example_gradients_matches_the_scan(variant):
    cell = GRU_CELL
    params, x, state, lengths, mask = _inputs(cell, 5, 3, 6, lengths=True)
    xs = jnp.stack([x, -x])
    states = jax.tree.map(lambda s: jnp.stack([s, 2 * s]), state)

    def grads(run):
        fn = _value_and_grads(run, cell, reverse=True, seq_lengths=lengths, with_mask=True)
        return jax.jit(jax.vmap(fn, in_axes=(None, 0, 0, None)))(params, xs, states, mask)

    with pk.variant(variant):
        got = grads(pk.run_pallas_layer)
    chex.assert_trees_all_close(got, grads(run_layer), **F32_TOL)


def test_vmap_over_parameters_matches_the_scan():
    cell = LSTM_CELL
    params, x, state, _, _ = _inputs(cell, 4, 2, 5)
    stacked = jax.tree.map(lambda p: jnp.stack([p, 0.5 * p]), params)

    def outputs(run):
        return jax.vmap(lambda p: run(cell, p, x, state))(stacked)

    chex.assert_trees_all_close(outputs(pk.run_pallas_layer), outputs(run_layer), **F32_TOL)


SHARDING_CASES = [
    ("Auto", "jit"),
    ("Explicit", "set_mesh"),
    ("Explicit", "jit"),
    ("Explicit", "shard_map"),
]
SHARDED_SCRIPT = """
import contextlib, json, sys
import jax, jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from lstm_jax._src.backends import pallas_loops as pk
from lstm_jax._src.cells import GRU_CELL
from lstm_jax._src.scan import run_layer


def case(axis_type, how):
    p = GRU_CELL.init_layer(jax.random.key(0), 3, 5, bias=True, dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(1), (4, 8, 3), jnp.float32)
    mesh = jax.make_mesh((2,), ("b",), axis_types=(getattr(AxisType, axis_type),))
    x = jax.device_put(x, NamedSharding(mesh, P(None, "b")))
    p = jax.device_put(p, NamedSharding(mesh, P()))
    result = {}
    with jax.set_mesh(mesh) if how == "set_mesh" else contextlib.nullcontext():
        for name, run in (("pallas", pk.run_pallas_layer), ("scan", run_layer)):
            def loss(p, x):
                y, _ = run(GRU_CELL, p, x, GRU_CELL.zero_state(p, x.shape[1]))
                total = jnp.sum(jnp.sin(y))
                return jax.lax.psum(total, "b") if how == "shard_map" else total
            step = jax.value_and_grad(loss, argnums=(0, 1))
            if how == "shard_map":
                specs = (P(), P(None, "b"))
                step = jax.shard_map(step, mesh=mesh, in_specs=specs, out_specs=(P(), specs))
            step = jax.jit(step)
            value, grads = step(p, x)
            result[name] = [float(value)] + [float(jnp.sum(g)) for g in jax.tree.leaves(grads)]
            if name == "pallas":
                result["all_gather"] = "all-gather" in step.lower(p, x).compile().as_text()
                result["dx_spec"] = str(grads[1].sharding.spec)
    return result


cases = json.loads(sys.argv[1])
print("RESULT" + json.dumps({f"{a}-{h}": case(a, h) for a, h in cases}))
"""


@pytest.fixture(scope="module")
def sharded_results(tmp_path_factory):
    """Every sharding case, run in one subprocess with 2 forced host devices."""
    cases = json.dumps(SHARDING_CASES)
    return once_per_session(
        tmp_path_factory,
        "pallas_sharded",
        lambda cwd: run_on_devices(SHARDED_SCRIPT, 2, cases, cwd=cwd),
    )


@pytest.mark.parametrize("axis_type, how", SHARDING_CASES)
def test_sharded_batch_runs_each_devices_rows(sharded_results, axis_type, how):
    result = sharded_results[f"{axis_type}-{how}"]
    assert not result["all_gather"]
    assert result["dx_spec"] in ("P(None, 'b')", "P(None, 'b', None)")
    np.testing.assert_allclose(result["pallas"], result["scan"], rtol=1e-5)


def test_traced_lengths_under_jit_match_the_scan():
    cell = RNN_RELU_CELL
    params, x, state, lengths, _ = _inputs(cell, 6, 3, 5, lengths=True)

    def run(fn, n):
        return fn(cell, params, x, state, seq_lengths=n, reverse=True)

    got = jax.jit(lambda n: run(pk.run_pallas_layer, n))(lengths)
    chex.assert_trees_all_close(got, run(run_layer, lengths), **F32_TOL)


def test_gradient_of_a_gradient_names_the_backends_that_have_one():
    params, x, state, _, _ = _inputs(LSTM_CELL, 3, 2, 4)

    def grad_norm(p):
        g = jax.grad(lambda p: jnp.sum(pk.run_pallas_layer(LSTM_CELL, p, x, state)[0]))(p)
        return sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(g))

    with pytest.raises(NotImplementedError, match="backend='scan' or backend='fused'"):
        jax.grad(grad_norm)(params)


@pytest.mark.parametrize(
    "cell_name, variant", [("lstm", "tpu"), ("gru", "gpu"), ("rnn_relu", "tpu")]
)
def test_nan_and_inf_propagate_as_in_the_scan(cell_name, variant):
    """NaN at a valid step of row 0, inf at a padded step of row 1: outputs, final
    states and gradients are NaN (or not) where the scan's are, and equal elsewhere."""
    cell = CELLS[cell_name]
    params, x, state, _, mask = _inputs(cell, 5, 3, 4)
    lengths = jnp.array([5, 2, 4], jnp.int32)
    x = x.at[2, 0, 1].set(jnp.nan).at[3, 1, 0].set(jnp.inf)
    options = {"seq_lengths": lengths}
    with pk.variant(variant):
        got = _value_and_grads(pk.run_pallas_layer, cell, **options)(params, x, state, mask)
    want = _value_and_grads(run_layer, cell, **options)(params, x, state, mask)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(jnp.isnan(g), jnp.isnan(w))
        np.testing.assert_allclose(g, w, **F32_TOL)  # NaN where both are
    assert bool(jnp.isnan(got[0][1][0][2:, 0]).all())  # row 0 is NaN from step 2 on
    assert not bool(jnp.isnan(got[0][1][0][:, 1]).any())  # row 1's padded inf is masked


# -- lowering and export for the accelerators --------------------------------------------


def _grad_step(cell, time=3, batch=4, hidden=200, dtype=jnp.float32):
    params, x, state, lengths, mask = _inputs(cell, time, batch, hidden, dtype, lengths=True)

    def step(params, x, state, lengths, mask):
        def loss(p):
            y, final = pk.run_pallas_layer(
                cell, p, x, state, seq_lengths=lengths, reverse=True, recurrent_mask=mask
            )
            return jnp.sum(y) + sum(jnp.sum(s) for s in jax.tree.leaves(final))

        value, grads = jax.value_and_grad(loss)(params)
        return value, jax.tree.map(lambda p, g: p - jnp.asarray(0.1, p.dtype) * g, params, grads)

    return step, (params, x, state, lengths, mask)


KERNEL_CALL = {"tpu": "tpu_custom_call", "cuda": TRITON}


@pytest.mark.parametrize("hidden, dtype", [(200, "float32"), (650, "bfloat16")])
@pytest.mark.parametrize("cell_name", CELLS)
def test_grad_step_lowers_for_tpu_and_cuda(cell_name, hidden, dtype):
    step, args = _grad_step(CELLS[cell_name], hidden=hidden, dtype=jnp.dtype(dtype))
    traced = jax.jit(step).trace(*args)
    for platform in ("tpu", "cuda"):
        text = traced.lower(lowering_platforms=(platform,)).as_text()
        assert text.count(KERNEL_CALL[platform]) >= 2  # the forward and backward kernels


@pytest.mark.parametrize("hidden, dtype", [(200, "bfloat16"), (650, "float32")])
@pytest.mark.parametrize("cell_name", CELLS)
def test_forward_lowers_for_tpu_and_cuda(cell_name, hidden, dtype):
    cell = CELLS[cell_name]
    params, x, state, lengths, _ = _inputs(cell, 3, 4, hidden, jnp.dtype(dtype), lengths=True)
    traced = jax.jit(lambda x: pk.run_pallas_layer(cell, params, x, state, seq_lengths=lengths))
    traced = traced.trace(x)
    for platform in ("tpu", "cuda"):
        assert KERNEL_CALL[platform] in traced.lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_grad_step_exports_for_each_accelerator(platform):
    step, args = _grad_step(LSTM_CELL, hidden=32)
    # Triton's IR has no compatibility guarantee: jax.export asks for the check to be
    # turned off by name.
    checks = [export.DisabledSafetyCheck.custom_call(TRITON)] if platform == "cuda" else []
    exported = export.export(jax.jit(step), platforms=[platform], disabled_checks=checks)(*args)
    assert exported.platforms == (platform,)
    assert KERNEL_CALL[platform] in exported.mlir_module()


def test_cuda_export_without_the_disabled_check_names_the_triton_call():
    step, args = _grad_step(GRU_CELL, hidden=16)
    with pytest.raises(ValueError, match="no compatibility guarantees"):
        export.export(jax.jit(step), platforms=["cuda"])(*args)


def test_cpu_export_of_interpret_mode_runs_back():
    step, (params, x, state, lengths, mask) = _grad_step(LSTM_CELL, hidden=6)
    leaves, tree = jax.tree.flatten((params, state))

    def flat(leaves, x, lengths, mask):
        p, s = jax.tree.unflatten(tree, leaves)
        return step(p, x, s, lengths, mask)[0]

    exported = export.export(jax.jit(flat), platforms=["cpu"])(leaves, x, lengths, mask)
    np.testing.assert_allclose(
        exported.call(leaves, x, lengths, mask), flat(leaves, x, lengths, mask), rtol=1e-6
    )


# -- what runs, and the plans -----------------------------------------------------------


def test_unsupported_reason_accepts_the_four_cells_and_pickled_copies():
    for cell in CELLS.values():
        params = cell.init_layer(jax.random.key(0), 3, 5, bias=True, dtype=jnp.float32)
        assert pk.unsupported_reason(cell, params, jnp.float32) is None
        assert pk.unsupported_reason(pickle.loads(pickle.dumps(cell)), params, jnp.bfloat16) is None


@pytest.mark.parametrize(
    "options, dtype, expected",
    [
        ({"peephole": True}, jnp.float32, "plain LSTM, GRU and RNN cells only, got peephole"),
        ({"layer_norm": True}, jnp.float32, "cells only, got layer norm"),
        ({"cifg": True}, jnp.float32, "cells only, got CIFG"),
        ({"proj_size": 2}, jnp.float32, "no LSTM projection"),
        ({}, jnp.float64, "float32 or bfloat16, got float64"),
    ],
)
def test_unsupported_reason_names_what_does_not_run(options, dtype, expected):
    params = init_lstm_layer(jax.random.key(0), 3, 5, dtype=dtype, **options)
    reason = pk.unsupported_reason(LSTM_CELL, params, dtype)
    assert reason is not None and re.search(expected, reason), reason
    with pytest.raises(ValueError, match=expected):
        pk.run_pallas_layer(
            LSTM_CELL, params, jnp.ones((2, 1, 3), dtype), LSTM_CELL.zero_state(params, 1)
        )


def test_unsupported_reason_for_other_cells_and_oversized_weights():
    other = CellDef(
        "softsign_pallas_test",
        *[
            getattr(RNN_TANH_CELL, f)
            for f in ("input_projection", "update", "state_sizes", "init_layer", "param_type")
        ],
    )
    params = RNN_TANH_CELL.init_layer(jax.random.key(0), 3, 5, bias=True, dtype=jnp.float32)
    reason = pk.unsupported_reason(other, params, jnp.float32)
    assert reason.endswith("cells only, got the 'softsign_pallas_test' cell"), reason
    huge = jax.eval_shape(lambda: init_lstm_layer(jax.random.key(0), 3, 2048))
    assert "VMEM" in pk.unsupported_reason(LSTM_CELL, huge, jnp.float32)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("cell_name", CELLS)
def test_block_plans_fit_their_hardware(cell_name, variant, dtype):
    for hidden, batch, time in [(1, 1, 1), (200, 20, 100), (650, 300, 35), (1024, 64, 512)]:
        plan = pk.block_plan(cell_name, hidden, batch, dtype, variant, time=time)
        assert plan.hidden_padded >= hidden and plan.batch_padded >= batch
        assert plan.batch_padded % plan.batch_block == 0
        assert plan.grid[0] == plan.batch_padded // plan.batch_block
        if variant == "tpu":
            assert plan.hidden_padded % 128 == 0
            assert plan.batch_block % (8 if dtype == jnp.float32 else 16) == 0
            assert plan.grid[1] * plan.time_block >= time > (plan.grid[1] - 1) * plan.time_block
            assert max(plan.forward_bytes, plan.backward_bytes) <= pk._TPU_VMEM_BUDGET
        else:
            hp, bb = plan.hidden_padded, plan.batch_block
            assert hp >= 16 and hp & (hp - 1) == 0 and bb >= 16 and bb & (bb - 1) == 0
            assert plan.grid == (plan.batch_padded // bb,) and plan.time_block == time


def test_variant_rejects_unknown_names():
    with pytest.raises(ValueError, match="'tpu' or 'gpu'"):
        with pk.variant("cpu"):
            pass
