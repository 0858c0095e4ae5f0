"""The fused LSTM, GRU and RNN layers' forward and backward passes as native CPU code
(``lstm_cpu.cc``, XLA FFI).

The library is compiled on first use with the host's C++ compiler (``-march=native``).
It needs Linux on x86-64 with AVX2 and FMA (it uses AVX-512 where the CPU has it) and a
C++17 compiler (``$CXX``, else ``g++`` or ``c++``); without them, or when it cannot be
built or loaded, :func:`unavailable_reason` says why (with one warning for a failure)
and the fused layer runs its loops in XLA instead, with the same results to float32
rounding. :func:`native_status` reports what was loaded, from where, and why not.

Environment variables (the threads are read at each trace, the others at the first use):

- ``LSTM_JAX_NATIVE_CPU=0`` turns the native loops off (``1``, the default, leaves them
  on; any other value is an error).
- ``LSTM_JAX_NATIVE_ISA``: ``native`` (default: AVX-512 where the CPU has it) or ``avx2``
  (the AVX2 version on an AVX-512 machine; the tests use it to check that version).
- ``LSTM_JAX_NATIVE_THREADS``: the most threads a native loop may use, a positive
  integer (default: the CPUs this process may run on). Unset, a loop whose threads spent
  more than half their time waiting for each other (its CPUs busy with other work, which
  takes a thread off its CPU for milliseconds) runs the calls of the next quarter second
  on the calling thread alone, then tries again (the same results either way); set, the
  team is never cut.
- ``LSTM_JAX_CACHE_DIR``: where built libraries are kept (default ``~/.cache/lstm_jax``).

The cache holds one ``lstm_cpu-<key>.so`` per source, jax version, compiler, options and
CPU, beside its SHA-256 record ``lstm_cpu-<key>.so.sha256``. Its rules:

- The directory is created private (mode 0700). Nothing is loaded from a directory that
  another user owns or that group or others may write (a library is code that runs in
  this process): the library is then built for this process alone, in a fresh private
  temporary directory removed at exit, with one warning that says how to fix it.
- A library is loaded only once its bytes match the recorded SHA-256, checked before it
  is loaded. A missing record or a mismatch (a truncated or foreign file), a library
  that another user owns or others may write, or one that fails to load, is deleted and
  rebuilt, with one warning.
- Concurrent first uses (pytest-xdist workers) take turns on a lock file
  (``lstm_cpu.lock``): one builds, the others load its build. A build runs in a private
  temporary directory inside the cache and is renamed into place with its record, so
  that no process loads a half-written file even where the file system has no locks.
- Whatever fails in building or loading, the XLA loops run, with one warning.

:mod:`lstm_jax._src.fused` calls :func:`forward` and :func:`backward` from its custom VJP
where :func:`unavailable_reason` is ``None`` and the layer is float32, without a
projection, of any hidden size (the kernel's last block of units may be partial);
:mod:`lstm_jax._src.fused_gru_rnn` calls :func:`cell_forward` and :func:`cell_backward`
for the GRU and the RNN likewise.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_SOURCE = Path(__file__).with_name("lstm_cpu.cc")
# XLA's names of the calls, and the library's symbols that implement them.
_TARGETS = {
    "lstm_jax_native_forward": "LstmForward",
    "lstm_jax_native_backward": "LstmBackward",
    "lstm_jax_native_gru_forward": "GruForward",
    "lstm_jax_native_gru_backward": "GruBackward",
    "lstm_jax_native_rnn_tanh_forward": "RnnTanhForward",
    "lstm_jax_native_rnn_tanh_backward": "RnnTanhBackward",
    "lstm_jax_native_rnn_relu_forward": "RnnReluForward",
    "lstm_jax_native_rnn_relu_backward": "RnnReluBackward",
}
_FORWARD, _BACKWARD = "lstm_jax_native_forward", "lstm_jax_native_backward"
# Per cell of the GRU and RNN loops: (gates, bias blocks, stored activations), each a
# multiple of H (lstm_cpu.cc, "GRU and RNN").
CELL_LAYOUT = {"gru": (3, 4, 4), "rnn_tanh": (1, 1, 1), "rnn_relu": (1, 1, 1)}


class NativeStatus(NamedTuple):
    """Whether the native CPU loops run in this process, and how (:func:`native_status`).

    Example:
      >>> native_status()._fields
      ('available', 'reason', 'library', 'isa', 'threads', 'cache_dir')
    """

    available: bool  # the library is built, verified, loaded and registered with XLA
    reason: str | None  # why it is not available, None when it is
    library: str | None  # path of the loaded library
    isa: str | None  # "avx512" or "avx2", the instruction set built for; None without AVX2
    threads: int  # the most threads a native loop may use
    cache_dir: str  # where built libraries are kept


class _Loaded(NamedTuple):
    reason: str | None
    library: Path | None


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


def _isa(flags: set[str]) -> str | None:
    if sys.platform != "linux" or platform.machine() != "x86_64" or not {"avx2", "fma"} <= flags:
        return None
    return "avx512" if "avx512f" in flags and not _isa_options() else "avx2"


def _cache_dir() -> Path:
    configured = os.environ.get("LSTM_JAX_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "lstm_jax"


def _untrusted(st: os.stat_result) -> str | None:
    """Why a file or directory with this status may not be loaded from, or ``None``."""
    if st.st_uid != os.getuid():
        return f"is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        who = [name for bit, name in ((0o020, "group"), (0o002, "others")) if st.st_mode & bit]
        return f"is writable by {' and '.join(who)} (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _record(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_symbols(library: ctypes.CDLL) -> None:
    for symbol in _TARGETS.values():
        getattr(library, symbol)  # AttributeError when missing


def _build(compiler: str, options: list[str], library: Path) -> ctypes.CDLL:
    """Compiles the library to ``library`` with its SHA-256 record, and loads it."""
    include = jax.ffi.include_dir()
    with tempfile.TemporaryDirectory(dir=library.parent, prefix=".build-") as tmp:
        partial = Path(tmp) / library.name
        command = [compiler, *options, "-std=c++17", "-w", f"-I{include}", str(_SOURCE)]
        command += ["-o", str(partial)]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
        os.chmod(partial, 0o700)  # whatever the umask: group-writable would be refused
        record = Path(tmp) / _record(library).name
        record.write_text(f"{_sha256(partial.read_bytes())}  {library.name}\n")
        # Loaded from its unique temporary name: exactly the bytes just built and hashed,
        # never a file another process may have put at the final name meanwhile.
        loaded = ctypes.CDLL(str(partial))
        _check_symbols(loaded)
        os.replace(record, _record(library))
        os.replace(partial, library)
    return loaded


def _verify(library: Path) -> str | None:
    """Why ``library`` may not be loaded (``""`` when there is none), or ``None``."""
    try:
        fd = os.open(library, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return ""
    except OSError as error:
        return f"cannot be opened ({error.strerror})"
    with os.fdopen(fd, "rb") as file:
        st = os.fstat(file.fileno())
        if not stat.S_ISREG(st.st_mode):
            return "is not a regular file"
        problem = _untrusted(st)
        if problem is not None:
            return problem
        digest = _sha256(file.read())
    try:
        recorded = _record(library).read_text().split()[0]
    except (OSError, ValueError, IndexError):
        return "has no SHA-256 record"
    return None if recorded == digest else "does not match its recorded SHA-256"


def _load_cached(library: Path, notes: list[str]) -> ctypes.CDLL | None:
    """The cached ``library`` loaded once verified, else ``None`` (after deleting it)."""
    problem = _verify(library)
    if problem == "":
        return None
    if problem is None:
        try:
            loaded = ctypes.CDLL(str(library))
            _check_symbols(loaded)
            return loaded
        except (OSError, AttributeError) as error:
            problem = f"failed to load ({error})"
    notes.append(f"the cached {library} {problem}: deleted and rebuilt")
    for path in (library, _record(library)):
        path.unlink(missing_ok=True)
    return None


@contextlib.contextmanager
def _build_lock(cache: Path) -> Iterator[None]:
    """Holds the cache's lock file: one process at a time checks and builds, the others
    wait and then load its build. Where the file system has no locks, nothing is held,
    and the checksums still keep a half-renamed build from being loaded."""
    import fcntl  # POSIX only, like the native loops

    try:
        fd = os.open(cache / "lstm_cpu.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a build holds it for at most its timeout
        except OSError:
            pass
        yield
    finally:
        os.close(fd)


def _private_cache(cache: Path) -> str | None:
    """Creates ``cache`` (mode 0700) if need be; why it may not be used, or ``None``."""
    try:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(cache)
    except OSError as error:
        return f"cannot be created ({error.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    return _untrusted(st)


def _load_library(compiler: str, flags: set[str], notes: list[str]) -> tuple[ctypes.CDLL, Path]:
    """Loads the cached library, building it first where there is no valid one."""
    options = ["-O3", "-march=native", *_isa_options(), "-pthread", "-shared", "-fPIC"]
    key = hashlib.sha256(
        b"\0".join(
            [_SOURCE.read_bytes(), jax.__version__.encode(), compiler.encode()]
            + [o.encode() for o in options]
            + [f.encode() for f in sorted(flags)]
        )
    ).hexdigest()[:16]
    cache = _cache_dir()
    library = cache / f"lstm_cpu-{key}.so"
    problem = _private_cache(cache)
    if problem is None:
        with _build_lock(cache):
            loaded = _load_cached(library, notes)
            return (loaded or _build(compiler, options, library)), library
    # A cache others may write is never loaded from; building into a fresh private
    # directory instead keeps the native loops' speed at the cost of a build per process
    # (seconds), where falling back to the XLA loops would cost every step.
    notes.append(
        f"the cache directory {cache} {problem}, so nothing is loaded from it: building in "
        "a private temporary directory instead, for this process (make the directory "
        "private to this user, or point LSTM_JAX_CACHE_DIR at one, to keep the build)"
    )
    private = Path(tempfile.mkdtemp(prefix="lstm_jax-"))
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    library = private / library.name
    return _build(compiler, options, library), library


_LOAD_LOCK = threading.Lock()
_LOADED: list[_Loaded] = []  # the outcome of the first load, once there is one


def _load() -> _Loaded:
    """Builds, verifies, loads and registers the library, once per process, with one
    warning where anything went wrong (stored first: a warning raised as an error does
    not make the next call load again)."""
    with _LOAD_LOCK:
        if not _LOADED:
            notes: list[str] = []
            _LOADED.append(_load_once(notes))
            if _LOADED[0].reason is not None and notes:
                warnings.warn(
                    "lstm_jax runs the fused loops in XLA: " + "; ".join(notes), stacklevel=3
                )
            elif notes:
                warnings.warn("lstm_jax native CPU loops: " + "; ".join(notes), stacklevel=3)
        return _LOADED[0]


def _native_cpu_enabled() -> bool:
    """``$LSTM_JAX_NATIVE_CPU``: ``0`` turns the native loops off, ``1`` (default) on.

    Raises:
      ValueError: for any other value, naming the variable and the value.
    """
    value = os.environ.get("LSTM_JAX_NATIVE_CPU", "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(
            "LSTM_JAX_NATIVE_CPU must be '0' (native loops off) or '1' (on, the default), "
            f"got {value!r}"
        )
    return value != "0"


def _load_once(notes: list[str]) -> _Loaded:
    if not _native_cpu_enabled():
        return _Loaded("turned off by LSTM_JAX_NATIVE_CPU=0", None)
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return _Loaded(
            f"needs Linux on x86-64, this is {sys.platform} on {platform.machine()}", None
        )
    flags = _cpu_flags()
    if not {"avx2", "fma"} <= flags:
        return _Loaded("needs a CPU with AVX2 and FMA", None)
    compiler = _compiler()
    if compiler is None:
        return _Loaded("no C++ compiler found ($CXX, g++ or c++)", None)
    _isa_options()  # a misspelt LSTM_JAX_NATIVE_ISA is an error, not a fallback
    try:
        loaded, library = _load_library(compiler, flags, notes)
        for name, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(
                name, jax.ffi.pycapsule(getattr(loaded, symbol)), platform="cpu"
            )
    except Exception as error:  # whatever fails, the XLA loops run instead
        detail = getattr(error, "stderr", None) or f"{type(error).__name__}: {error}"
        reason = f"building or loading {_SOURCE.name} failed: {detail.strip()[-2000:]}"
        notes.append(reason)
        return _Loaded(reason, None)
    return _Loaded(None, library)


def unavailable_reason() -> str | None:
    """Why the native loops cannot run here, or ``None`` once they are built and loaded.

    The first call compiles the library (a few seconds) unless it is cached.

    Example:
      >>> reason = unavailable_reason()
      >>> reason is None or isinstance(reason, str)
      True
    """
    return _load().reason


def native_status() -> NativeStatus:
    """Whether the fused layer's native CPU loops run in this process, and how.

    The first call builds and loads the library (a few seconds) unless it is cached;
    see :mod:`lstm_jax._src.native.lstm_cpu` for the cache's rules and the environment
    variables.

    Returns:
      A :class:`NativeStatus`: ``available``; ``reason``, why not (``None`` when
      available); ``library``, the path of the loaded library; ``isa``, ``"avx512"`` or
      ``"avx2"`` (``None`` on a CPU without AVX2 and FMA); ``threads``, the most threads a
      native loop may use; ``cache_dir``, where built libraries are kept.

    Raises:
      ValueError: for an ``LSTM_JAX_NATIVE_CPU``, ``LSTM_JAX_NATIVE_ISA`` or
        ``LSTM_JAX_NATIVE_THREADS`` that is not one of the values expected.

    Example:
      >>> status = native_status()
      >>> status.available == (status.reason is None), status.threads >= 1
      (True, True)
    """
    loaded = _load()
    return NativeStatus(
        available=loaded.reason is None,
        reason=loaded.reason,
        library=None if loaded.library is None else str(loaded.library),
        isa=_isa(_cpu_flags()),
        threads=max_threads(),
        cache_dir=str(_cache_dir()),
    )


def max_threads() -> int:
    """Threads a native loop may use: ``$LSTM_JAX_NATIVE_THREADS``, else the CPUs this
    process may run on.

    Raises:
      ValueError: when ``LSTM_JAX_NATIVE_THREADS`` is set to anything but a positive
        integer.

    Example:
      >>> max_threads() >= 1
      True
    """
    value = os.environ.get("LSTM_JAX_NATIVE_THREADS", "").strip()
    if not value:
        return len(os.sched_getaffinity(0))
    if not value.isdecimal() or int(value) < 1:
        raise ValueError(
            "LSTM_JAX_NATIVE_THREADS must be a positive integer (the most threads a native "
            f"loop may use), got {value!r}"
        )
    return int(value)


def _thread_attrs() -> dict[str, np.generic]:
    """The threads attributes of a native call: the most threads, and whether that team is
    fixed (``LSTM_JAX_NATIVE_THREADS`` set) or may be cut to the caller alone while other
    work keeps the CPUs busy."""
    fixed = bool(os.environ.get("LSTM_JAX_NATIVE_THREADS", "").strip())
    return {"max_threads": np.int64(max_threads()), "fixed_threads": np.bool_(fixed)}


def last_call_team() -> int:
    """The threads the last native call of this process ran on: 1 for the caller alone,
    0 before the first call or where the native loops are unavailable.

    Example:
      >>> last_call_team() >= 0
      True
    """
    if unavailable_reason() is not None:
        return 0
    return ctypes.CDLL(str(_load().library)).LstmJaxNativeLastTeam()


def _mask(valid: jax.Array | None) -> jax.Array:
    return jnp.zeros((0,), bool) if valid is None else valid


def _no_peepholes(peep: jax.Array | None) -> jax.Array:
    return jnp.zeros((0,), jnp.float32) if peep is None else peep


def _f32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _require_library() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"the native CPU loops are unavailable: {reason}")


def forward(x, w_ih, bias, w_hh, h0, c0, valid, peep, save):
    """The forward loop, input projection included: ``x`` ``[D, T, B, I]``, ``w_ih``
    ``[D, 4H, I]``, ``bias`` ``[D, 4H]`` or ``None``, ``w_hh`` ``[D, 4H, H]``,
    ``h0``/``c0`` ``[D, B, H]``, ``valid`` ``[D, T, B]`` or ``None``, the peephole
    weights ``peep`` ``[D, 3, H]`` (``w_ci``, ``w_cf``, ``w_co``) or ``None``, all float32.

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
    y, h_t, c_t, acts, cs = call(
        x, w_ih, bias, w_hh, h0, c0, _mask(valid), _no_peepholes(peep), **_thread_attrs()
    )
    return (y, h_t, c_t, acts, cs) if save else (y, h_t, c_t, None, None)


def backward(acts, cs, c0, dy, dh_t, dc_t, w_hh, w_ih, x, h_prev, valid, peep):
    """The backward pass of :func:`forward`, weight gradients included.

    Takes the stored ``acts`` ``[D, T, B, 4H]`` and ``cs`` ``[D, T, B, H]``, ``c0``, the
    output gradients ``dy`` ``[D, T, B, H]``, ``dh_T``/``dc_T`` ``[D, B, H]``, the
    weights, the inputs ``x`` ``[D, T, B, I]``, each step's previous output
    ``h_prev`` ``[D, T, B, H]``, ``valid`` and ``peep`` as :func:`forward`'s. Returns
    ``(dx, dW_ih, dW_hh, dbias, dh0, dc0, dpeep)``, ``dpeep`` ``None`` without peepholes;
    the gate gradients are never stored whole: each chunk of steps' weight gradients is
    taken while they are in cache.
    """
    _require_library()
    d, t, b, g = acts.shape
    i, h = x.shape[-1], cs.shape[-1]
    call = jax.ffi.ffi_call(
        _BACKWARD,
        (_f32(d, t, b, i), _f32(d, i + h, g), _f32(d, g), _f32(d, b, h), _f32(d, b, h))
        + (_f32(0) if peep is None else _f32(d, 3, h),),
        vmap_method="sequential",
    )
    dx, dw_t, dbias, dh0, dc0, dpeep = call(
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
        _no_peepholes(peep),
        **_thread_attrs(),
    )
    dw = jnp.swapaxes(dw_t, 1, 2)
    return dx, dw[..., :i], dw[..., i:], dbias, dh0, dc0, None if peep is None else dpeep


def cell_forward(kind, x, w_ih, bias, w_hh, h0, valid, save):
    """The forward loop of the GRU or an RNN (``kind``: ``"gru"``, ``"rnn_tanh"``,
    ``"rnn_relu"``), input projection included: ``x`` ``[D, T, B, I]``, ``w_ih``
    ``[D, gH, I]``, ``bias`` ``[D, bH]``, ``w_hh`` ``[D, gH, H]``, ``h0`` ``[D, B, H]``,
    ``valid`` ``[D, T, B]`` or ``None``, all float32, with ``(g, b, a) = CELL_LAYOUT[kind]``:
    the GRU's bias is ``b_ir + b_hr, b_iz + b_hz, b_in, b_hn``, an RNN's ``b_ih + b_hh``.

    Returns ``(y [D, T, B, H], h_T, acts)``, ``acts`` ``[D, T, B, aH]`` when ``save`` (the
    GRU: ``r, z, n`` and ``W_hn h + b_hn`` of each step; an RNN: its new state before
    masking), else ``None``.
    """
    _require_library()
    d, t, b, _ = x.shape
    h = w_hh.shape[-1]
    stored = _f32(d, t, b, CELL_LAYOUT[kind][2] * h) if save else _f32(0)
    call = jax.ffi.ffi_call(
        f"lstm_jax_native_{kind}_forward",
        (_f32(d, t, b, h), _f32(d, b, h), stored),
        vmap_method="sequential",
    )
    y, h_t, acts = call(x, w_ih, bias, w_hh, h0, _mask(valid), **_thread_attrs())
    return y, h_t, acts if save else None


def cell_backward(kind, acts, dy, dh_t, w_hh, w_ih, x, h_prev, valid):
    """The backward pass of :func:`cell_forward`, weight gradients included.

    Takes its ``acts``, the output gradients ``dy`` ``[D, T, B, H]`` and ``dh_T``
    ``[D, B, H]``, the weights, the inputs ``x`` and each step's previous state ``h_prev``
    ``[D, T, B, H]``. Returns ``(dx, dW_ih [D, gH, I], dW_hh [D, gH, H], dbias [D, bH],
    dh0)``, ``dbias`` in the layout of :func:`cell_forward`'s ``bias``.
    """
    _require_library()
    d, t, b, i = x.shape
    h = h_prev.shape[-1]
    gates, bias, _ = CELL_LAYOUT[kind]
    g = gates * h
    call = jax.ffi.ffi_call(
        f"lstm_jax_native_{kind}_backward",
        (_f32(d, t, b, i), _f32(d, i, g), _f32(d, h, g), _f32(d, bias * h), _f32(d, b, h)),
        vmap_method="sequential",
    )
    dx, dw_ih_t, dw_hh_t, dbias, dh0 = call(
        acts, dy, dh_t, w_hh, w_ih, x, h_prev, _mask(valid), **_thread_attrs()
    )
    return dx, jnp.swapaxes(dw_ih_t, 1, 2), jnp.swapaxes(dw_hh_t, 1, 2), dbias, dh0
