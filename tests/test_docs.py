"""The documentation: it builds offline with warnings as errors, the API page lists every
public symbol with its real signature, the notebooks are executed into it with their
figures, and every public symbol has a ``>>>`` example."""

import importlib
import pathlib
import re
import subprocess
import sys

import pytest
from once_per_session import once_per_session

ROOT = pathlib.Path(__file__).resolve().parents[1]
PUBLIC_MODULES = (
    "lstm_jax",
    "lstm_jax.functional",
    "lstm_jax.linen",
    "lstm_jax.train",
    "lstm_jax.data",
)


def public_symbols():
    """``(module name, name, object)`` for every name in the public modules' ``__all__``."""
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            yield module_name, name, getattr(module, name)


def build_docs(out: pathlib.Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
        + [arg for o in overrides for arg in ("-D", o)]
        + [str(ROOT / "docs"), str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> pathlib.Path:
    def build(workdir):
        result = build_docs(workdir / "html")
        assert result.returncode == 0, result.stdout + result.stderr
        return str(workdir / "html")

    return pathlib.Path(once_per_session(tmp_path_factory, "docs", build))


def signature_text(api: str, anchor: str) -> str:
    """The rendered signature line of ``anchor``, tags stripped."""
    match = re.search(
        rf'<dt class="sig sig-object py" id="{re.escape(anchor)}">(.*?)</dt>', api, re.S
    )
    assert match, anchor
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", match.group(1)))


def test_every_public_symbol_has_an_example():
    """Each public function and class shows a ``>>>`` example in its own docstring."""
    missing = sorted(
        f"{module_name}.{name}"
        for module_name, name, obj in public_symbols()
        if callable(obj) and ">>>" not in (obj.__doc__ or "")
    )
    assert not missing, f"no >>> example in the docstring of: {', '.join(missing)}"


def test_api_page_lists_every_public_symbol(html):
    api = (html / "api.html").read_text()
    missing = [
        f"{module_name}.{name}"
        for module_name, name, _ in public_symbols()
        if f'id="{module_name}.{name}"' not in api
    ]
    assert not missing, f"not on the API page: {', '.join(missing)}"


def test_api_page_shows_real_signatures(html):
    api = (html / "api.html").read_text()
    # Flax NNX's metaclass hides __init__: the page shows the constructor's arguments.
    assert "(*args, **kwargs)" not in api
    for anchor in ("lstm_jax.GRU", "lstm_jax.GRUCell", "lstm_jax.RNN", "lstm_jax.LSTMCell"):
        assert "(input_size, hidden_size" in signature_text(api, anchor), anchor
    assert re.search(r"LSTM\(\s*input_size", signature_text(api, "lstm_jax.LSTM"))
    assert "rngs" in signature_text(api, "lstm_jax.LSTM")
    # Linen's internal dataclass fields are not constructor arguments a user passes.
    linen = signature_text(api, "lstm_jax.linen.LSTM")
    assert "input_size" in linen and "parent=" not in linen
    assert "dtype=jnp.float32" in linen
    # Inherited public methods are documented on the class that a user calls.
    for method in ("to_torch_state_dict", "from_torch", "initialize_carry", "stack_params"):
        assert f'id="lstm_jax.LSTM.{method}"' in api, method
    assert 'id="lstm_jax.LSTMCell.to_torch_state_dict"' in api
    # No private bases, no dataclass fields rendered as attributes, no NamedTuple field aliases.
    bases = re.findall(r"Bases: (.*?)</p>", api, re.S)
    assert not [b for b in bases if re.search(r">_\w+<", b)], bases
    assert "alias of" not in api
    assert "Alias for field number" not in api


def test_readme_and_install_pages(html):
    index = (html / "index.html").read_text()
    assert "Quick start" in index and "On a fresh machine" in index
    install = (html / "install.html").read_text()
    for variable in (
        "LSTM_JAX_NATIVE_CPU",
        "LSTM_JAX_NATIVE_THREADS",
        "LSTM_JAX_NATIVE_ISA",
        "LSTM_JAX_CACHE_DIR",
    ):
        assert variable in install, variable
    for extra in ("torch", "train", "experiments", "test", "docs"):
        assert (
            f'<code class="docutils literal notranslate"><span class="pre">{extra}</span>'
            in install
        ), extra


def test_notebooks_are_rendered_with_their_figures(html):
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert (html / "notebooks" / f"{notebook.stem}.html").exists(), notebook.name
    results = (html / "notebooks" / "05_results.html").read_text()
    assert re.search(r'<img[^>]+src="[^"]+\.png"', results), "no figure in 05_results"


def test_a_failing_notebook_cell_fails_the_build(tmp_path):
    """The docs build executes the notebooks and stops at a cell that raises."""
    docs = tmp_path / "docs"
    (docs / "notebooks").mkdir(parents=True)
    (docs / "conf.py").write_text((ROOT / "docs" / "conf.py").read_text())
    (docs / "index.md").write_text("# Index\n\n```{toctree}\nnotebooks/broken\n```\n")
    (docs / "notebooks" / "broken.md").write_text(
        "---\nfile_format: mystnb\nkernelspec:\n  name: python3\n---\n# Broken\n\n"
        "```{code-cell} python\nraise RuntimeError('this cell fails')\n```\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "-q",
            "-b",
            "html",
            str(docs),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "ExecutionError" in log and "broken.md" in log, log
