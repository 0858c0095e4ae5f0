"""Differences between the jax, jaxlib and flax releases lstm_jax supports, in one place.

The floors are those of ``pyproject.toml`` (and ``.ci/floors.txt``, which CI installs to
run the core tests at exactly those versions). Everything that depends on which release is
installed is decided here, and the rest of the library imports it from here:

- :func:`vma` and :func:`pvary`: the manual mesh axes a value varies over inside
  ``jax.shard_map`` (``aval.manual_axis_type`` from jax 0.10, ``aval.vma`` before) and
  marking a value as varying over more of them (``lax.pcast`` from jax 0.8,
  ``lax.pvary`` before).
- :func:`make_user_context`: ``jax.make_user_context`` where jax has it, else a
  ``contextvars`` variable with the same interface.
- :func:`dot_general`, :func:`einsum`, :func:`matmul`: products with a
  ``preferred_element_type``. XLA:CPU before jaxlib 0.8.1 fails at run time on
  bfloat16 (or float16) products accumulated in float32 where an operand has more than
  two dimensions ("Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32",
  or inside a loop "unsupported operand type BF16 in op dot"); there, on CPU only, the
  operands are cast to the accumulation dtype first. A product of two bfloat16 (or
  float16) numbers is exact in float32, so the result is the same product accumulated
  in float32 (up to the order of the sums); on other platforms nothing changes.
- :func:`require_extra`: the import check of an optional extra, whose error names the
  missing module and the ``pip install`` command that brings it.
- :func:`reshard`: ``jax.sharding.reshard``, with a concrete array placed eagerly by
  ``jax.device_put``: jax 0.7's eager ``reshard`` compiles on the array's own devices and
  fails for a mesh of more ("cannot reshape array of size 1 into shape (2,2)").
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import re

import jax
import jax.numpy as jnp
import jaxlib
from jax import lax


def version_tuple(version: str) -> tuple[int, ...]:
    """The leading release numbers of a version string.

    Example:
      >>> version_tuple("0.7.2"), version_tuple("0.10.0rc1"), version_tuple("2.0.0.dev0")
      ((0, 7, 2), (0, 10, 0), (2, 0, 0))
    """
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


JAX_VERSION = version_tuple(jax.__version__)
JAXLIB_VERSION = version_tuple(jaxlib.__version__)

# XLA:CPU runs narrow-float products accumulated in a wider dtype from jaxlib 0.8.1 on.
_CPU_NARROW_PRODUCTS = JAXLIB_VERSION >= (0, 8, 1)


# -- shard_map: varying manual axes ------------------------------------------------------


def vma(x) -> frozenset:
    """The manual mesh axes ``x`` varies over (empty outside ``jax.shard_map``).

    Example:
      >>> vma(jnp.ones(2))
      frozenset()
    """
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.10
    if manual is not None:
        return manual.varying
    return getattr(aval, "vma", frozenset())


def pvary(x: jax.Array, axes: frozenset) -> jax.Array:
    """``x`` marked as varying over the manual mesh axes ``axes`` too (inside
    ``jax.shard_map``); ``x`` itself where it already varies over all of them."""
    missing = tuple(sorted(axes - vma(x)))
    if not missing:
        return x
    if hasattr(lax, "pcast"):  # jax >= 0.8
        return lax.pcast(x, missing, to="varying")
    return lax.pvary(x, missing)


# -- a context that is part of jit's cache key -------------------------------------------


class _ContextVarContext:
    """``jax.make_user_context``'s interface on a ``contextvars`` variable, for jax
    versions without it (where a function already traced is not traced again)."""

    def __init__(self, default_value):
        self._var = contextvars.ContextVar("lstm_jax_trace_context", default=default_value)

    @property
    def value(self):
        return self._var.get()

    @contextlib.contextmanager
    def __call__(self, value):
        token = self._var.set(value)
        try:
            yield
        finally:
            self._var.reset(token)


def make_user_context(default_value):
    """``jax.make_user_context(default_value)`` where jax has it, else a
    ``contextvars``-based context with the same interface (``with ctx(v):``,
    ``ctx.value``)."""
    make = getattr(jax, "make_user_context", None)
    return _ContextVarContext(default_value) if make is None else make(default_value)


# -- products accumulated in a wider dtype ----------------------------------------------


def _needs_upcast(operands, preferred_element_type) -> bool:
    if _CPU_NARROW_PRODUCTS or preferred_element_type is None:
        return False
    wide = jnp.dtype(preferred_element_type)
    if not jnp.issubdtype(wide, jnp.floating):
        return False
    return any(
        jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < jnp.finfo(wide).bits
        for x in operands
    )


def _product(fn, operands, preferred_element_type):
    """``fn(*operands)``; before jaxlib 0.8.1, on CPU, ``fn`` of the operands cast to
    ``preferred_element_type`` where they are narrower floats."""
    if not _needs_upcast(operands, preferred_element_type):
        return fn(*operands)
    wide = jnp.dtype(preferred_element_type)

    def upcast(*xs):
        return fn(*(x.astype(wide) if jnp.issubdtype(x.dtype, jnp.floating) else x for x in xs))

    return lax.platform_dependent(*operands, cpu=upcast, default=fn)


def dot_general(lhs, rhs, dimension_numbers, *, preferred_element_type=None, **kwargs):
    """``jax.lax.dot_general``, with narrow floats accumulated in
    ``preferred_element_type`` on every supported jaxlib (see the module docstring).

    Example:
      >>> x = jnp.ones((2, 3, 4), jnp.bfloat16)
      >>> dot_general(x, jnp.ones((5, 4), jnp.bfloat16), (((2,), (1,)), ((), ())),
      ...             preferred_element_type=jnp.float32).dtype
      dtype('float32')
    """

    def fn(a, b):
        return lax.dot_general(
            a, b, dimension_numbers, preferred_element_type=preferred_element_type, **kwargs
        )

    return _product(fn, (lhs, rhs), preferred_element_type)


def einsum(spec: str, *operands, preferred_element_type=None, **kwargs):
    """``jax.numpy.einsum``, with narrow floats accumulated in ``preferred_element_type``
    on every supported jaxlib (see the module docstring).

    Example:
      >>> x = jnp.ones((2, 3, 4), jnp.bfloat16)
      >>> einsum("tbi,gi->tbg", x, jnp.ones((5, 4), jnp.bfloat16),
      ...        preferred_element_type=jnp.float32).shape
      (2, 3, 5)
    """

    def fn(*xs):
        return jnp.einsum(spec, *xs, preferred_element_type=preferred_element_type, **kwargs)

    return _product(fn, operands, preferred_element_type)


def matmul(a, b, *, preferred_element_type=None):
    """``jax.numpy.matmul``, with narrow floats accumulated in ``preferred_element_type``
    on every supported jaxlib (see the module docstring).

    Example:
      >>> matmul(jnp.ones((2, 3), jnp.bfloat16), jnp.ones((3, 4), jnp.bfloat16),
      ...        preferred_element_type=jnp.float32).dtype
      dtype('float32')
    """

    def fn(x, y):
        return jnp.matmul(x, y, preferred_element_type=preferred_element_type)

    return _product(fn, (a, b), preferred_element_type)


# -- resharding -------------------------------------------------------------------------


def reshard(x: jax.Array, sharding: jax.sharding.NamedSharding) -> jax.Array:
    """``x`` with ``sharding`` in its type: ``jax.sharding.reshard`` where ``x`` is traced,
    ``jax.device_put`` where it is a concrete array and ``sharding`` is on a concrete mesh
    (the eager ``reshard`` of jax 0.7 fails there).

    Example:
      >>> mesh = jax.make_mesh((1,), ("data",))
      >>> reshard(jnp.ones(2), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())).shape
      (2,)
    """
    concrete = isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)
    if concrete and isinstance(sharding.mesh, jax.sharding.Mesh):
        return jax.device_put(x, sharding)
    return jax.sharding.reshard(x, sharding)


# -- optional extras ---------------------------------------------------------------------


def require_extra(extra: str, modules: dict[str, str], *, what: str) -> None:
    """Imports each of ``modules`` (module name to the package that provides it: the
    import-time needs of ``what``); the first one missing raises a ``ModuleNotFoundError``
    that names the module, its package, what needs it and the command that installs the
    extra, chained to the original error.

    Example:
      >>> require_extra("train", {"json": "json"}, what="lstm_jax.train")  # present
      >>> try:
      ...     require_extra("train", {"no_such_module": "no-such"}, what="lstm_jax.train")
      ... except ModuleNotFoundError as error:
      ...     message, name = str(error), error.name
      >>> print(message)
      lstm_jax.train needs the module 'no_such_module' (package no-such), which is not
      installed: pip install "lstm_jax[train]"
      >>> name
      'no_such_module'
    """
    for module, package in modules.items():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            missing = error.name or module
            if module == missing or module.startswith(missing + "."):
                missing, needed = module, f"the module {module!r} (package {package})"
            else:  # a module that the package itself imports
                needed = f"the module {missing!r} (imported by {module!r}, package {package})"
            raise ModuleNotFoundError(
                f'{what} needs {needed}, which is not installed: pip install "lstm_jax[{extra}]"',
                name=missing,
            ) from error
