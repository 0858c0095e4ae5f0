"""Packaging: the declared floors, the extras, the import errors and the built wheel.

- The floors in ``pyproject.toml`` equal the ``==`` pins of ``.ci/floors.txt``, which CI
  installs to run the core tests at exactly those versions.
- Every third-party module that the library, its training pieces and ``experiments/``
  import is provided by the dependencies or the extra that covers that code.
- ``import lstm_jax.train`` without the ``train`` extra names the missing module and the
  command that installs it; the core library and ``lstm_jax.data`` need no extra.
- The wheel ships ``py.typed``, the native kernel's source and the license, declares its
  license as an SPDX expression, and holds neither ``experiments/`` nor ``tests/``.

The checks that read the repository's files skip where there is none (the floors
environment of CI runs a copy of the tests against the installed wheel).
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
in_repository = pytest.mark.skipif(
    not PYPROJECT.exists(), reason="needs the repository's pyproject.toml (not in a test copy)"
)

# Modules that the code imports, by the distribution that provides them.
MODULE_PACKAGES = {
    "jax": "jax",
    "jaxlib": "jax",
    "flax": "flax",
    "numpy": "numpy",
    "optax": "optax",
    "orbax": "orbax-checkpoint",
    "tensorstore": "tensorstore",
    "etils": "etils",
    "tqdm": "tqdm",
    "tensorboardX": "tensorboardx",
    "torch": "torch",
    "ml_collections": "ml-collections",
    "absl": "absl-py",
    "matplotlib": "matplotlib",
    "mnist1d": "mnist1d",
}


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement string (PEP 503)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def _floors(requirements) -> dict[str, str]:
    """``name: version`` of the ``>=version`` of each requirement (every dependency has
    one), less this package's own extras."""
    floors = {}
    for requirement in requirements:
        spec = requirement.split(";")[0].strip()
        if _name(spec) == "lstm-jax":  # an extra of this package
            continue
        found = re.findall(r">=\s*([0-9][0-9A-Za-z.]*)", spec)
        assert len(found) == 1, f"{requirement!r} should have one floor `>=version`"
        floors[_name(spec)] = found[0]
    return floors


@in_repository
def test_floors_in_pyproject_equal_the_pins_ci_installs():
    project = _project()
    extras = project["optional-dependencies"]
    declared = _floors(project["dependencies"] + extras["train"] + extras["torch"])
    pins = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f".ci/floors.txt: {line!r} should be a pin `name==version`"
            pins[_name(name)] = version.strip()
    assert pins == declared


@in_repository
def test_every_requirement_has_a_floor():
    project = _project()
    for requirements in [project["dependencies"], *project["optional-dependencies"].values()]:
        _floors(requirements)  # asserts that each has one


def _third_party_imports(paths) -> set[str]:
    """Top-level names of the modules imported anywhere in ``paths`` (lazy imports in
    functions included), less the standard library and this repository's packages."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    own = {"lstm_jax", "experiments"}
    return {n for n in names if n not in sys.stdlib_module_names and n not in own}


def _packages(paths) -> set[str]:
    modules = _third_party_imports(paths)
    unknown = modules - set(MODULE_PACKAGES)
    assert not unknown, (
        f"imported modules of no known package: {sorted(unknown)}; add the package to the "
        "extra that covers the code (pyproject.toml, .ci/floors.txt) and to MODULE_PACKAGES"
    )
    return {_name(MODULE_PACKAGES[m]) for m in modules}


@in_repository
def test_each_extra_provides_what_its_code_imports():
    project = _project()
    extras = project["optional-dependencies"]
    core = set(_floors(project["dependencies"]))
    torch = set(_floors(extras["torch"]))  # imported only on request (as_tensors=True)
    train = core | set(_floors(extras["train"]))
    experiments = train | set(_floors(extras["experiments"]))
    assert "lstm_jax[train]" in extras["experiments"]

    package = ROOT / "lstm_jax"
    training = [package / "train.py", *sorted((package / "_src" / "train").rglob("*.py"))]
    data = [package / "data.py", *sorted((package / "_src" / "data").rglob("*.py"))]
    rest = [p for p in sorted(package.rglob("*.py")) if p not in training and p not in data]
    assert _packages(rest) <= core | torch
    assert _packages(data) <= core
    assert _packages(training) <= train
    assert _packages(sorted((ROOT / "experiments").rglob("*.py"))) <= experiments | torch


def _import_with_blocked(statement: str, blocked: list[str]) -> dict:
    """Runs ``statement`` in a fresh interpreter in which ``blocked`` modules (and their
    submodules) cannot be imported; returns what it raised, if anything."""
    script = textwrap.dedent(
        f"""
        import json, sys

        BLOCKED = {blocked!r}

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Blocker())
        try:
            {statement}
        except ModuleNotFoundError as error:
            cause = error.__cause__
            print("RESULT" + json.dumps({{
                "message": str(error), "name": error.name,
                "cause": None if cause is None else [type(cause).__name__, cause.name],
            }}))
        else:
            print("RESULT" + json.dumps(None))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent,  # not the repository root: the installed package
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


# optax is not here: flax imports it, so without it not even `import lstm_jax` works.
@pytest.mark.parametrize(
    "blocked, package",
    [("tqdm", "tqdm"), ("orbax", "orbax-checkpoint"), ("tensorstore", "tensorstore")],
)
def test_train_without_its_extra_names_the_module_and_the_install_command(blocked, package):
    raised = _import_with_blocked("import lstm_jax.train", [blocked])
    assert raised is not None, "import lstm_jax.train succeeded with " + blocked + " blocked"
    assert 'pip install "lstm_jax[train]"' in raised["message"]
    assert f"'{blocked}" in raised["message"] and package in raised["message"]
    assert raised["name"].split(".")[0] == blocked
    assert raised["cause"][0] == "ModuleNotFoundError"  # the original error, chained


def test_core_and_data_import_without_the_extras():
    extras = ["tqdm", "orbax", "tensorstore", "tensorboardX", "tensorboard", "torch"]
    extras += ["ml_collections", "matplotlib", "mnist1d"]
    statement = "import lstm_jax, lstm_jax.functional, lstm_jax.linen, lstm_jax.data"
    assert _import_with_blocked(statement, extras) is None


def _build_wheel(tmp_path: Path) -> Path:
    """Builds the wheel from a copy of the files it is made of (so that no ``build/`` or
    ``*.egg-info`` of the checkout goes in, or is left behind)."""
    setuptools = pytest.importorskip("setuptools", reason="needs setuptools to build")
    if tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (77, 0):
        pytest.skip(f"needs setuptools >= 77 to build (PEP 639), have {setuptools.__version__}")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "lstm_jax", source / "lstm_jax", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run(
        [*command, "--no-index", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = out.glob("lstm_jax-*.whl")
    return wheel


@in_repository
def test_the_wheel_ships_types_kernel_source_and_license_and_no_tests(tmp_path):
    start = time.perf_counter()
    wheel = _build_wheel(tmp_path)
    built_in = time.perf_counter() - start
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = archive.read(metadata).decode()
    assert "lstm_jax/py.typed" in names
    assert "lstm_jax/_src/native/lstm_cpu.cc" in names
    assert any(re.fullmatch(r"lstm_jax-[^/]+\.dist-info/licenses/LICENSE", n) for n in names)
    assert "Apache License" in archive_text(wheel, "licenses/LICENSE")
    top = {n.split("/")[0] for n in names}
    assert top == {"lstm_jax", metadata.split("/")[0]}, top  # no experiments/, tests/
    headers = meta.split("\n\n")[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers
    assert "License-File: LICENSE" in headers
    assert not any(h.startswith("License: ") for h in headers)  # the deprecated field
    assert "Requires-Python: >=3.11" in headers
    project = _project()

    def field(key):
        return [h.removeprefix(key + ": ") for h in headers if h.startswith(key + ": ")]

    assert set(project["dependencies"]) <= set(field("Requires-Dist"))
    assert set(field("Provides-Extra")) == set(project["optional-dependencies"])
    assert built_in < 60, f"building the wheel took {built_in:.0f} s"


def archive_text(wheel: Path, suffix: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(suffix)]
        return archive.read(name).decode()


@in_repository
def test_readme_shows_the_commands_ci_runs():
    """The README's "Run the tests" block is the first step of .ci/run, line for line."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("Run the tests", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip()]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    at = ci.index(commands[0])
    assert ci[at : at + len(commands)] == commands
    # Installing for the main job takes the experiments extra (python -m experiments.run).
    for line in readme.splitlines():
        if "experiments.run" in line and "pip install" in line:
            assert '".[experiments]"' in line, line
