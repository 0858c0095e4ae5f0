"""Every CPU backend on batches placed on meshes as users build them.

``jax.make_mesh`` gives explicit axes by default (shardings in the types; from jax 0.8),
``Mesh`` and ``axis_types=(AxisType.Auto,)`` automatic ones, and a two-axis mesh may mix
them. On each, with and without ``jax.set_mesh`` (and ``jax.sharding.use_mesh`` where this
jax has it), eager and under ``jit``, forward and gradient, the functional ``lstm``/``gru``
and the NNX ``LSTM``/``GRU`` modules give the numbers of one device, and the batch stays
split: no array of the batch's size is all-gathered in the compiled program. Two things
JAX does not do are left out: eager gradients on explicit axes outside ``jax.set_mesh``
(JAX cannot linearize a scan eagerly there), and splitting a custom call outside ``jit``
on automatic axes (the native loops then see the whole batch; the numbers are checked).

Everything runs in one subprocess with 4 forced host devices and prints one ``RESULT``;
each test reads its part. The reference for every value is the same call on one device.
"""

import textwrap

import pytest
from forced_devices import run_on_devices
from once_per_session import once_per_session

SCRIPT = textwrap.dedent(
    """
    import contextlib, json, re, time
    import numpy as np
    import jax, jax.numpy as jnp
    from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
    from flax import nnx
    import lstm_jax
    from lstm_jax import functional as F

    E, A = AxisType.Explicit, AxisType.Auto
    # B = 12 rows, a size no weight has: an all-gather of that size gathers the batch.
    T, B, I, H = 5, 12, 7, 16
    x = jax.random.normal(jax.random.key(1), (T, B, I))
    PARAMS = {
        "lstm": F.init_lstm_params(jax.random.key(0), I, H),
        "gru": F.init_gru_params(jax.random.key(0), I, H),
    }
    MODULES = {"lstm": lstm_jax.LSTM, "gru": lstm_jax.GRU}
    result = {}
    start = time.time()

    def rel(a, b):
        # relative error, norm-wise, of the worst leaf
        return max(
            float(np.linalg.norm(np.ravel(u) - np.ravel(v)) / (np.linalg.norm(np.ravel(v)) + 1e-30))
            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )

    def batch_gathered(text):
        # an all-gather whose result has a dimension of the global batch's size
        for line in text.splitlines():
            found = re.search(r"=(.*?) all-gather(-start)?\\(", line)
            if found and any(str(B) in dims.split(",")
                             for dims in re.findall(r"\\[([0-9,]*)\\]", found.group(1))):
                return True
        return False

    line = Mesh(np.array(jax.devices()), ("data",))
    gather = jax.jit(lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(line, P())))
    gathered = gather.lower(jax.device_put(x, NamedSharding(line, P(None, "data"))))
    result["detects_a_gathered_batch"] = batch_gathered(gathered.compile().as_text())

    def rows_per_shard(out, axis=1):
        return out.sharding.shard_shape(out.shape)[axis]

    from lstm_jax._src.native import lstm_cpu
    NATIVE = lstm_cpu.unavailable_reason() is None

    def split_eagerly(out, mesh, kind, backend):
        # Outside jit JAX runs a custom_partitioning call as it is: on automatic axes the
        # native loops (the LSTM's and the GRU's fused kernel) see the whole batch (README,
        # "Sharded inputs"); under jit, and eagerly on explicit axes, the rows stay split.
        auto = mesh.axis_types[mesh.axis_names.index("data")] == A
        if NATIVE and auto and backend != "scan":
            return None  # not asserted
        return rows_per_shard(out) == B // mesh.shape["data"]

    def loss_fn(kind, backend):
        fn = F.lstm if kind == "lstm" else F.gru

        def loss(p, x):
            out, state = fn(p, x, backend=backend)
            return jnp.sum(out**2) + sum(jnp.sum(s) for s in jax.tree.leaves(state)), out

        return loss

    def contexts():
        yield "none", contextlib.nullcontext
        yield "set_mesh", jax.set_mesh
        if hasattr(jax.sharding, "use_mesh"):  # jax < 0.8
            yield "use_mesh", jax.sharding.use_mesh

    def ctx_of(name):
        return dict(contexts())[name]

    REF = {}
    for kind in PARAMS:
        for backend in ("scan", "fused", "auto"):
            REF[kind, backend] = jax.value_and_grad(loss_fn(kind, backend), has_aux=True)(
                PARAMS[kind], x)

    MESHES = {
        "explicit": jax.make_mesh((4,), ("data",)),
        "auto": jax.make_mesh((4,), ("data",), axis_types=(A,)),
        "Mesh": Mesh(np.array(jax.devices()), ("data",)),
        "mixed-explicit-data": jax.make_mesh((2, 2), ("data", "model"), axis_types=(E, A)),
        "mixed-auto-data": jax.make_mesh((2, 2), ("data", "model"), axis_types=(A, E)),
    }

    def placed(mesh):
        return jax.device_put(x, NamedSharding(mesh, P(None, "data", None)))

    # -- functional, under jit: value and gradient ----------------------------------------
    cases = {}
    for mesh_name, mesh in MESHES.items():
        if mesh_name == "Mesh":  # the axis types of "auto": eager calls below
            continue
        xs = placed(mesh)
        shards = mesh.shape["data"]
        for ctx_name, ctx in contexts():
            if mesh_name.startswith("mixed") and ctx_name != "none":
                continue  # a mesh context is the easy case; one-axis meshes cover it
            for kind in PARAMS:
                backends = ("scan", "fused")
                if mesh_name == "explicit" and ctx_name == "none":
                    backends += ("auto",)
                for backend in backends:
                    f = jax.jit(jax.value_and_grad(loss_fn(kind, backend), has_aux=True))
                    try:
                        with ctx(mesh):
                            compiled = f.lower(PARAMS[kind], xs).compile()
                            got = compiled(PARAMS[kind], xs)
                        cases[f"{mesh_name}/{ctx_name}/{kind}/{backend}"] = {
                            "error": rel(got, REF[kind, backend]),
                            "gathered": batch_gathered(compiled.as_text()),
                            "split": rows_per_shard(got[0][1]) == B // shards,
                        }
                    except Exception as e:
                        cases[f"{mesh_name}/{ctx_name}/{kind}/{backend}"] = repr(e)[:300]
    result["jit"] = cases
    result["seconds_jit"] = time.time() - start

    # -- functional, eager: forward everywhere, gradient (jax.vjp) where JAX runs it ------
    cases = {}
    for mesh_name, mesh in MESHES.items():
        xs = placed(mesh)
        for kind in PARAMS:
            backends = ("scan", "fused") + ("auto",) * (mesh_name == "explicit")
            for backend in backends:
                loss = loss_fn(kind, backend)
                try:
                    (_, out) = loss(PARAMS[kind], xs)
                    cases[f"forward/{mesh_name}/{kind}/{backend}"] = {
                        "error": rel(out, REF[kind, backend][0][1]),
                        "split": split_eagerly(out, mesh, kind, backend),
                    }
                except Exception as e:
                    cases[f"forward/{mesh_name}/{kind}/{backend}"] = repr(e)[:300]
    # Eager gradients on explicit axes need a mesh context: outside one, JAX's own scan
    # cannot be linearized eagerly (README, "Sharded inputs").
    for mesh_name, ctx_name in (("explicit", "set_mesh"), ("mixed-explicit-data", "set_mesh"),
                                ("mixed-auto-data", "set_mesh"), ("auto", "none")):
        mesh = MESHES[mesh_name]
        xs = placed(mesh)
        for kind in PARAMS:
            for backend in ("scan", "fused") if mesh_name == "explicit" else ("fused",):
                try:
                    with ctx_of(ctx_name)(mesh):
                        got = jax.value_and_grad(loss_fn(kind, backend), has_aux=True)(
                            PARAMS[kind], xs)
                    cases[f"grad/{mesh_name}/{ctx_name}/{kind}/{backend}"] = {
                        "error": rel(got, REF[kind, backend]),
                        "split": split_eagerly(got[0][1], mesh, kind, backend),
                    }
                except Exception as e:
                    cases[f"grad/{mesh_name}/{ctx_name}/{kind}/{backend}"] = repr(e)[:300]
    result["eager"] = cases
    result["seconds_eager"] = time.time() - start

    # -- NNX modules: nnx.value_and_grad, under nnx.jit and eager -------------------------
    def module_loss(model, x):
        out, state = model(x)
        return jnp.sum(out**2) + sum(jnp.sum(s) for s in jax.tree.leaves(state)), out

    cases = {}
    for kind, module in MODULES.items():
        for backend in ("auto",):  # the default; the functional cases cover each backend
            ref = nnx.value_and_grad(module_loss, has_aux=True)(
                module(I, H, backend=backend, rngs=nnx.Rngs(0)), x)
            runs = [(m, c, True) for m in ("explicit", "auto", "mixed-explicit-data")
                    for c in ("none", "set_mesh")]
            runs += [("explicit", "set_mesh", False), ("auto", "none", False)]
            for mesh_name, ctx_name, jitted in runs:
                mesh = MESHES[mesh_name]
                # a fresh model: nnx.jit leaves its parameters on the mesh it ran on
                model = module(I, H, backend=backend, rngs=nnx.Rngs(0))
                step = nnx.value_and_grad(module_loss, has_aux=True)
                step = nnx.jit(step) if jitted else step
                name = f"{mesh_name}/{ctx_name}/{'jit' if jitted else 'eager'}/{kind}/{backend}"
                try:
                    with ctx_of(ctx_name)(mesh):
                        got = step(model, placed(mesh))
                    split = rows_per_shard(got[0][1]) == B // mesh.shape["data"]
                    cases[name] = {
                        "error": rel(got, ref),
                        "split": split if jitted else split_eagerly(got[0][1], mesh, kind, backend),
                    }
                except Exception as e:
                    cases[name] = repr(e)[:300]
    result["modules"] = cases
    result["seconds_modules"] = time.time() - start

    # -- two axes: the batch over "data", weights replicated or sharded over "model" ------
    cases = {}
    for types in ((E, E), (A, A)):
        mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=types)
        xs = placed(mesh)
        for kind in PARAMS:
            for weights in ("replicated", "model"):
                def spec(a):
                    return P(*[None] * a.ndim) if weights == "replicated" else P(
                        "model", *[None] * (a.ndim - 1))
                p = jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, spec(a))),
                                 PARAMS[kind])
                for backend in ("scan", "fused"):
                    f = jax.jit(jax.value_and_grad(loss_fn(kind, backend), has_aux=True))
                    name = f"{'explicit' if types[0] == E else 'auto'}/{kind}/{weights}/{backend}"
                    try:
                        compiled = f.lower(p, xs).compile()
                        got = compiled(p, xs)
                        grad = got[1][0][0].weight_hh
                        grad_spec = tuple(grad.sharding.spec) + (None,) * grad.ndim
                        cases[name] = {
                            "error": rel(got, REF[kind, backend]),
                            "gathered": batch_gathered(compiled.as_text()),
                            "split": rows_per_shard(got[0][1]) == B // 2,
                            # with explicit axes, a weight's gradient is sharded like the weight
                            "grad_like_weight": types[0] == A
                            or grad_spec[: grad.ndim] == tuple(spec(grad)),
                        }
                    except Exception as e:
                        cases[name] = repr(e)[:300]
    result["two_axes"] = cases
    result["seconds_two_axes"] = time.time() - start

    # -- a batch the devices do not divide ------------------------------------------------
    cases = {}
    odd = jax.random.normal(jax.random.key(2), (T, 6, I))
    for mesh_name in ("explicit", "auto"):
        try:
            jax.device_put(odd, NamedSharding(MESHES[mesh_name], P(None, "data", None)))
            cases[f"device_put/{mesh_name}"] = "placed"
        except Exception as e:
            cases[f"device_put/{mesh_name}"] = f"{type(e).__name__}: {e}"[:400]
    # inside jit, automatic axes pad the shards: the result must still be exact
    constraint = NamedSharding(MESHES["auto"], P(None, "data", None))
    for kind, backend in (("lstm", "fused"), ("gru", "scan")):
        loss = loss_fn(kind, backend)
        f = jax.jit(jax.value_and_grad(
            lambda p, x, loss=loss: loss(p, jax.lax.with_sharding_constraint(x, constraint)),
            has_aux=True))
        try:
            cases[f"constraint/{kind}/{backend}"] = rel(
                f(PARAMS[kind], odd),
                jax.value_and_grad(loss, has_aux=True)(PARAMS[kind], odd))
        except Exception as e:
            cases[f"constraint/{kind}/{backend}"] = repr(e)[:300]
    result["uneven"] = cases

    # -- shard_map on meshes of both axis types -------------------------------------------
    cases = {}
    for mesh_name in ("explicit", "auto"):
        mesh = MESHES[mesh_name]
        for kind in PARAMS:
            fn = F.lstm if kind == "lstm" else F.gru
            for backend in ("scan", "fused"):
                # rows [T, B, ...] and states [L * D, B, H]: the batch on axis 1
                mapped = jax.shard_map(
                    lambda p, x, fn=fn, backend=backend: fn(p, x, backend=backend),
                    mesh=mesh, in_specs=(P(), P(None, "data")), out_specs=P(None, "data"))

                def loss(p, x, mapped=mapped):
                    out, state = mapped(p, x)
                    return jnp.sum(out**2) + sum(jnp.sum(s) for s in jax.tree.leaves(state)), out

                try:
                    step = jax.jit(jax.value_and_grad(loss, has_aux=True))
                    got = step(PARAMS[kind], placed(mesh))
                    cases[f"{mesh_name}/{kind}/{backend}"] = rel(got, REF[kind, backend])
                except Exception as e:
                    cases[f"{mesh_name}/{kind}/{backend}"] = repr(e)[:300]
    result["shard_map"] = cases

    # -- train.linear_cross_entropy: rows over "data", read-out weights replicated --------
    from lstm_jax import train
    V = 10
    kernel = jax.random.normal(jax.random.key(3), (I, V))
    bias = jax.random.normal(jax.random.key(4), (V,))
    labels = jax.random.randint(jax.random.key(5), (T, B), 0, V)

    def xent(kernel, bias, x, labels):
        losses, _ = train.linear_cross_entropy(x, kernel, bias, labels)
        return jnp.mean(losses), losses

    xent_grad = jax.value_and_grad(xent, argnums=(0, 1, 2), has_aux=True)
    ref = xent_grad(kernel, bias, x, labels)
    cases = {}
    for mesh_name in ("explicit", "auto"):
        mesh = MESHES[mesh_name]
        rows = NamedSharding(mesh, P(None, "data"))
        for ctx_name, ctx in contexts():
            try:
                with ctx(mesh):
                    args = (kernel, bias, placed(mesh), jax.device_put(labels, rows))
                    compiled = jax.jit(xent_grad).lower(*args).compile()
                    got = compiled(*args)
                text = compiled.as_text()
                cases[f"jit/{mesh_name}/{ctx_name}"] = {
                    "error": rel(got, ref),
                    "gathered": batch_gathered(text),
                    # each device computes the logits of its own rows only (on automatic
                    # axes the rows are reshaped to one axis and may be split along it)
                    "split": not any(f"[{shape}]" in text for shape in
                                     (f"{T},{B},{V}", f"{T * B},{V}", f"{B},{V}")),
                }
            except Exception as e:
                cases[f"jit/{mesh_name}/{ctx_name}"] = repr(e)[:300]
        mapped = jax.shard_map(lambda k, b, x, y: train.linear_cross_entropy(x, k, b, y)[0],
                               mesh=mesh, in_specs=(P(), P(), P(None, "data"), P(None, "data")),
                               out_specs=P(None, "data"))
        try:
            step = jax.jit(jax.value_and_grad(lambda *a: jnp.mean(mapped(*a)), argnums=(0, 1, 2)))
            got = step(kernel, bias, placed(mesh), jax.device_put(labels, rows))
            cases[f"shard_map/{mesh_name}"] = rel(got, (ref[0][0], ref[1]))
        except Exception as e:
            cases[f"shard_map/{mesh_name}"] = repr(e)[:300]
    result["linear_cross_entropy"] = cases
    result["seconds"] = time.time() - start
    print("RESULT" + json.dumps(result))
    """
)

TOLERANCE = 1e-5  # relative to the norm of each value and gradient


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return once_per_session(
        tmp_path_factory, "meshes", lambda cwd: run_on_devices(SCRIPT, 4, cwd=cwd)
    )


def _check(cases, expected_count):
    assert len(cases) == expected_count, sorted(cases)
    failed = {name: case for name, case in cases.items() if isinstance(case, str)}
    assert not failed, failed
    for name, case in cases.items():
        if isinstance(case, float):
            assert case <= TOLERANCE, (name, case)
            continue
        assert case["error"] <= TOLERANCE, (name, case)
        assert case["split"] is not False, (name, "the output's rows are not split")
        assert not case.get("gathered", False), (name, "the batch is all-gathered")


def test_jit_on_every_kind_of_mesh_with_and_without_a_mesh_context(result):
    assert result["detects_a_gathered_batch"]  # the check below would see a gathered batch
    # one-axis meshes with every context, mixed ones without; 2 cells x 2 backends, and
    # "auto" on the explicit mesh
    contexts = 2 + any("/use_mesh/" in name for name in result["jit"])
    _check(result["jit"], (2 * contexts + 2) * 2 * 2 + 2)


def test_eager_forward_everywhere_and_gradients(result):
    _check(result["eager"], 5 * 2 * 2 + 2 + 2 * 2 + 3 * 2)


def test_nnx_modules_value_and_grad(result):
    _check(result["modules"], 2 * 8)


def test_two_axis_mesh_with_replicated_or_model_sharded_weights(result):
    cases = result["two_axes"]
    _check(cases, 2 * 2 * 2 * 2)
    assert all(case["grad_like_weight"] for case in cases.values()), cases


def test_a_batch_the_devices_do_not_divide(result):
    cases = result["uneven"]
    for mesh in ("explicit", "auto"):  # refused by jax.device_put, naming both numbers
        message = cases[f"device_put/{mesh}"]
        assert message.startswith("ValueError") or "Indivisible" in message, message
        assert "6" in message and "4" in message, message
    _check({k: v for k, v in cases.items() if k.startswith("constraint/")}, 2)


def test_shard_map_on_explicit_and_automatic_axes(result):
    _check(result["shard_map"], 2 * 2 * 2)


def test_linear_cross_entropy_splits_rows_under_jit_and_shard_map(result):
    contexts = 2 + any("/use_mesh/" in name for name in result["jit"])
    _check(result["linear_cross_entropy"], 2 * contexts + 2)
