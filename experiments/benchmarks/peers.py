"""The implementations under test: each builds, for one shape, a blocking callable per
mode. Only the public API of lstm_jax is used.

Modes: ``fwd`` (loss = sum of the outputs, no gradient), ``fwd+bwd`` (the gradients of
that loss with respect to all parameters and the input), ``step`` (``shape.time`` calls
of a jitted single-step cell in a Python loop, the state fed back, as when sampling).

Each builder imports only its own library, so a worker process for torch never loads
XLA and one for JAX never loads torch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

VARIANTS = ("peephole", "layer_norm", "cifg", "proj")


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmark configuration; inputs are time-major ``[time, batch, input_size]``.

    ``packed``: ``seq_lengths`` uniform in ``[time // 2, time]`` (fixed seed).
    ``variant``: an LSTM variant of :data:`VARIANTS` (``proj``: ``proj_size = hidden // 2``).
    ``checkpoint``: lstm_jax's activation checkpointing every that many steps.
    """

    time: int
    batch: int
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    cell: str = "lstm"  # lstm | gru | rnn (tanh)
    dtype: str = "float32"  # or bfloat16
    packed: bool = False
    variant: str = ""
    checkpoint: int | None = None

    @property
    def name(self) -> str:
        parts = [f"T{self.time} B{self.batch} I{self.input_size} H{self.hidden_size}"]
        if self.num_layers > 1 or self.bidirectional:
            parts.append(f"L{self.num_layers}" + (" bi" if self.bidirectional else ""))
        parts += [self.cell] if self.cell != "lstm" else []
        parts += [self.dtype] if self.dtype != "float32" else []
        parts += ["packed"] if self.packed else []
        parts += [self.variant] if self.variant else []
        parts += [f"checkpoint={self.checkpoint}"] if self.checkpoint else []
        return " ".join(parts)

    @property
    def proj_size(self) -> int:
        return self.hidden_size // 2 if self.variant == "proj" else 0

    @property
    def seq_lengths(self) -> np.ndarray | None:
        """``[batch]`` int32 or ``None``."""
        if not self.packed:
            return None
        rng = np.random.RandomState(0)
        return rng.randint(self.time // 2, self.time + 1, self.batch).astype(np.int32)

    @property
    def tokens(self) -> int:
        """Valid (unpadded) time steps times batch rows per call."""
        lengths = self.seq_lengths
        return int(lengths.sum()) if lengths is not None else self.time * self.batch


@dataclasses.dataclass
class Runner:
    """One implementation on one shape: a blocking callable per mode and what it costs."""

    calls: dict[str, Callable[[], Any]]
    compile_s: dict[str, float]
    memory_bytes: dict[str, int | None]
    memory_kind: str = ""
    kernel: str = ""  # what lstm_jax's backend="auto" resolved to


# ----------------------------------------------------------------------------- JAX


def _jax_runner(loss, args, modes, diff_args: int = 2) -> Runner:
    """Compiles ``loss(*args)`` (fwd) and its gradient in the first ``diff_args``
    arguments (fwd+bwd) ahead of time; records compile time and XLA's buffer sizes."""
    import jax

    fns = {"fwd": loss, "fwd+bwd": jax.grad(loss, argnums=tuple(range(diff_args)))}
    runner = Runner({}, {}, {}, "XLA temp + output buffers")
    for mode in [m for m in modes if m in fns]:
        start = time.perf_counter()
        compiled = jax.jit(fns[mode]).lower(*args).compile()
        runner.compile_s[mode] = time.perf_counter() - start
        analysis = compiled.memory_analysis()
        runner.memory_bytes[mode] = (
            None
            if analysis is None
            else int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)
        )
        runner.calls[mode] = lambda c=compiled: jax.block_until_ready(c(*args))
    return runner


def _jax_step_runner(step, state, hx, xs) -> Callable[[], Any]:
    """``hx = step(state, x_t, hx)`` over the steps ``xs`` (a list), blocking at the end."""
    import jax

    def call():
        h = hx
        for x in xs:
            h = step(state, x, h)
        return jax.block_until_ready(h)

    return call


def _inputs(shape: Shape):
    """``[time, batch, input_size]`` float32 and ``seq_lengths`` ``[batch]`` or ``None``.

    Drawn with NumPy: an eager ``jax.random.normal`` compiles for seconds per shape.
    """
    import jax.numpy as jnp

    rng = np.random.RandomState(1)
    x = jnp.asarray(rng.standard_normal((shape.time, shape.batch, shape.input_size)), jnp.float32)
    lengths = shape.seq_lengths
    return x, None if lengths is None else jnp.asarray(lengths)


def lstm_jax_runner(shape: Shape, modes, backend: str = "auto") -> Runner:
    """``lstm_jax.functional.lstm / gru / rnn`` (fwd, fwd+bwd) and ``lstm_jax.LSTMCell /
    GRUCell / RNNCell`` (step)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import lstm_jax
    from lstm_jax import functional as F

    key = jax.random.key(0)
    common = dict(num_layers=shape.num_layers, bidirectional=shape.bidirectional)
    if shape.cell == "lstm":
        flags = {v: shape.variant == v for v in VARIANTS[:3]}
        params = F.init_lstm_params(
            key, shape.input_size, shape.hidden_size, proj_size=shape.proj_size, **flags, **common
        )
        apply = F.lstm
    elif shape.cell == "gru":
        params, apply = F.init_gru_params(key, shape.input_size, shape.hidden_size, **common), F.gru
    else:
        params = F.init_rnn_params(key, shape.input_size, shape.hidden_size, **common)
        apply = F.rnn
    x, lengths = _inputs(shape)
    options = dict(seq_lengths=lengths, checkpoint=shape.checkpoint)
    if shape.dtype != "float32":  # products in bfloat16, parameters and state float32
        options["dtype"] = jnp.dtype(shape.dtype)
    if backend != "auto":  # older releases take no backend= for the GRU and the RNN
        options["backend"] = backend

    def loss(params, x):
        return jnp.sum(apply(params, x, **options)[0].astype(jnp.float32))

    runner = _jax_runner(loss, (params, x), modes)
    try:
        if runner.calls:  # a step runs the cell, not a kernel over time
            [choice] = lstm_jax.explain_backend(apply, params, x, **options)
            runner.kernel = choice.backend + (" (native)" if choice.native_cpu else "")
    except Exception as e:  # the report is informative only
        runner.kernel = f"? ({type(e).__name__})"
    if "step" in modes:
        cls = {"lstm": lstm_jax.LSTMCell, "gru": lstm_jax.GRUCell, "rnn": lstm_jax.RNNCell}
        cell = cls[shape.cell](shape.input_size, shape.hidden_size, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(cell)
        step = jax.jit(lambda state, x, hx: nnx.merge(graphdef, state)(x, hx))
        zeros = jnp.zeros((shape.batch, shape.hidden_size), x.dtype)
        hx = F.LSTMState(zeros, zeros) if shape.cell == "lstm" else zeros
        runner.calls["step"] = _jax_step_runner(step, state, hx, list(x))
    return runner


def lstm_jax_functional_cell(shape: Shape, modes) -> Runner:
    """``jax.jit(lstm_jax.functional.lstm_cell)`` (step only)."""
    import jax
    import jax.numpy as jnp

    from lstm_jax import functional as F

    params = F.init_lstm_layer(jax.random.key(0), shape.input_size, shape.hidden_size)
    x, _ = _inputs(shape)
    zeros = jnp.zeros((shape.batch, shape.hidden_size), x.dtype)
    call = _jax_step_runner(jax.jit(F.lstm_cell), params, F.LSTMState(zeros, zeros), list(x))
    return Runner({"step": call} if "step" in modes else {}, {}, {})


def flax_nnx(shape: Shape, modes) -> Runner:
    """Flax NNX ``nnx.RNN`` of ``OptimizedLSTMCell`` / ``GRUCell`` / ``SimpleCell``, layers
    chained, ``nnx.Bidirectional`` if asked; the cell jitted alone for ``step``."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    cls = {"lstm": nnx.OptimizedLSTMCell, "gru": nnx.GRUCell, "rnn": nnx.SimpleCell}[shape.cell]
    if shape.variant:
        raise NotImplementedError(f"Flax has no {shape.variant} LSTM")
    rngs = nnx.Rngs(0)
    dtype = dict(dtype=jnp.dtype(shape.dtype)) if shape.dtype != "float32" else {}

    def rnn(in_features):
        return nnx.RNN(cls(in_features, shape.hidden_size, rngs=rngs, **dtype), time_major=True)

    layers, in_features = [], shape.input_size
    for _ in range(shape.num_layers):
        layers.append(
            nnx.Bidirectional(rnn(in_features), rnn(in_features), time_major=True)
            if shape.bidirectional
            else rnn(in_features)
        )
        in_features = shape.hidden_size * (2 if shape.bidirectional else 1)
    model = nnx.List(layers)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x, lengths = _inputs(shape)
    zeros = jnp.zeros((shape.batch, shape.hidden_size), x.dtype)
    carry = (zeros, zeros) if shape.cell == "lstm" else zeros
    carry = (carry, carry) if shape.bidirectional else carry

    def loss(params, x, rest):
        for layer in nnx.merge(graphdef, params, rest):
            x = layer(x, initial_carry=carry, seq_lengths=lengths)
        return jnp.sum(x.astype(jnp.float32))

    runner = _jax_runner(loss, (params, x, rest), modes)
    if "step" in modes:
        cell_graph, cell_state = nnx.split(cls(shape.input_size, shape.hidden_size, rngs=rngs))
        step = jax.jit(lambda s, x, c: nnx.merge(cell_graph, s)(c, x)[0])
        hx = (zeros, zeros) if shape.cell == "lstm" else zeros
        runner.calls["step"] = _jax_step_runner(step, cell_state, hx, list(x))
    return runner


def experimental_rnn(shape: Shape, modes) -> Runner:
    """``jax.experimental.rnn.lstm`` (cuDNN), GPU only."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import rnn

    if shape.cell != "lstm" or shape.variant or shape.dtype != "float32":
        raise NotImplementedError("jax.experimental.rnn runs the plain float32 LSTM only")
    directions = 2 if shape.bidirectional else 1
    weights = rnn.init_lstm_weight(
        jax.random.key(0),
        shape.input_size,
        shape.hidden_size,
        shape.num_layers,
        shape.bidirectional,
    )
    x, lengths = _inputs(shape)
    x = jnp.swapaxes(x, 0, 1)
    zeros = jnp.zeros((shape.num_layers * directions, shape.batch, shape.hidden_size), x.dtype)
    lengths = jnp.full((shape.batch,), shape.time, jnp.int32) if lengths is None else lengths
    dims = (shape.input_size, shape.hidden_size, shape.num_layers, 0.0, shape.bidirectional)

    def loss(weights, x):
        return jnp.sum(rnn.lstm(x, zeros, zeros, weights, lengths, *dims)[0])

    return _jax_runner(loss, (weights, x), modes)


# ------------------------------------------- plain lax.scan references of the variants
# What a user would write from each variant's equations (lstm_jax.functional.lstm_step
# documents them), on lstm_jax's parameters: per step ``x_t @ W_ih.T + h @ W_hh.T``,
# or, ``hoisted``, the input product of all steps taken once before the loop.


def _layer_norm(y, gain, shift):
    import jax

    mean = y.mean(-1, keepdims=True)
    return (y - mean) * jax.lax.rsqrt(y.var(-1, keepdims=True) + 1e-5) * gain + shift


def _scan(step, x, h0, c0, input_part, hoisted):
    """Runs ``step((h, c), gates_x) -> (h, c)`` over ``x`` ``[time, batch, input_size]``,
    ``gates_x = input_part(x_t)``; returns ``h`` of every step ``[time, batch, H_out]``."""
    import jax

    def body(carry, x_t):
        carry = step(carry, x_t if hoisted else input_part(x_t))
        return carry, carry[0]

    return jax.lax.scan(body, (h0, c0), input_part(x) if hoisted else x)[1]


def peephole_lstm(p, x, hoisted=False):
    """Peephole LSTM (Gers & Schmidhuber 2000). ``x`` ``[T, B, I]`` -> ``[T, B, H]``."""
    import jax
    import jax.numpy as jnp

    def step(carry, gx):
        h, c = carry
        i, f, g, o = jnp.split(gx + h @ p.weight_hh.T, 4, axis=-1)
        i = jax.nn.sigmoid(i + p.weight_ci * c)
        f = jax.nn.sigmoid(f + p.weight_cf * c)
        c = f * c + i * jnp.tanh(g)
        h = jax.nn.sigmoid(o + p.weight_co * c) * jnp.tanh(c)
        return h, c

    h0 = jnp.zeros((x.shape[1], p.weight_hh.shape[1]), x.dtype)
    return _scan(step, x, h0, h0, lambda x: x @ p.weight_ih.T + p.bias_ih + p.bias_hh, hoisted)


def layer_norm_lstm(p, x, hoisted=False):
    """Layer-normalised LSTM (Ba, Kiros & Hinton 2016): ``LN(W_ih x) + LN(W_hh h) + b``,
    ``h = o * tanh(LN(c))``. ``x`` ``[T, B, I]`` -> ``[T, B, H]``."""
    import jax
    import jax.numpy as jnp

    def step(carry, gx):
        h, c = carry
        z = gx + _layer_norm(h @ p.weight_hh.T, p.ln_hh_weight, p.ln_hh_bias)
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(_layer_norm(c, p.ln_c_weight, p.ln_c_bias))
        return h, c

    def input_part(x):
        return _layer_norm(x @ p.weight_ih.T, p.ln_ih_weight, p.ln_ih_bias) + p.bias_ih + p.bias_hh

    h0 = jnp.zeros((x.shape[1], p.weight_hh.shape[1]), x.dtype)
    return _scan(step, x, h0, h0, input_part, hoisted)


def cifg_lstm(p, x, hoisted=False):
    """Coupled input-forget gate (Greff et al. 2017): gates f, g, o and ``i = 1 - f``.
    ``x`` ``[T, B, I]`` -> ``[T, B, H]``."""
    import jax
    import jax.numpy as jnp

    def step(carry, gx):
        h, c = carry
        f, g, o = jnp.split(gx + h @ p.weight_hh.T, 3, axis=-1)
        f = jax.nn.sigmoid(f)
        c = f * c + (1 - f) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c), c

    h0 = jnp.zeros((x.shape[1], p.weight_hh.shape[1]), x.dtype)
    return _scan(step, x, h0, h0, lambda x: x @ p.weight_ih.T + p.bias_ih + p.bias_hh, hoisted)


def proj_lstm(p, x, hoisted=False):
    """LSTM with a projection (Sak et al. 2014, torch's ``proj_size``): ``h = W_hr (o *
    tanh(c))``. ``x`` ``[T, B, I]`` -> ``[T, B, proj_size]``."""
    import jax
    import jax.numpy as jnp

    def step(carry, gx):
        h, c = carry
        i, f, g, o = jnp.split(gx + h @ p.weight_hh.T, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return (jax.nn.sigmoid(o) * jnp.tanh(c)) @ p.weight_hr.T, c

    batch, (proj, hidden) = x.shape[1], p.weight_hr.shape
    h0, c0 = jnp.zeros((batch, proj), x.dtype), jnp.zeros((batch, hidden), x.dtype)
    return _scan(step, x, h0, c0, lambda x: x @ p.weight_ih.T + p.bias_ih + p.bias_hh, hoisted)


REFERENCES = {
    "peephole": peephole_lstm,
    "layer_norm": layer_norm_lstm,
    "cifg": cifg_lstm,
    "proj": proj_lstm,
}


def scan_reference(shape: Shape, modes, hoisted: bool) -> Runner:
    """The variant's :data:`REFERENCES` function under ``jit``, one layer, one direction."""
    import jax
    import jax.numpy as jnp

    from lstm_jax import functional as F

    if shape.num_layers != 1 or shape.bidirectional or shape.packed or shape.cell != "lstm":
        raise NotImplementedError("the references run one unidirectional LSTM layer")
    flags = {v: shape.variant == v for v in VARIANTS[:3]}
    params = F.init_lstm_layer(
        jax.random.key(0), shape.input_size, shape.hidden_size, proj_size=shape.proj_size, **flags
    )
    x, _ = _inputs(shape)
    fn = REFERENCES[shape.variant]
    return _jax_runner(lambda p, x: jnp.sum(fn(p, x, hoisted)), (params, x), modes)


# ----------------------------------------------------------------------------- torch


def torch_nn(shape: Shape, modes) -> Runner:
    """``torch.nn.LSTM / GRU / RNN`` (oneDNN on CPU, cuDNN on GPU), eager; packed input
    through ``pack_padded_sequence``; ``nn.LSTMCell / GRUCell / RNNCell`` for ``step``."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    if shape.variant not in ("", "proj") or shape.checkpoint:
        raise NotImplementedError(f"torch has no {shape.variant or 'checkpointed'} LSTM")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, shape.dtype)
    torch.manual_seed(0)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[shape.cell]
    extra = dict(proj_size=shape.proj_size) if shape.proj_size else {}
    model = cls(
        shape.input_size, shape.hidden_size, shape.num_layers,
        bidirectional=shape.bidirectional, **extra,
    ).to(device, dtype)  # fmt: skip
    x = torch.randn(shape.time, shape.batch, shape.input_size, device=device, dtype=dtype)
    lengths = shape.seq_lengths
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward(x):
        if lengths is None:
            return model(x)[0]
        packed = pack_padded_sequence(x, torch.from_numpy(lengths), enforce_sorted=False)
        return pad_packed_sequence(model(packed)[0], total_length=shape.time)[0]

    def fwd():
        with torch.inference_mode():
            forward(x).sum().item()
        sync()

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        forward(x.detach().requires_grad_(True)).sum().backward()
        sync()

    runner = Runner({}, {}, {}, "tensors saved for backward + output")
    fwd_bwd()  # fails here, at build, where torch lacks this configuration (e.g. a dtype)
    if "fwd" in modes:
        runner.calls["fwd"], runner.memory_bytes["fwd"] = fwd, None
    if "fwd+bwd" in modes:
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
        ):
            y = forward(x.detach().requires_grad_(True))
        runner.calls["fwd+bwd"] = fwd_bwd
        runner.memory_bytes["fwd+bwd"] = int(sum(saved) + y.numel() * y.element_size())
    if "step" in modes:
        cell_cls = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}
        cell = cell_cls[shape.cell](shape.input_size, shape.hidden_size).to(device, dtype)
        zeros = torch.zeros(shape.batch, shape.hidden_size, device=device, dtype=dtype)
        xs = list(x.unbind(0))

        def step():
            with torch.inference_mode():
                hx = (zeros, zeros) if shape.cell == "lstm" else zeros
                for x_t in xs:
                    hx = cell(x_t, hx)
            sync()

        runner.calls["step"] = step
    if device == "cuda":
        runner.memory_kind = "CUDA peak allocated above baseline"
        for mode, call in runner.calls.items():
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            call()
            runner.memory_bytes[mode] = int(torch.cuda.max_memory_allocated() - base)
    return runner


def builder(impl: str) -> Callable[[Shape, Any], Runner]:
    """The builder of an implementation, by name: ``lstm_jax[BACKEND]``, ``flax.nnx``,
    ``torch``, ``scan per step``, ``scan hoisted``, ``lstm_jax.functional.lstm_cell``,
    ``jax.experimental.rnn``. Imports its library (``ImportError`` where it is absent)."""
    if impl.startswith("lstm_jax["):
        import lstm_jax  # noqa: F401

        backend = impl[len("lstm_jax[") : -1]
        return lambda shape, modes: lstm_jax_runner(shape, modes, backend)
    builders = {
        "flax.nnx": ("flax", flax_nnx),
        "torch": ("torch", torch_nn),
        "scan per step": ("lstm_jax", lambda s, m: scan_reference(s, m, hoisted=False)),
        "scan hoisted": ("lstm_jax", lambda s, m: scan_reference(s, m, hoisted=True)),
        "lstm_jax.functional.lstm_cell": ("lstm_jax", lstm_jax_functional_cell),
        "jax.experimental.rnn": ("jax", experimental_rnn),
    }
    if impl not in builders:
        raise ValueError(f"unknown implementation {impl!r}")
    module, build = builders[impl]
    __import__(module)
    return build


def versions(impl: str) -> dict:
    """Versions and device of the library an implementation runs on (JSON-able)."""
    info = {}
    if impl == "torch":
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        info["torch_device"] = "cuda" if torch.cuda.is_available() else "cpu"
        return info
    import jax

    info.update(
        jax=jax.__version__,
        jax_backend=jax.default_backend(),
        devices=[str(d) for d in jax.devices()],
        device_kind=jax.devices()[0].device_kind,
    )
    if impl == "flax.nnx":
        import flax

        info["flax"] = flax.__version__
    if impl.startswith("lstm_jax["):
        import lstm_jax

        info["lstm_jax"] = lstm_jax.__version__
        info["native"] = lstm_jax.native_status()._asdict()
    return info
