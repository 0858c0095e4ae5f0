"""The Flax and JAX idioms users write around the library.

- ``nnx.Rngs(params=0)`` builds any model without a random regulariser; one with
  dropout and no stream for it says which stream and which option.
- ``jax.export`` with a symbolic batch, time or both, for every backend that exports,
  and serialisation of functions that take the parameters and return the states.
- Traced ``seq_lengths``: one documented behaviour on every kernel, and ``checkify``
  reports lengths out of range inside ``checking_seq_lengths()``, at no cost to programs
  traced outside it.
- ``lstm_jax.explain_backend`` on functions under ``nnx.jit``, ``nnx.vmap`` and
  ``nnx.value_and_grad``, leaving the model alone.
"""

import contextlib
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import export
from jax.experimental import checkify

import lstm_jax
from lstm_jax import checking_seq_lengths
from lstm_jax import functional as F

I, H, T, B = 3, 8, 6, 4

# -- random streams ---------------------------------------------------------------------


@pytest.mark.parametrize("module", [lstm_jax.LSTM, lstm_jax.GRU, lstm_jax.RNN])
def test_a_model_without_random_options_needs_only_a_params_stream(module):
    model = module(I, H, num_layers=2, rngs=nnx.Rngs(params=0))
    model.train()
    out, _ = model(jnp.ones((T, B, I), jnp.float32))
    assert out.shape == (T, B, H)
    # the same parameters as from one default stream
    same = module(I, H, num_layers=2, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(model.weight_hh_l1[...], same.weight_hh_l1[...])


@pytest.mark.parametrize(
    "module, options",
    [
        (lstm_jax.LSTM, {"dropout": 0.25, "num_layers": 2}),
        (lstm_jax.GRU, {"zoneout": 0.1}),
        (lstm_jax.RNN, {"recurrent_dropout": 0.5}),
    ],
)
def test_a_random_option_without_its_stream_names_both(module, options):
    name = next(k for k in options if k != "num_layers")
    with pytest.raises(ValueError, match="'dropout' stream") as error:
        module(I, H, rngs=nnx.Rngs(params=0), **options)
    assert f"{name}={options[name]}" in str(error.value)
    model = module(I, H, rngs=nnx.Rngs(params=0, dropout=1), **options)  # the stream given
    assert model(jnp.ones((T, B, I), jnp.float32))[0].shape == (T, B, H)


# -- jax.export ---------------------------------------------------------------------------

# (backend, platforms, traced inside portable_kernels())
EXPORTS = {
    "scan-cpu": ("scan", ["cpu"], False),
    "fused-cpu-portable": ("fused", ["cpu"], True),
    "fused-cuda-tpu": ("fused", ["cuda", "tpu"], False),
}


@pytest.mark.parametrize("target", sorted(EXPORTS))
@pytest.mark.parametrize("dims", ["b", "t", "t, b"])
def test_export_with_symbolic_batch_and_time(target, dims):
    backend, platforms, portable = EXPORTS[target]
    names = [d.strip() for d in dims.split(",")]
    symbols = dict(zip(names, export.symbolic_shape(dims), strict=True))
    time, batch = symbols.get("t", T), symbols.get("b", B)
    lstm_p = F.init_lstm_params(jax.random.key(0), I, H, bidirectional=True)
    gru_p = F.init_gru_params(jax.random.key(1), I, H)

    def f(lstm_p, gru_p, x, lengths):
        out, (h, c) = F.lstm(lstm_p, x, seq_lengths=lengths, backend=backend)
        return out, h, c, F.gru(gru_p, x, backend=backend)[0]

    specs = (
        jax.ShapeDtypeStruct((time, batch, I), jnp.float32),
        jax.ShapeDtypeStruct((batch,), jnp.int32),
    )
    with lstm_jax.portable_kernels() if portable else contextlib.nullcontext():
        exported = export.export(jax.jit(f), platforms=platforms)(lstm_p, gru_p, *specs)
    assert exported.platforms == tuple(platforms)
    if "cpu" not in platforms:
        return
    # run back at sizes other than those it was traced at
    t, b = T + 3 * ("t" in symbols), B + 3 * ("b" in symbols)
    x = jax.random.normal(jax.random.key(2), (t, b, I), jnp.float32)
    lengths = jnp.arange(b, dtype=jnp.int32) % t + 1
    outputs = exported.call(lstm_p, gru_p, x, lengths)
    for got, want in zip(outputs, jax.jit(f)(lstm_p, gru_p, x, lengths), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_exported_functions_of_the_named_tuples_serialize():
    params = {
        "lstm": F.init_lstm_params(jax.random.key(0), I, H),
        "gru": F.init_gru_params(jax.random.key(1), I, H),
        "rnn_tanh": F.init_rnn_params(jax.random.key(2), I, H),
    }

    def f(params, x):  # takes LSTMParams, GRUParams, RNNParams; returns their states
        return {cell: F.apply_recurrent(cell, p, x, backend="scan") for cell, p in params.items()}

    x = jax.random.normal(jax.random.key(3), (T, B, I), jnp.float32)
    (batch,) = export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((T, batch, I), jnp.float32)
    restored = export.deserialize(export.export(jax.jit(f))(params, spec).serialize())
    got, want = restored.call(params, x), f(params, x)
    assert {cell: type(state) for cell, (_, state) in got.items()} == {
        "lstm": lstm_jax.LSTMState,
        "gru": lstm_jax.GRUState,
        "rnn_tanh": lstm_jax.RNNState,
    }
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)


def test_flatbuffers_is_a_core_dependency():
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("needs the repository's pyproject.toml")
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert any(d.startswith("flatbuffers") for d in dependencies), dependencies


# -- traced seq_lengths ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, backend, portable",
    [
        ("lstm", "scan", False),
        ("lstm", "fused", False),  # the native CPU loops where they run
        ("lstm", "fused", True),  # the XLA loops
        ("gru", "fused", False),  # the layer derived from the cell
    ],
)
def test_traced_lengths_out_of_range_run_as_documented(kind, backend, portable):
    """A row of length 0 outputs zeros and keeps its initial state; lengths above T act
    as T (README, "Errors")."""
    fn = F.lstm if kind == "lstm" else F.gru
    init = F.init_lstm_params if kind == "lstm" else F.init_gru_params
    params = init(jax.random.key(0), I, H, num_layers=2, bidirectional=True)
    h0 = jax.random.normal(jax.random.key(1), (4, B, H), jnp.float32)
    hx = (h0, 0.5 * h0) if kind == "lstm" else h0
    x = jax.random.normal(jax.random.key(2), (T, B, I), jnp.float32)
    with lstm_jax.portable_kernels() if portable else contextlib.nullcontext():
        run = jax.jit(lambda lengths: fn(params, x, hx, seq_lengths=lengths, backend=backend))
        out, state = run(jnp.array([0, T + 3, 2, T], jnp.int32))
        out_t, state_t = run(jnp.array([1, T, 2, T], jnp.int32))
    assert not np.any(np.asarray(out[:, 0]))
    leaves = zip(*map(jax.tree.leaves, (state, state_t, hx)), strict=True)
    for s, s_t, h in leaves:
        np.testing.assert_array_equal(s[:, 0], h[:, 0])
        np.testing.assert_allclose(s[:, 1:], s_t[:, 1:], rtol=1e-6)
    np.testing.assert_allclose(out[:, 1:], out_t[:, 1:], rtol=1e-6)


def test_checkify_reports_traced_lengths_out_of_range():
    params = F.init_lstm_params(jax.random.key(0), I, H)
    x = jnp.ones((T, B, I), jnp.float32)

    def f(lengths):
        return F.lstm(params, x, seq_lengths=lengths)[0]

    bad, good = jnp.array([0, 2, T + 1, T], jnp.int32), jnp.array([1, 2, 3, T], jnp.int32)
    jitted = jax.jit(f)
    jitted(bad)  # traced outside the context: unchecked, runs (as documented)
    with checking_seq_lengths():
        for checked in (jax.jit(checkify.checkify(f)), checkify.checkify(jitted)):
            error, _ = checked(bad)
            assert error.get() == (
                f"seq_lengths must be in 1..{T} (the time axis), got min 0 and max {T + 1} "
                "(`check` failed)"
            )
            assert checked(good)[0].get() is None
    with pytest.raises(ValueError, match=f"seq_lengths must be in 1..{T}"):
        f(bad)  # concrete values: always checked


def test_outside_the_context_programs_carry_no_check():
    params = F.init_lstm_params(jax.random.key(0), I, H)

    def f(x, lengths):
        return F.lstm(params, x, seq_lengths=lengths)[0]

    specs = (jax.ShapeDtypeStruct((T, B, I), jnp.float32), jax.ShapeDtypeStruct((B,), jnp.int32))
    assert not jax.make_jaxpr(f)(*specs).effects  # keeps jit's fast dispatch
    with lstm_jax.portable_kernels():  # and serialises
        export.deserialize(export.export(jax.jit(f))(*specs).serialize())
    with checking_seq_lengths():
        assert jax.make_jaxpr(f)(*specs).effects


# -- explain_backend ---------------------------------------------------------------------


def _model():
    model = lstm_jax.LSTM(I, H, num_layers=2, dropout=0.25, rngs=nnx.Rngs(0))
    model.train()  # its dropout stream would advance if the call were run
    return model


@pytest.mark.parametrize(
    "wrap, x",
    [
        (lambda f: nnx.jit(f), jnp.ones((T, B, I), jnp.float32)),
        (lambda f: nnx.vmap(f, in_axes=(None, 0)), jnp.ones((2, T, B, I), jnp.float32)),
        (
            lambda f: nnx.jit(nnx.value_and_grad(lambda m, x: jnp.sum(f(m, x)))),
            jnp.ones((T, B, I), jnp.float32),
        ),
    ],
    ids=["nnx.jit", "nnx.vmap", "nnx.value_and_grad"],
)
def test_explain_backend_of_functions_under_nnx_transforms(wrap, x):
    model = _model()
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.RngCount))
    [choice] = lstm_jax.explain_backend(wrap(lambda m, x: m(x)[0]), model, x)
    assert choice.backend == "fused"
    after = nnx.state(model, nnx.RngCount)
    jax.tree.map(np.testing.assert_array_equal, before, after)
    assert model(jnp.ones((T, B, I), jnp.float32))[0].shape == (T, B, H)  # the model still runs


def test_explain_backend_takes_models_by_keyword():
    layer_norm = lstm_jax.LSTM(I, H, layer_norm=True, rngs=nnx.Rngs(0))
    choices = lstm_jax.explain_backend(
        nnx.jit(lambda m, x, other: (m(x)[0], other(x)[0])),
        _model(),
        jnp.ones((T, B, I), jnp.float32),
        other=layer_norm,
    )
    assert [c.backend for c in choices] == ["fused", "fused"]
    assert [c.native_cpu for c in choices][1] is False  # the variant's layer is derived


def test_explain_backend_passes_non_array_keywords_as_they_are():
    params = F.init_lstm_params(jax.random.key(0), I, H)
    x = jnp.ones((T, B, I), jnp.float32)
    lengths = jnp.full((B,), T, jnp.int32)
    [choice] = lstm_jax.explain_backend(
        F.lstm, params, x, seq_lengths=lengths, dtype=jnp.bfloat16, checkpoint=2
    )
    assert choice.backend == "fused" and choice.native_cpu is False  # bfloat16 products
    assert choice.reasons["native_cpu"] == "the native loops run float32 only, got bfloat16"
