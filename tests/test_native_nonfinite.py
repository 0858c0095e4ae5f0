"""NaN and inf through the fused kernel: its native CPU loops
(``lstm_jax/_src/native/lstm_cpu.cc``) and its XLA loops (``portable_kernels``).

The reference is the plain scan (``backend="scan"``: ``lax.scan`` of the cell,
differentiated by autodiff), which shares no code with the C++ loops. With one NaN or
inf planted in an input, the state or a weight, the native run (``backend="fused"`` on
CPU) must give NaN, +inf and -inf in exactly the same entries of the outputs, the final
states and every gradient, and close values everywhere else. With ``seq_lengths`` the
scan keeps a padded step's NaN out of the state (a select), but autodiff of that select
still passes the step's NaN gradient back to the earlier steps: so must the native loops.
At a hidden size that is not a multiple of 32 the kernel's last block of units is partial,
and an inf input must not reach the real units through the block's missing ones.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fused_runs import assert_same_nonfinite_pattern

import lstm_jax
from lstm_jax import functional as F
from lstm_jax._src.native import lstm_cpu

T, B, I = 6, 4, 5
HIDDEN = (32, 37)  # 37: a full block of 32 units and a partial one of 5
LENGTHS = np.array([6, 2, 4, 1], np.int32)  # row 1 is padded at steps 2..5

_REASON = lstm_cpu.unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=str(_REASON))

nan, inf = float("nan"), float("inf")
# name: (what, index, value); a direction index of -1 is the reverse one when there is one,
# a unit index of -1 the last unit (in the partial block at H = 37). Every case but the
# last gives some non-finite result; -inf in the output gate's bias (-28: an entry of the
# last H) closes that gate exactly (sigmoid(-inf) = 0, its derivative 0), and all stays
# finite.
CASES = {
    "x_nan": ("x", (2, 1, 3), nan),
    "x_posinf": ("x", (2, 1, 3), inf),
    "x_neginf": ("x", (1, 2, 0), -inf),
    "x_nan_at_a_padded_step": ("x", (4, 1, 3), nan),
    "x_posinf_at_a_padded_step": ("x", (4, 1, 3), inf),
    "h0_nan": ("h0", (-1, 1, 5), nan),
    "h0_nan_in_the_last_unit": ("h0", (0, 3, -1), nan),
    "c0_nan": ("c0", (0, 2, 7), nan),
    "c0_posinf": ("c0", (-1, 2, 7), inf),
    "c0_posinf_in_the_last_unit": ("c0", (-1, 0, -1), inf),
    "weight_ih_nan": ("weight_ih", (-1, 40, 2), nan),
    "weight_hh_nan": ("weight_hh", (0, 70, 9), nan),
    "weight_hh_nan_in_the_last_unit": ("weight_hh", (0, -1, -1), nan),
    "bias_hh_neginf": ("bias_hh", (0, -28), -inf),
}


def _problem(bidirectional, hidden, variants=()):
    """``variants``: the names of :func:`F.init_lstm_params`' flags to turn on."""
    keys = jax.random.split(jax.random.key(0), 4)
    flags = dict.fromkeys(variants, True)
    params = F.init_lstm_params(keys[0], I, hidden, bidirectional=bidirectional, **flags)
    d = 2 if bidirectional else 1
    x = jax.random.normal(keys[1], (T, B, I), jnp.float32)
    h0 = jax.random.normal(keys[2], (d, B, hidden), jnp.float32)
    c0 = jax.random.normal(keys[3], (d, B, hidden), jnp.float32)
    return params, x, h0, c0


def _plant(planted, params, x, h0, c0):
    """The problem with ``planted = (what, index, value)`` set (see :data:`CASES`)."""
    what, index, value = planted
    if what == "x":
        return params, x.at[index].set(value), h0, c0
    if what in ("h0", "c0"):
        state = {"h0": h0, "c0": c0}
        state[what] = state[what].at[index].set(value)
        return params, x, state["h0"], state["c0"]
    direction, entry = index[0] % len(params[0]), index[1:]
    layer = list(params[0])
    weight = getattr(layer[direction], what)
    layer[direction] = layer[direction]._replace(**{what: weight.at[entry].set(value)})
    return (tuple(layer),), x, h0, c0


@functools.cache
def _compiled(backend, bidirectional, padded, hidden, variants=()):
    """Outputs, final states and the gradients of every argument, jitted once per grid
    point (every case has the same shapes)."""
    seq = jnp.asarray(LENGTHS) if padded else None

    def run(params, x, h0, c0):
        kernel = "scan" if backend == "scan" else "fused"
        y, (h_n, c_n) = F.lstm(params, x, (h0, c0), seq_lengths=seq, backend=kernel)
        return y, h_n, c_n

    def loss(*args):
        y, h_n, c_n = run(*args)
        return jnp.sum(y * jnp.cos(y)) + jnp.sum(h_n * h_n) + jnp.sum(jnp.sin(c_n))

    def values_and_grads(*args):
        return run(*args), jax.grad(loss, argnums=(0, 1, 2, 3))(*args)

    problem = _problem(bidirectional, hidden, variants)
    if backend == "fused-xla":
        with lstm_jax.portable_kernels():
            lowered = jax.jit(values_and_grads).lower(*problem)
        assert "lstm_jax_native" not in lowered.as_text()
        return lowered.compile()
    lowered = jax.jit(values_and_grads).lower(*problem)
    if backend == "fused":
        assert "lstm_jax_native_forward" in lowered.as_text()
        assert "lstm_jax_native_backward" in lowered.as_text()
    return lowered.compile()


# The XLA loops have no blocks of units: one hidden size is enough for them.
@pytest.mark.parametrize(
    "kernel,hidden",
    [("fused", h) for h in HIDDEN] + [("fused-xla", HIDDEN[0])],
    ids=[f"native-H{h}" for h in HIDDEN] + ["xla-loops"],
)
@pytest.mark.parametrize("padded", [False, True], ids=["full", "seq_lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("case", list(CASES))
def test_nonfinite_values_propagate_as_in_the_scan(case, bidirectional, padded, kernel, hidden):
    args = _plant(CASES[case], *_problem(bidirectional, hidden))
    expected = _compiled("scan", bidirectional, padded, hidden)(*args)
    got = _compiled(kernel, bidirectional, padded, hidden)(*args)
    nonfinite = any(not np.isfinite(a).all() for a in jax.tree.leaves(expected))
    assert nonfinite == (case != "bias_hh_neginf")
    assert_same_nonfinite_pattern(got, expected)


# The peepholes carry c into the gates: a non-finite state or peephole weight reaches
# them through the products the plain cell does not have.
PEEPHOLE_CASES = {
    "c0_nan": ("c0", (0, 2, 7), nan),
    "c0_posinf_in_the_last_unit": ("c0", (-1, 0, -1), inf),
    "x_nan_at_a_padded_step": ("x", (4, 1, 3), nan),
    "weight_ci_nan": ("weight_ci", (0, 3), nan),
    "weight_co_neginf_in_the_last_unit": ("weight_co", (-1, -1), -inf),
}


# With coupled input-forget gates the forget gate's weights and peephole reach the input
# gate too (the layer runs them as a second, negated block).
CIFG_CASES = {
    "c0_nan": ("c0", (0, 2, 7), nan),
    "weight_cf_nan": ("weight_cf", (0, 3), nan),
    "weight_hh_neginf_in_the_forget_block": ("weight_hh", (-1, 2, 1), -inf),
}
VARIANT_CASES = [(("peephole",), case, PEEPHOLE_CASES[case]) for case in PEEPHOLE_CASES] + [
    (("cifg", "peephole"), case, CIFG_CASES[case]) for case in CIFG_CASES
]


@pytest.mark.parametrize("kernel", ["fused", "fused-xla"])
@pytest.mark.parametrize(
    "variants,case,planted", VARIANT_CASES, ids=[f"{'-'.join(v)}-{c}" for v, c, _ in VARIANT_CASES]
)
def test_nonfinite_values_propagate_through_the_variants_as_in_the_scan(
    variants, case, planted, kernel
):
    hidden = HIDDEN[1]
    args = _plant(planted, *_problem(True, hidden, variants))
    expected = _compiled("scan", True, True, hidden, variants)(*args)
    got = _compiled(kernel, True, True, hidden, variants)(*args)
    assert any(not np.isfinite(a).all() for a in jax.tree.leaves(expected))
    assert_same_nonfinite_pattern(got, expected)


def test_native_padded_nan_stays_out_of_the_state_but_not_out_of_the_gradients():
    """What the scan does, and so the native loops, for a NaN at a padded step."""
    args = _plant(CASES["x_nan_at_a_padded_step"], *_problem(False, HIDDEN[0]))
    (y, h_n, c_n), (_, dx, dh0, dc0) = _compiled("fused", False, True, HIDDEN[0])(*args)
    assert np.isfinite(y).all() and np.isfinite(h_n).all() and np.isfinite(c_n).all()
    # row 1: NaN at its padded step 4 and at its valid steps 0 and 1, zero in between
    assert np.isnan(dx[:, 1]).all(axis=-1).tolist() == [True, True, False, False, True, False]
    assert np.isnan(dh0[0, 1]).all() and np.isnan(dc0[0, 1]).all()
    assert np.isfinite(dx[:, [0, 2, 3]]).all() and np.isfinite(dh0[0, [0, 2, 3]]).all()
