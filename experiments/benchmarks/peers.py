"""The implementations under test, each as jitted (or eager torch) forward and
forward+backward callables over one shape. Only the public API of lstm_jax is used.

Every implementation computes ``loss = sum(outputs)`` and, for forward+backward, the
gradients with respect to all parameters and the input ``x``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmark configuration: time-major ``[time, batch, input_size]``."""

    time: int
    batch: int
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False

    @property
    def name(self) -> str:
        extra = f" L{self.num_layers}" + (" bi" if self.bidirectional else "")
        return f"T{self.time} B{self.batch} I{self.input_size} H{self.hidden_size}" + (
            extra if self.num_layers > 1 or self.bidirectional else ""
        )

    @property
    def tokens(self) -> int:
        return self.time * self.batch


@dataclasses.dataclass
class Runner:
    """One implementation on one shape: a callable per mode, compile time and memory."""

    name: str
    calls: dict[str, Callable[[], Any]]  # mode -> call that blocks until done
    compile_s: dict[str, float]
    memory_bytes: dict[str, int | None]
    memory_kind: str


def _block(tree):
    return jax.block_until_ready(tree)


def _jax_runner(name, loss, args, diff_args: int = 2) -> Runner:
    """Compiles ``loss(*args)`` (forward) and its gradient with respect to the first
    ``diff_args`` arguments (forward+backward) ahead of time."""
    fns = {"fwd": loss, "fwd+bwd": jax.grad(loss, argnums=tuple(range(diff_args)))}
    calls, compile_s, memory = {}, {}, {}
    for mode, fn in fns.items():
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(*args).compile()
        compile_s[mode] = time.perf_counter() - start
        analysis = compiled.memory_analysis()
        memory[mode] = (
            None
            if analysis is None
            else int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)
        )
        calls[mode] = lambda compiled=compiled: _block(compiled(*args))
    return Runner(name, calls, compile_s, memory, "XLA temp + output buffers")


def _inputs(shape: Shape, dtype=jnp.float32):
    x = jax.random.normal(jax.random.key(1), (shape.time, shape.batch, shape.input_size), dtype)
    return x


def lstm_jax_runner(
    shape: Shape,
    backend: str,
    *,
    dtype=jnp.float32,
    unroll: int = 1,
    checkpoint: int | None = None,
    label: str | None = None,
) -> Runner:
    from lstm_jax import functional as F

    params = F.init_lstm_params(
        jax.random.key(0),
        shape.input_size,
        shape.hidden_size,
        shape.num_layers,
        bidirectional=shape.bidirectional,
        dtype=dtype,
    )
    x = _inputs(shape, dtype)

    def loss(params, x):
        y, _ = F.lstm(params, x, backend=backend, unroll=unroll, checkpoint=checkpoint)
        return jnp.sum(y.astype(jnp.float32))

    return _jax_runner(label or f"lstm_jax[{backend}]", loss, (params, x))


def flax_runner(shape: Shape) -> Runner:
    """Flax NNX ``nn.RNN(OptimizedLSTMCell)``, layers chained, ``nn.Bidirectional`` if asked."""
    from flax import nnx

    rngs = nnx.Rngs(0)
    layers = []
    in_features = shape.input_size
    for _ in range(shape.num_layers):

        def rnn(in_features=in_features):
            cell = nnx.OptimizedLSTMCell(in_features, shape.hidden_size, rngs=rngs)
            return nnx.RNN(cell, time_major=True)

        layers.append(
            nnx.Bidirectional(rnn(), rnn(), time_major=True) if shape.bidirectional else rnn()
        )
        in_features = shape.hidden_size * (2 if shape.bidirectional else 1)
    model = nnx.List(layers) if hasattr(nnx, "List") else layers
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = _inputs(shape)

    zeros = jnp.zeros((shape.batch, shape.hidden_size), jnp.float32)
    carry = ((zeros, zeros), (zeros, zeros)) if shape.bidirectional else (zeros, zeros)

    def loss(params, x, rest):
        for layer in nnx.merge(graphdef, params, rest):
            x = layer(x, initial_carry=carry)
        return jnp.sum(x)

    return _jax_runner("flax.nnx.RNN(OptimizedLSTMCell)", loss, (params, x, rest))


def experimental_rnn_runner(shape: Shape) -> Runner:
    """``jax.experimental.rnn.lstm`` (cuDNN), GPU only."""
    from jax.experimental import rnn

    directions = 2 if shape.bidirectional else 1
    weights = rnn.init_lstm_weight(
        jax.random.key(0),
        shape.input_size,
        shape.hidden_size,
        shape.num_layers,
        shape.bidirectional,
    )
    x = jnp.swapaxes(_inputs(shape), 0, 1)
    zeros = jnp.zeros((shape.num_layers * directions, shape.batch, shape.hidden_size), jnp.float32)
    lengths = jnp.full((shape.batch,), shape.time, jnp.int32)

    def loss(weights, x):
        y, _, _ = rnn.lstm(
            x,
            zeros,
            zeros,
            weights,
            lengths,
            shape.input_size,
            shape.hidden_size,
            shape.num_layers,
            0.0,
            shape.bidirectional,
        )
        return jnp.sum(y)

    return _jax_runner("jax.experimental.rnn (cuDNN)", loss, (weights, x))


def torch_runner(shape: Shape, device: str) -> Runner:
    """``torch.nn.LSTM`` (oneDNN on CPU, cuDNN on GPU), eager."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.LSTM(
        shape.input_size, shape.hidden_size, shape.num_layers, bidirectional=shape.bidirectional
    ).to(device)
    x = torch.randn(shape.time, shape.batch, shape.input_size, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def fwd():
        with torch.no_grad():
            y, _ = model(x)
            y.sum().item()
        sync()

    def fwd_bwd():
        xg = x.detach().requires_grad_(True)
        model.zero_grad(set_to_none=True)
        y, _ = model(xg)
        y.sum().backward()
        sync()

    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        xg = x.detach().requires_grad_(True)
        y, _ = model(xg)
    memory = {"fwd": None, "fwd+bwd": int(sum(saved) + y.numel() * y.element_size())}
    kind = "tensors saved for backward + output"
    if device == "cuda":
        memory = {}
        for mode, call in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            call()
            memory[mode] = int(torch.cuda.max_memory_allocated() - base)
        kind = "CUDA peak allocated above baseline"
    name = "torch.nn.LSTM (" + ("cuDNN" if device == "cuda" else "oneDNN/CPU") + ")"
    return Runner(
        name, {"fwd": fwd, "fwd+bwd": fwd_bwd}, {"fwd": 0.0, "fwd+bwd": 0.0}, memory, kind
    )
