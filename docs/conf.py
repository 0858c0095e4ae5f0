"""Sphinx configuration: API reference from the docstrings, notebooks executed at small size.

Build (offline): python -m sphinx -W --keep-going -b html docs build/docs

The notebooks are executed during the build (myst-nb) with ``LSTM_JAX_SMALL=1``, which they
read to shrink themselves; a cell that raises fails the build. To iterate on the text alone,
skip them: ``-D nb_execution_mode=off``.
"""

import dataclasses
import functools
import inspect
import os
import re

# Inherited by the notebook kernels that myst-nb starts for this build.
os.environ.setdefault("LSTM_JAX_SMALL", "1")

project = "lstm_jax"
author = "lstm_jax developers"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
]

# --- API reference -------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # shapes and types are documented in the docstrings
autodoc_class_signature = "mixed"  # the constructor's arguments on the class line
# Inherited public methods are documented on each class (LSTM.to_torch_state_dict, ...);
# those of Flax, NamedTuple and the exception hierarchy are not.
_FOREIGN_BASES = (
    "Module,ModuleBase,Pytree,Representable,RNNCellBase,Object,"
    "tuple,object,BaseException,Exception,ArithmeticError,FloatingPointError,"
    "RuntimeError,ValueError"
)
autodoc_default_options = {
    "members": True,
    "inherited-members": _FOREIGN_BASES,
    "show-inheritance": True,
}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = [("Options", "params_style")]  # the options every stack takes by name
napoleon_use_ivar = True  # named-tuple fields are documented once, in "Attributes"

# --- Notebooks -----------------------------------------------------------------------------
nb_execution_mode = "force"  # executed on every build, so the rendered outputs are current
nb_execution_timeout = 600  # seconds per cell
nb_execution_raise_on_error = True  # a cell that raises fails the build
nb_execution_show_tb = True  # and its traceback is printed in the build log
nb_merge_streams = True

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "alabaster"
suppress_warnings = ["myst.header"]


# --- Signatures ----------------------------------------------------------------------------
_DTYPE_REPR = re.compile(r"<class '(jax\.numpy|numpy)\.(\w+)'>")
_LINEN_INTERNAL = ("parent", "name")  # set by Flax Linen, never by a user


def _format(sig: inspect.Signature) -> str:
    """A signature as autodoc shows it: no annotations, readable dtype defaults."""
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    text = str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    return _readable(text)


def _readable(text: str) -> str:
    return _DTYPE_REPR.sub(
        lambda m: ("jnp." if m.group(1) == "jax.numpy" else "np.") + m.group(2), text
    )


def _is_module(obj, base_name: str) -> bool:
    return isinstance(obj, type) and any(
        c.__name__ == "Module" and c.__module__.startswith(base_name) for c in obj.__mro__
    )


def _class_signature(obj) -> str | None:
    """The constructor a user calls, for Flax modules whose metaclass hides it."""
    if _is_module(obj, "flax.nnx"):
        # nnx.Module's metaclass __call__ takes (*args, **kwargs); the arguments are __init__'s.
        sig = inspect.signature(obj.__init__)
        params = list(sig.parameters.values())[1:]  # self
        return _format(sig.replace(parameters=params))
    if _is_module(obj, "flax.linen"):
        sig = inspect.signature(obj)
        params = [p for p in sig.parameters.values() if p.name not in _LINEN_INTERNAL]
        return _format(sig.replace(parameters=params))
    return None


def _process_signature(app, what, name, obj, options, signature, return_annotation):
    if what == "class":
        computed = _class_signature(obj)
        if computed is not None:
            return computed, None
    if signature is not None:
        return _readable(signature), return_annotation
    return None


def _process_bases(app, name, obj, options, bases):
    """Private bases are replaced by their nearest public ancestors."""

    def public(cls):
        if not cls.__name__.startswith("_"):
            return [cls]
        return [p for b in cls.__bases__ if b is not object for p in public(b)]

    resolved = []
    for base in bases:
        for cls in public(base) if isinstance(base, type) else [base]:
            if cls not in resolved:
                resolved.append(cls)
    bases[:] = resolved or [object]
    if bases == [object]:
        bases.clear()


@functools.cache
def _linen_fields() -> frozenset[str]:
    """Dataclass fields of the Linen modules: constructor arguments, not attributes."""
    import lstm_jax.linen

    fields = set(_LINEN_INTERNAL)
    for name in lstm_jax.linen.__all__:
        obj = getattr(lstm_jax.linen, name)
        if dataclasses.is_dataclass(obj):
            fields.update(f.name for f in dataclasses.fields(obj))
    return frozenset(fields)


def _skip_member(app, what, name, obj, skip, options):
    if what != "class":
        return None
    # NamedTuple fields ("Alias for field number 0"): documented once, in "Attributes".
    if type(obj).__name__ == "_tuplegetter":
        return True
    # Linen dataclass fields with a class default (param_dtype=jnp.float32) would otherwise
    # render as "alias of float32"; they are constructor arguments, shown in the signature.
    if name in _linen_fields() and not (
        inspect.isfunction(obj) or isinstance(obj, property | classmethod | staticmethod)
    ):
        return True
    return None


def _process_docstring(app, what, name, obj, options, lines):
    # A constant's value has its type's docstring (dict, float, CellDef): not the constant's.
    if what == "data" and obj.__doc__ is not None and obj.__doc__ == type(obj).__doc__:
        lines.clear()


def setup(app):
    app.connect("autodoc-process-signature", _process_signature)
    app.connect("autodoc-process-bases", _process_bases)
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-docstring", _process_docstring)
