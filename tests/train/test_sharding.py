"""Data parallelism on 4 CPU devices (a subprocess with a forced device count)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

from flax import nnx

from lstm_jax import data, train

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import jax
    from flax import nnx
    from lstm_jax import data, train

    assert jax.device_count() == 4
    task = data.SyntheticTask("adding", batch_size=8, length=6)
    lm = data.LMStream(data.batchify(np.arange(400, dtype=np.int32) % 7, 8), seq_len=5)
    rng = np.random.default_rng(0)  # sequences of 3-9 steps, a [2]-target each
    seqs = [rng.standard_normal((n, 2)).astype(np.float32) for n in rng.integers(3, 10, 16)]
    arrays = data.ArrayBatches(seqs, rng.standard_normal((16, 2)), batch_size=8, seed=1)

    def losses(devices, kind):
        mesh = train.make_mesh(devices)
        if kind == "regression":
            model = train.SequenceRegressor("rnn", 2, 8, rngs=nnx.Rngs(0))
            loss_fn, batches, carry = train.regression_loss, task.batch, None
        elif kind == "arrays":
            model = train.SequenceRegressor("lstm", 2, 8, out_size=2, pooling="mean",
                                            rngs=nnx.Rngs(0))
            loss_fn, batches, carry = train.regression_loss, arrays, None
        else:
            model = train.TokenModel("gru", 7, 4, 8, rngs=nnx.Rngs(0))
            loss_fn, batches, carry = train.token_loss, lm.batch, model.zero_carry(8)
        opt = train.make_optimizer("adam", 1e-2)
        graphdef, state = train.create_train_state(model, opt, carry)
        state = train.place_state(state, mesh)
        step = train.make_train_step(graphdef, opt, loss_fn, state, mesh)
        out = []
        for i in range(3):
            batch = train.shard_batch(batches(i), mesh)
            state, m = step(state, batch)
            out.append(float(m["loss"]))
        leaf = jax.tree.leaves(state.params)[0]
        info = {
            "shards": [list(s.data.shape) for s in batch["inputs"].addressable_shards],
            "shard_devices": len({s.device for s in batch["inputs"].addressable_shards}),
            "target_shards": [list(s.data.shape) for s in batch["targets"].addressable_shards],
            "params_replicated": leaf.sharding.is_fully_replicated,
            "carry_shards": None if state.carry is None else
                [list(s.data.shape) for s in jax.tree.leaves(state.carry)[0].addressable_shards],
        }
        return out, info

    result = {}
    for kind in ("regression", "lm", "arrays"):
        one, _ = losses(jax.devices()[:1], kind)
        four, info = losses(None, kind)
        result[kind] = {"one": one, "four": four, **info}
    try:
        train.fit(train.SequenceRegressor("rnn", 2, 4, rngs=nnx.Rngs(0)), train.regression_loss,
                  train.make_optimizer(), data.SyntheticTask("adding", 6, 4).batch, steps=1,
                  run_dir="unused", progress=False)
        result["error"] = None
    except ValueError as e:
        result["error"] = str(e)
    print("RESULT" + json.dumps(result))
    """
)


def test_four_devices_match_one_and_split_the_batch(tmp_path):
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    result = json.loads(line[len("RESULT") :])
    reg, lm, arrays = result["regression"], result["lm"], result["arrays"]
    for r in (reg, lm, arrays):
        assert len(r["one"]) == 3
        for a, b in zip(r["one"], r["four"], strict=True):
            assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (r["one"], r["four"])
        assert r["shard_devices"] == 4 and r["params_replicated"]
    assert reg["shards"] == [[6, 2, 2]] * 4  # [T, B / 4, 2] on each device
    assert lm["shards"] == [[5, 2]] * 4
    assert lm["carry_shards"] == [[1, 2, 8]] * 4  # TBPTT state split on the batch too
    # data.ArrayBatches: time-major inputs split on axis 1, [B, 2] targets on axis 0
    assert [s[1] for s in arrays["shards"]] == [2] * 4 and arrays["target_shards"] == [[2, 2]] * 4
    assert "not divisible by the 4 devices" in result["error"]


MULTIHOST = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from flax import nnx
    from lstm_jax import data, train

    distributed = train.initialize_distributed("auto")
    task = data.SyntheticTask("adding", batch_size=8, length=6)
    model = train.SequenceRegressor("lstm", 2, 32, rngs=nnx.Rngs(0))
    result = train.fit(model, train.regression_loss, train.make_optimizer("adam", 1e-2),
                       task.batch, steps=4, log_every=2, checkpoint_every=2,
                       run_dir=sys.argv[1], progress=False)
    print("RESULT" + json.dumps({"distributed": distributed, "processes": jax.process_count(),
                                 "devices": jax.device_count(),
                                 "loss": result.summary["final"]["train/loss"]}))
    """
)


def test_two_processes_with_jax_distributed(tmp_path):
    """Two "hosts" of two CPU devices each, started by jax.distributed: same loss as one.

    The LSTM runs the fused kernel's native loops, partitioned over the four devices."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    base = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    hosts = [
        subprocess.Popen(
            [sys.executable, "-c", MULTIHOST, str(tmp_path / "multi")],
            env=dict(
                base,
                JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(i),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [h.communicate(timeout=300) for h in hosts]
    results = []
    for proc, (out, err) in zip(hosts, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        line = next(x for x in out.splitlines() if x.startswith("RESULT"))
        results.append(json.loads(line[len("RESULT") :]))
    for r in results:
        assert r["distributed"] and r["processes"] == 2 and r["devices"] == 4
    assert results[0]["loss"] == results[1]["loss"]
    # The same run on this process's single device.
    task = data.SyntheticTask("adding", batch_size=8, length=6)
    model = train.SequenceRegressor("lstm", 2, 32, rngs=nnx.Rngs(0))
    reference = train.fit(
        model,
        train.regression_loss,
        train.make_optimizer("adam", 1e-2),
        task.batch,
        steps=4,
        log_every=2,
        checkpoint_every=2,
        run_dir=tmp_path / "single",
        progress=False,
    )
    assert abs(results[0]["loss"] - reference.summary["final"]["train/loss"]) < 1e-5
    assert (tmp_path / "multi" / "checkpoints" / "4" / "integrity.json").exists()
