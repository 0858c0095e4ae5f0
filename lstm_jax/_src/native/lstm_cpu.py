"""The fused LSTM layer's forward and backward passes as native CPU code
(``lstm_cpu.cc``, XLA FFI).

The library is compiled on first use with the host's C++ compiler (``-march=native``)
and cached under ``$LSTM_JAX_CACHE_DIR`` (default ``~/.cache/lstm_jax``), keyed by the
source, the jax version and the CPU. It needs Linux on x86-64 with AVX2 and FMA (it
uses AVX-512 where the CPU has it) and a C++17 compiler (``$CXX``, else ``g++`` or
``c++``); without them, or with ``LSTM_JAX_NATIVE_CPU=0``, :func:`unavailable_reason`
says why and the fused layer runs its loops in XLA instead, with the same results to
float32 rounding. ``LSTM_JAX_NATIVE_ISA=avx2`` builds the AVX2 version on an AVX-512
machine (the tests use it to check that version).

:mod:`lstm_jax._src.fused` calls :func:`forward` and :func:`backward` from its custom VJP
where :func:`unavailable_reason` is ``None`` and the layer is float32, without a
projection, with a hidden size that is a multiple of :data:`UNITS_MULTIPLE`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

_SOURCE = Path(__file__).with_name("lstm_cpu.cc")
_FORWARD, _BACKWARD = "lstm_jax_native_forward", "lstm_jax_native_backward"
UNITS_MULTIPLE = 32  # the kernel splits the hidden units into blocks of 32


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _isa_options() -> list[str]:
    """Compiler options beyond ``-march=native`` that choose the instruction set."""
    isa = os.environ.get("LSTM_JAX_NATIVE_ISA", "native")
    if isa not in ("native", "avx2"):
        raise ValueError(f"LSTM_JAX_NATIVE_ISA must be 'native' or 'avx2', got {isa!r}")
    return ["-mno-avx512f"] if isa == "avx2" else []


def _build(compiler: str, flags: set[str]) -> Path:
    """Compiles the library into the cache (once per source, jax version, CPU and ISA)."""
    include = jax.ffi.include_dir()
    options = ["-O3", "-march=native", *_isa_options(), "-pthread", "-shared", "-fPIC"]
    key = hashlib.sha256(
        b"\0".join(
            [_SOURCE.read_bytes(), jax.__version__.encode(), compiler.encode()]
            + [o.encode() for o in options]
            + [f.encode() for f in sorted(flags)]
        )
    ).hexdigest()[:16]
    cache = Path(os.environ.get("LSTM_JAX_CACHE_DIR", Path.home() / ".cache" / "lstm_jax"))
    library = cache / f"lstm_cpu-{key}.so"
    if library.exists():
        return library
    cache.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: concurrent first uses (pytest-xdist
    # workers) never load a half-written file.
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        partial = Path(tmp) / library.name
        command = [compiler, *options, "-std=c++17", "-w", f"-I{include}", str(_SOURCE)]
        command += ["-o", str(partial)]
        subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(partial, library)
    return library


@functools.cache
def unavailable_reason() -> str | None:
    """Why the native loops cannot run here, or ``None`` once they are built and loaded.

    The first call compiles the library (a few seconds) unless it is cached.

    Example:
      >>> reason = unavailable_reason()
      >>> reason is None or isinstance(reason, str)
      True
    """
    if os.environ.get("LSTM_JAX_NATIVE_CPU", "1") == "0":
        return "turned off by LSTM_JAX_NATIVE_CPU=0"
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"needs Linux on x86-64, this is {sys.platform} on {platform.machine()}"
    flags = _cpu_flags()
    if not {"avx2", "fma"} <= flags:
        return "needs a CPU with AVX2 and FMA"
    compiler = _compiler()
    if compiler is None:
        return "no C++ compiler found ($CXX, g++ or c++)"
    try:
        library = ctypes.cdll.LoadLibrary(str(_build(compiler, flags)))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        reason = f"building {_SOURCE.name} failed: {detail.strip()[-2000:]}"
        warnings.warn(f"lstm_jax runs the fused loops in XLA: {reason}", stacklevel=2)
        return reason
    for name, symbol in ((_FORWARD, library.LstmForward), (_BACKWARD, library.LstmBackward)):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(symbol), platform="cpu")
    return None


def max_threads() -> int:
    """Threads a native loop may use: ``$LSTM_JAX_NATIVE_THREADS``, else the CPUs this
    process may run on."""
    return int(os.environ.get("LSTM_JAX_NATIVE_THREADS", 0)) or len(os.sched_getaffinity(0))


def _mask(valid: jax.Array | None) -> jax.Array:
    return jnp.zeros((0,), bool) if valid is None else valid


def _f32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _require_library() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"the native CPU loops are unavailable: {reason}")


def forward(x, w_ih, bias, w_hh, h0, c0, valid, save):
    """The forward loop, input projection included: ``x`` ``[D, T, B, I]``, ``w_ih``
    ``[D, 4H, I]``, ``bias`` ``[D, 4H]`` or ``None``, ``w_hh`` ``[D, 4H, H]``,
    ``h0``/``c0`` ``[D, B, H]``, ``valid`` ``[D, T, B]`` or ``None``, all float32.

    Returns ``(y [D, T, B, H], h_T, c_T, acts [D, T, B, 4H], cs [D, T, B, H])``, the last
    two ``None`` unless ``save``: the contract of ``fused._chunk_forward``.
    """
    _require_library()
    d, t, b, _ = x.shape
    g, h = w_hh.shape[1:]
    stored = (_f32(d, t, b, g), _f32(d, t, b, h)) if save else (_f32(0), _f32(0))
    call = jax.ffi.ffi_call(
        _FORWARD,
        (_f32(d, t, b, h), _f32(d, b, h), _f32(d, b, h)) + stored,
        vmap_method="sequential",
    )
    bias = jnp.zeros((d, g), jnp.float32) if bias is None else bias
    threads = np.int64(max_threads())
    y, h_t, c_t, acts, cs = call(x, w_ih, bias, w_hh, h0, c0, _mask(valid), max_threads=threads)
    return (y, h_t, c_t, acts, cs) if save else (y, h_t, c_t, None, None)


def backward(acts, cs, c0, dy, dh_t, dc_t, w_hh, w_ih, x, h_prev, valid):
    """The backward pass of :func:`forward`, weight gradients included.

    Takes the stored ``acts`` ``[D, T, B, 4H]`` and ``cs`` ``[D, T, B, H]``, ``c0``, the
    output gradients ``dy`` ``[D, T, B, H]``, ``dh_T``/``dc_T`` ``[D, B, H]``, the
    weights, the inputs ``x`` ``[D, T, B, I]`` and each step's previous output
    ``h_prev`` ``[D, T, B, H]``. Returns ``(dx, dW_ih, dW_hh, dbias, dh0, dc0)``; the gate
    gradients are never stored whole: each chunk of steps' weight gradients is taken
    while they are in cache.
    """
    _require_library()
    d, t, b, g = acts.shape
    i, h = x.shape[-1], cs.shape[-1]
    call = jax.ffi.ffi_call(
        _BACKWARD,
        (_f32(d, t, b, i), _f32(d, i + h, g), _f32(d, g), _f32(d, b, h), _f32(d, b, h)),
        vmap_method="sequential",
    )
    dx, dw_t, dbias, dh0, dc0 = call(
        acts,
        cs,
        c0,
        dy,
        dh_t,
        dc_t,
        w_hh,
        w_ih,
        x,
        h_prev,
        _mask(valid),
        max_threads=np.int64(max_threads()),
    )
    dw = jnp.swapaxes(dw_t, 1, 2)
    return dx, dw[..., :i], dw[..., i:], dbias, dh0, dc0
