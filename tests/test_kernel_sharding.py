"""The kernels under data parallelism: sharded inputs under ``jit`` and ``jax.shard_map``.

Everything runs in one subprocess with 4 forced host CPU devices. The reference for
every value is the same computation on one device with the scan backend.
"""

import textwrap

import pytest
from forced_devices import run_on_devices
from once_per_session import once_per_session

SCRIPT = textwrap.dedent(
    """
    import json, re
    import numpy as np
    import jax, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from flax import nnx
    import lstm_jax
    from lstm_jax import data, functional as F, train

    n = jax.device_count()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows = NamedSharding(mesh, P(None, "data"))  # [T, B, ...] and [L * D, B, H]
    shared = NamedSharding(mesh, P())
    B, T, I, H = 4 * n, 6, 8, 32
    result = {}

    def native_calls(compiled_text):
        # the operand shapes of each native call: its per-device batch
        return [
            (name, re.search(r"f32\\[([0-9,]+)\\]", line).group(1))
            for line in compiled_text.splitlines()
            for name in re.findall(r'custom_call_target="(lstm_jax_native_[a-z_]+)"', line)
        ]

    def close(a, b):
        return max(
            float(np.max(np.abs(np.asarray(u) - np.asarray(v)) / (1e-3 + np.abs(np.asarray(v)))))
            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )

    def norm_close(a, b):
        # the worst leaf's error relative to its norm: near-zero entries do not dominate
        return max(
            float(np.linalg.norm(np.ravel(u) - np.ravel(v)) / (np.linalg.norm(np.ravel(v)) + 1e-30))
            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )

    # -- jit with batch-sharded inputs: each device runs its own rows ---------------------
    params = F.init_lstm_params(jax.random.key(0), I, H, num_layers=2, bidirectional=True)
    x = jax.random.normal(jax.random.key(1), (T, B, I))
    lengths = jnp.asarray(np.arange(B) % T + 1, jnp.int32)

    def loss(p, x, lengths, backend):
        out, (h, c) = F.lstm(p, x, seq_lengths=lengths, backend=backend)
        return jnp.sum(out**2) + jnp.sum(h * c)

    grad = jax.jit(jax.value_and_grad(loss), static_argnums=3)
    forward = jax.jit(lambda p, x, l: F.lstm(p, x, seq_lengths=l)[0])
    ref = grad(params, x, lengths, "scan")
    args = (jax.device_put(params, shared), jax.device_put(x, rows),
            jax.device_put(lengths, NamedSharding(mesh, P("data"))))
    sharded = grad(*args, "fused")
    text = grad.lower(*args, "fused").compile().as_text()
    result["jit"] = {
        "error": close(sharded, ref),
        "calls": native_calls(text),
        "forward_calls": native_calls(forward.lower(*args).compile().as_text()),
        "all_gather": "all-gather" in text,
        "all_reduce": "all-reduce" in text,
        "grad_replicated": sharded[1][0][0].weight_ih.sharding.is_fully_replicated,
    }

    # -- the GRU's and the RNN's native loops, the CIFG peephole LSTM's, and the fused
    # layer derived from a cell (a layer-norm LSTM's): XLA partitions the derived layer's
    # loops -
    layer_norm = lambda *a, **k: F.init_lstm_params(*a, layer_norm=True, **k)
    cifg = lambda *a, **k: F.init_lstm_params(*a, peephole=True, cifg=True, **k)
    for kind, init, fn in (("gru", F.init_gru_params, F.gru), ("rnn", F.init_rnn_params, F.rnn),
                           ("cifg", cifg, F.lstm), ("layer_norm", layer_norm, F.lstm)):
        cell_params = init(jax.random.key(4), I, H, num_layers=2, bidirectional=True)

        def cell_loss(p, x, lengths, backend, fn=fn):
            out, state = fn(p, x, seq_lengths=lengths, backend=backend)
            return jnp.sum(out**2) + sum(jnp.sum(s) for s in jax.tree.leaves(state))

        cell_grad = jax.jit(jax.value_and_grad(cell_loss), static_argnums=3)
        cell_args = (jax.device_put(cell_params, shared), args[1], args[2])
        text = cell_grad.lower(*cell_args, "fused").compile().as_text()
        result[f"{kind}_fused"] = {
            "error": norm_close(cell_grad(*cell_args, "fused"),
                                cell_grad(cell_params, x, lengths, "scan")),
            "all_gather": "all-gather" in text,
            "calls": native_calls(text),
        }

    # -- a mesh of explicit axes (jax.make_mesh's default): shardings in the types -------
    explicit = jax.make_mesh((n,), ("data",))
    with jax.set_mesh(explicit):
        args = (jax.device_put(params, P()), jax.device_put(x, P(None, "data")),
                jax.device_put(lengths, P("data")))
        got = grad(*args, "fused")
        text = grad.lower(*args, "fused").compile().as_text()
        result["explicit"] = {
            "error": max(close(got, ref), close(grad(*args, "scan"), ref)),
            "calls": native_calls(text),
            "all_gather": "all-gather" in text,
        }

    # -- the training step of the library ------------------------------------------------
    task = data.SyntheticTask("adding", batch_size=B, length=T)

    def train_losses(devices):
        mesh = train.make_mesh(devices)
        model = train.SequenceRegressor("lstm", 2, H, rngs=nnx.Rngs(0))
        opt = train.make_optimizer("adam", 1e-2)
        graphdef, state = train.create_train_state(model, opt, None)
        state = train.place_state(state, mesh)
        step = train.make_train_step(graphdef, opt, train.regression_loss, state, mesh)
        losses = []
        for i in range(3):
            batch = train.shard_batch(task.batch(i), mesh)
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
        return losses, native_calls(step.lower(state, batch).compile().as_text())

    one, _ = train_losses(jax.devices()[:1])
    many, calls = train_losses(None)
    result["train_step"] = {"one": one, "many": many, "calls": calls}

    # -- shard_map with its default checks, on every backend -----------------------------
    lstm_params = F.init_lstm_params(jax.random.key(2), I, H)
    h0 = jax.random.normal(jax.random.key(3), (1, B, H))
    cases = {}
    for backend in ("scan", "fused", "auto"):
        for with_hx in (False, True):
            def body(p, x, h, backend=backend, with_hx=with_hx):
                out, (h_n, c_n) = F.lstm(p, x, (h, h) if with_hx else None, backend=backend)
                return out, h_n

            mapped = jax.shard_map(
                body, mesh=mesh, in_specs=(P(), P(None, "data"), P(None, "data")),
                out_specs=(P(None, "data"), P(None, "data")),
            )
            hx = (h0, h0) if with_hx else None
            want = F.lstm(lstm_params, x, hx, backend="scan")
            want = (want[0], want[1][0])
            got = jax.jit(mapped)(jax.device_put(lstm_params, shared), jax.device_put(x, rows),
                                  jax.device_put(h0, rows))
            g = jax.jit(jax.grad(lambda p, x: jnp.sum(mapped(p, x, h0)[0] ** 2)))(lstm_params, x)
            g_ref = jax.grad(
                lambda p, x: jnp.sum(F.lstm(p, x, hx, backend="scan")[0] ** 2))(lstm_params, x)
            cases[f"lstm-{backend}-{'hx' if with_hx else 'zeros'}"] = max(
                close(got, want), close(g, g_ref))
    for backend in ("scan", "fused"):  # activation checkpointing: loops over chunks
        mapped = jax.shard_map(
            lambda p, x, backend=backend: F.lstm(p, x, backend=backend, checkpoint=4)[0],
            mesh=mesh, in_specs=(P(), P(None, "data")), out_specs=P(None, "data"))
        g = jax.jit(jax.grad(lambda p, x: jnp.sum(mapped(p, x) ** 2)))(lstm_params, x)
        g_ref = jax.grad(
            lambda p, x: jnp.sum(F.lstm(p, x, backend="scan")[0] ** 2))(lstm_params, x)
        cases[f"lstm-{backend}-checkpoint"] = close(g, g_ref)
    gru_p = F.init_gru_params(jax.random.key(5), I, H)
    mapped = jax.shard_map(lambda p, x: F.gru(p, x, backend="fused")[0], mesh=mesh,
                           in_specs=(P(), P(None, "data")), out_specs=P(None, "data"))
    g = jax.jit(jax.grad(lambda p, x: jnp.sum(mapped(p, x) ** 2)))(gru_p, x)
    g_ref = jax.grad(lambda p, x: jnp.sum(F.gru(p, x, backend="scan")[0] ** 2))(gru_p, x)
    cases["gru-fused"] = close(g, g_ref)
    for kind, module in (("gru", lstm_jax.GRU), ("rnn", lstm_jax.RNN)):
        model = module(I, H, num_layers=2, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        mapped = jax.shard_map(lambda s, x: nnx.merge(graphdef, s)(x)[0], mesh=mesh,
                               in_specs=(P(), P(None, "data")), out_specs=P(None, "data"))
        cases[f"{kind}-module"] = close(jax.jit(mapped)(state, x), model(x)[0])
    model = lstm_jax.LSTM(I, H, bidirectional=True, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    mapped = jax.shard_map(lambda s, x: nnx.merge(graphdef, s)(x)[0], mesh=mesh,
                           in_specs=(P(), P(None, "data")), out_specs=P(None, "data"))
    cases["lstm-module-bidirectional"] = close(jax.jit(mapped)(state, x), model(x)[0])
    result["shard_map"] = cases
    print("RESULT" + json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The script's results on 4 devices (2 make the mixed meshes of tests/test_meshes.py)."""
    return once_per_session(
        tmp_path_factory, "kernel_sharding", lambda cwd: run_on_devices(SCRIPT, 4, cwd=cwd)
    )


def _native_available() -> bool:
    from lstm_jax._src.native import lstm_cpu

    return lstm_cpu.unavailable_reason() is None


def test_sharded_jit_runs_each_devices_rows(run):
    result = run
    r = result["jit"]
    assert r["error"] < 5e-4, r  # values and all gradients equal one device's scan
    assert not r["all_gather"], "the batch was gathered onto every device"
    assert r["all_reduce"]  # the weight gradients are summed over the devices
    assert r["grad_replicated"]  # weights and their gradients replicated
    if not _native_available():
        pytest.skip("the native CPU loops are unavailable here")
    per_device = 4  # rows: B = 4 * devices
    # two layers, two directions per call: forward calls see x [D, T, B / n, I]
    assert r["forward_calls"] and all(
        shape.split(",")[2] == str(per_device) for _, shape in r["forward_calls"]
    ), r["forward_calls"]
    names = {name for name, _ in r["calls"]}
    assert names == {"lstm_jax_native_forward", "lstm_jax_native_backward"}
    assert all(shape.split(",")[2] == str(per_device) for _, shape in r["calls"]), r["calls"]


@pytest.mark.parametrize("kind", ["gru", "rnn_tanh", "cifg_peephole"])
def test_sharded_jit_of_the_native_gru_rnn_and_lstm_variants_runs_each_devices_rows(run, kind):
    result = run
    r = result[f"{kind.split('_')[0]}_fused"]
    assert r["error"] < 1e-5 and not r["all_gather"], r  # float32: ~1e-7 to 1e-6
    if _native_available():
        names = {name for name, _ in r["calls"]}
        call = "" if kind == "cifg_peephole" else f"{kind}_"  # the variants run the LSTM's
        assert names == {f"lstm_jax_native_{call}forward", f"lstm_jax_native_{call}backward"}
        assert all(shape.split(",")[2] == "4" for _, shape in r["calls"]), r["calls"]


def test_sharded_jit_of_the_fused_layer_derived_from_a_cell(run):
    result = run
    r = result["layer_norm_fused"]
    assert r["error"] < 1e-5 and not r["all_gather"] and not r["calls"], r


def test_explicit_mesh_axes_shard_every_backend(run):
    result = run
    r = result["explicit"]
    assert r["error"] < 5e-4 and not r["all_gather"], r
    if _native_available():
        assert r["calls"] and all(s.split(",")[2] == "4" for _, s in r["calls"]), r["calls"]


def test_train_step_on_many_devices_matches_one(run):
    result = run
    r = result["train_step"]
    for a, b in zip(r["one"], r["many"], strict=True):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), r
    if _native_available():
        # SequenceRegressor's LSTM: x [1, T, B / n, 2] per device
        assert r["calls"] and all(s.split(",")[2] == "4" for _, s in r["calls"]), r["calls"]


def test_shard_map_with_default_checks_on_every_backend(run):
    result = run
    cases = result["shard_map"]
    assert len(cases) == 12
    for name, error in cases.items():
        assert error < 5e-4, (name, error)
