"""The documentation builds offline with warnings as errors (API reference + notebooks)."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_sphinx_build_has_no_warnings(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(ROOT / "docs"),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "html" / "api.html").read_text()
    for symbol in (
        "lstm_jax.LSTM",
        "lstm_jax.functional.lstm",
        "lstm_jax.linen.LSTM",
        "lstm_jax.train.fit",
        "lstm_jax.data.load_ptb",
    ):
        assert f'id="{symbol}"' in api, symbol
    assert (tmp_path / "html" / "notebooks" / "01_lstm_from_its_gates.html").exists()
