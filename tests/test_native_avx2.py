"""The native loops' AVX2 build (what CPUs without AVX-512 build) passes the AVX-512
build's checks: one subprocess with ``LSTM_JAX_NATIVE_ISA=avx2`` runs the native test
files' checks that reach the vector code: hidden sizes with partial vectors (the GRU's and
the RNN's at 5 and 33 units), the backward pass over several chunks, the gate functions'
accuracy, and NaN and inf propagation, forward, at a hidden size with a partial vector
(37). The build's other code is the AVX-512 build's, which the main files test whole."""

import os
import pathlib
import subprocess
import sys

import pytest

from lstm_jax._src.native import lstm_cpu

HERE = pathlib.Path(__file__).parent
FILES = ("test_native_cpu.py", "test_native_gru_rnn.py", "test_native_nonfinite.py")
CHECKS = (
    "(of_any_hidden_size or several_chunks or gate_functions"
    " or (layer_equals_float64_scan and (-33- or -5-))"
    " or (nonfinite_values_propagate and H37 and forward)) and not xla"
)


@pytest.mark.skipif(
    lstm_cpu.unavailable_reason() is not None
    or os.environ.get("LSTM_JAX_NATIVE_ISA") == "avx2"
    or "avx512f" not in lstm_cpu._cpu_flags(),
    reason="no native loops here, or their AVX2 build is what runs here already",
)
def test_avx2_build_passes_the_vector_code_checks(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-k", CHECKS]
        + [str(HERE / name) for name in FILES],
        env=dict(os.environ, LSTM_JAX_NATIVE_ISA="avx2"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary
    # every file took part: 10 LSTM, 10 GRU/RNN and 28 NaN/inf checks
    assert int(summary.split(" passed")[0].split()[-1]) >= 48, summary
