"""The native library's build cache (``lstm_jax/_src/native/lstm_cpu.py``).

Each case runs in a fresh Python process with its own ``LSTM_JAX_CACHE_DIR``, so that
no loaded library or cached answer carries over. One real build (the fresh-build case)
checks the compiler's output; the other cases "compile" with a stand-in compiler that
copies that build to the requested output, so that a rebuild takes no time.
"""

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lstm_jax._src.native import lstm_cpu

_REASON = lstm_cpu.unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=str(_REASON))

# Run in the child: the native status, one call of the loaded forward loop against NumPy
# (a step of the LSTM from a zero state), the library's warnings and, with
# LSTM_JAX_TEST_FUSED set, whether the fused layer lowers the native call and matches
# the scan.
_PROBE = r"""
import json, os, warnings
import numpy as np
if os.environ.get("LSTM_JAX_TEST_OTHER_UID"):  # as if every file belonged to another user
    real_uid = os.getuid
    os.getuid = lambda: real_uid() + 1
report = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import jax, jax.numpy as jnp
    from lstm_jax._src.native import lstm_cpu
    status = lstm_cpu.native_status()
    report["status"] = status._asdict()
    if status.available:
        x, w_ih = np.ones((1, 1, 1, 3), np.float32), np.full((1, 128, 3), 0.1, np.float32)
        w_ih[0, 32:64] = -0.2  # the forget gate: unused from c0 = 0
        zeros = np.zeros((1, 1, 32), np.float32)
        y = lstm_cpu.forward(x, w_ih, None, np.zeros((1, 128, 32), np.float32), zeros,
                             zeros, None, None, False)[0]
        sigmoid, z = (lambda a: 1 / (1 + np.exp(-a))), np.float32(0.3)
        expected = sigmoid(z) * np.tanh(sigmoid(z) * np.tanh(z))
        report["forward"] = bool(np.allclose(np.asarray(y), expected, atol=1e-6))
    if os.environ.get("LSTM_JAX_TEST_FUSED"):
        from lstm_jax import functional as F
        params = F.init_lstm_layer(jax.random.key(0), 3, 32)
        x = jnp.ones((4, 2, 3), jnp.float32)
        zeros = jnp.zeros((2, 32), jnp.float32)
        state = F.LSTMState(zeros, zeros)
        run = jax.jit(F.run_fused_layer)
        report["fused_native"] = "lstm_jax_native" in run.lower(params, x, state).as_text()
        expected = F.run_layer(F.LSTM_CELL, params, x, state)[0]
        report["fused_close"] = bool(jnp.allclose(run(params, x, state)[0], expected, atol=1e-5))
report["warnings"] = [str(w.message) for w in caught if "lstm_jax" in str(w.message)]
print(json.dumps(report))
"""

# Stands in for the C++ compiler: copies $LSTM_JAX_TEST_PREBUILT to the -o argument,
# taking $LSTM_JAX_TEST_BUILD_SECONDS, and counts its builds in $LSTM_JAX_TEST_BUILDS.
_COPYING_COMPILER = """#!/bin/sh
while [ "$#" -gt 0 ]; do
  if [ "$1" = "-o" ]; then out="$2"; fi
  shift
done
if [ -n "$LSTM_JAX_TEST_BUILDS" ]; then echo built >> "$LSTM_JAX_TEST_BUILDS"; fi
sleep "${LSTM_JAX_TEST_BUILD_SECONDS:-0}"
exec cp "$LSTM_JAX_TEST_PREBUILT" "$out"
"""

# A library that is not the kernel: its constructor leaves a mark when it is loaded.
_FOREIGN_SOURCE = """
#include <cstdio>
#include <cstdlib>
__attribute__((constructor)) static void Mark() {
  const char* path = std::getenv("LSTM_JAX_TEST_MARKER");
  if (std::FILE* f = path ? std::fopen(path, "w") : nullptr) std::fclose(f);
}
"""


def _probe(cache: Path, **env: str) -> dict:
    environ = dict(os.environ, LSTM_JAX_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu", **env)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=next(p for p in cache.parents if p.is_dir()),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _recorded(library: Path) -> str:
    return _record(library).read_text().split()[0]


def _only_library(cache: Path) -> Path:
    (library,) = cache.glob("lstm_cpu-*.so")
    return library


@pytest.fixture(scope="module")
def fresh_build(tmp_path_factory):
    """A first use in a cache directory that does not exist yet (nor its parent)."""
    cache = tmp_path_factory.mktemp("fresh") / "parent" / "cache"
    return cache, _probe(cache, LSTM_JAX_TEST_FUSED="1")


@pytest.fixture(scope="module")
def copying(tmp_path_factory, fresh_build):
    """Environment for the stand-in compiler, and a cache seeded by it."""
    root = tmp_path_factory.mktemp("copying")
    compiler = root / "cxx"
    compiler.write_text(_COPYING_COMPILER)
    compiler.chmod(0o755)
    env = {"CXX": str(compiler), "LSTM_JAX_TEST_PREBUILT": str(_only_library(fresh_build[0]))}
    seed = root / "seed"
    assert _probe(seed, **env)["status"]["available"]
    return env, seed


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    path = tmp_path_factory.mktemp("foreign") / "foreign.so"
    source = path.with_suffix(".cc")
    source.write_text(_FOREIGN_SOURCE)
    compiler = lstm_cpu._compiler()
    subprocess.run([compiler, "-shared", "-fPIC", str(source), "-o", str(path)], check=True)
    return path


def _seeded(tmp_path: Path, seed: Path) -> tuple[Path, Path]:
    """A private cache holding a valid library and its record, copied from ``seed``."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    library = cache / _only_library(seed).name
    for source in (_only_library(seed), _record(_only_library(seed))):
        shutil.copy2(source, cache / source.name)
    return cache, library


def _assert_native(report: dict, library: Path) -> None:
    assert report["status"]["available"] and report["status"]["reason"] is None, report
    assert report["forward"], report
    assert report["status"]["library"] == str(library)
    assert _recorded(library) == _sha256(library)  # a valid build and its record


def test_fresh_build_makes_a_private_directory_and_records_the_checksum(fresh_build):
    cache, report = fresh_build
    library = _only_library(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert library.stat().st_mode & 0o022 == 0
    _assert_native(report, library)
    assert report["fused_native"] and report["fused_close"]
    assert report["warnings"] == []
    flags = lstm_cpu._cpu_flags()
    isa = "avx2" if os.environ.get("LSTM_JAX_NATIVE_ISA") == "avx2" else "native"
    expected_isa = "avx512" if "avx512f" in flags and isa == "native" else "avx2"
    assert report["status"]["isa"] == expected_isa
    assert report["status"]["cache_dir"] == str(cache)
    assert report["status"]["threads"] == lstm_cpu.max_threads()
    expected = [library.name, _record(library).name, "lstm_cpu.lock"]
    assert sorted(p.name for p in cache.iterdir()) == expected


@pytest.mark.parametrize("damage", ["truncated", "foreign", "no_record"])
def test_damaged_library_is_never_loaded_and_is_rebuilt(damage, tmp_path, copying, foreign):
    """A library truncated in place (which, loaded, would kill the process with SIGBUS),
    another library under the expected name, or a library without its record."""
    env, seed = copying
    cache, library = _seeded(tmp_path, seed)
    if damage == "truncated":
        os.truncate(library, library.stat().st_size // 2)
    elif damage == "foreign":
        shutil.copy(foreign, library)
    else:
        _record(library).unlink()
    marker = tmp_path / "marker"
    report = _probe(cache, LSTM_JAX_TEST_MARKER=str(marker), **env)
    assert not marker.exists()  # the foreign library's code never ran
    _assert_native(report, library)
    expected = "has no SHA-256 record" if damage == "no_record" else "does not match"
    assert len(report["warnings"]) == 1 and expected in report["warnings"][0], report


def test_library_without_the_kernel_symbols_is_replaced(tmp_path, copying, foreign):
    """A library whose record vouches for it is loaded (so its code runs: the mark the
    other cases look for); lacking ``LstmForward`` and ``LstmBackward`` it is deleted
    and rebuilt, with one warning."""
    env, seed = copying
    cache, library = _seeded(tmp_path, seed)
    shutil.copy(foreign, library)
    _record(library).write_text(f"{_sha256(library)}  {library.name}\n")
    marker = tmp_path / "marker"
    report = _probe(cache, LSTM_JAX_TEST_MARKER=str(marker), **env)
    assert marker.exists()
    _assert_native(report, library)
    assert _sha256(library) != _sha256(foreign)
    assert len(report["warnings"]) == 1 and "failed to load" in report["warnings"][0], report


@pytest.mark.parametrize("exposure", ["directory_0777", "library_0775", "another_owner"])
def test_cache_others_may_write_is_never_loaded_from(exposure, tmp_path, copying, foreign):
    """Planted there: a foreign library with a record that matches it. It never runs."""
    env, seed = copying
    cache, library = _seeded(tmp_path, seed)
    shutil.copy(foreign, library)
    _record(library).write_text(f"{_sha256(library)}  {library.name}\n")
    if exposure == "directory_0777":
        cache.chmod(0o777)
    elif exposure == "library_0775":
        library.chmod(0o775)
    else:
        env = dict(env, LSTM_JAX_TEST_OTHER_UID="1")
    marker = tmp_path / "marker"
    report = _probe(cache, LSTM_JAX_TEST_MARKER=str(marker), **env)
    assert not marker.exists()
    assert report["status"]["available"] and report["forward"], report
    (warning,) = report["warnings"]
    if exposure == "library_0775":  # the directory is private: rebuilt in place
        assert "writable by group" in warning
        _assert_native(report, library)
        assert library.stat().st_mode & 0o022 == 0
    else:  # built in a private temporary directory, removed at exit; the cache untouched
        expected = "writable by group and others (mode 777)" if exposure == "directory_0777" else ""
        assert (expected or "owned by another user") in warning
        assert not report["status"]["library"].startswith(str(cache))
        assert not Path(report["status"]["library"]).exists()
        assert _sha256(library) == _sha256(foreign) == _recorded(library)


def test_build_failure_falls_back_to_the_xla_loops_with_one_warning(tmp_path):
    compiler = tmp_path / "cxx"
    compiler.write_text("#!/bin/sh\necho 'no compiler today' >&2\nexit 1\n")
    compiler.chmod(0o755)
    report = _probe(tmp_path / "cache", CXX=str(compiler), LSTM_JAX_TEST_FUSED="1")
    status = report["status"]
    assert not status["available"] and "no compiler today" in status["reason"]
    assert status["library"] is None
    assert not report["fused_native"] and report["fused_close"]  # the XLA loops run
    assert len(report["warnings"]) == 1 and "no compiler today" in report["warnings"][0]


def test_turned_off_reports_why_without_a_warning(tmp_path):
    report = _probe(tmp_path / "cache", LSTM_JAX_NATIVE_CPU="0")
    assert report["status"]["reason"] == "turned off by LSTM_JAX_NATIVE_CPU=0"
    assert not report["status"]["available"] and report["status"]["library"] is None
    assert report["warnings"] == []
    assert not (tmp_path / "cache").exists()


def test_concurrent_first_uses_each_load_a_valid_library(tmp_path, copying):
    """Workers (pytest-xdist) starting on the same empty cache at once: one builds, the
    other loads that build."""
    env, _ = copying
    cache, builds = tmp_path / "cache", tmp_path / "builds"
    environ = dict(os.environ, LSTM_JAX_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu", **env)
    # a build long enough for the other worker to arrive while it runs
    environ.update(LSTM_JAX_TEST_BUILDS=str(builds), LSTM_JAX_TEST_BUILD_SECONDS="4")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _PROBE], env=environ, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    reports = [json.loads(w.communicate(timeout=300)[0].strip().splitlines()[-1]) for w in workers]
    library = _only_library(cache)
    for report in reports:
        _assert_native(report, library)
        assert report["warnings"] == []
    assert builds.read_text().splitlines() == ["built"]


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_threads_variable_must_be_a_positive_integer(value, monkeypatch):
    monkeypatch.setenv("LSTM_JAX_NATIVE_THREADS", value)
    expected = f"LSTM_JAX_NATIVE_THREADS must be a positive integer.*{re.escape(repr(value))}"
    with pytest.raises(ValueError, match=expected):
        lstm_cpu.max_threads()


def test_threads_variable_sets_the_threads(monkeypatch):
    monkeypatch.setenv("LSTM_JAX_NATIVE_THREADS", "3")
    assert lstm_cpu.max_threads() == lstm_cpu.native_status().threads == 3
    monkeypatch.delenv("LSTM_JAX_NATIVE_THREADS")
    assert lstm_cpu.max_threads() == len(os.sched_getaffinity(0))
