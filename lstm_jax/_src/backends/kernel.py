"""What every kernel is: an object that says what it supports and runs one plan.

A kernel answers for itself. :meth:`Kernel.supports` returns why it cannot run a
configuration (``None`` when it can); :meth:`Kernel.run_layer` (or
:meth:`Kernel.run_stack` for a kernel that runs whole stacks, like cuDNN) runs it. What a
layer's run needs besides its parameters, input and state is one frozen
:class:`LayerPlan`, built once per stack from the :class:`RecurrentOptions` and refined
per layer and direction, so the layer signature is written once, here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import jax

from lstm_jax._src.cells import CellDef


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """How one recurrent stack runs, and, refined per layer, how one layer runs.

    The stack-wide fields are fixed once from the options; :meth:`for_direction` adds a
    layer's direction and the masks drawn for it.

    Attributes:
      dtype: the computation dtype (the parameters' and the input's).
      unroll: loop unroll factor.
      checkpoint: ``None``, or the chunk length of activation checkpointing over time.
      dropout: inter-layer or input dropout is drawn (a whole-stack kernel must draw it).
      recurrent_dropout: each layer and direction gets a ``recurrent_mask``.
      zoneout: each layer and direction gets zoneout weights.
      seq_lengths: optional int32 ``[batch]``, each in ``1..time``; may be traced.
      reverse: run from each row's last valid step to the first.
      recurrent_mask: optional ``[batch, H_out]`` multiplier of ``h_{t-1}`` in
        ``W_hh h_{t-1}`` (variational dropout), the same at every step.
      zoneout_weights: optional state pytree with leaves ``[time, batch, size]``: the
        weight of the old state in each new state.

    Example:
      >>> import jax.numpy as jnp
      >>> plan = LayerPlan(jnp.dtype(jnp.float32), unroll=2)
      >>> plan.for_direction(reverse=True).reverse, plan.unroll
      (True, 2)
    """

    dtype: Any
    unroll: int = 1
    checkpoint: int | None = None
    dropout: bool = False
    recurrent_dropout: bool = False
    zoneout: bool = False
    seq_lengths: jax.Array | None = None
    reverse: bool = False
    recurrent_mask: jax.Array | None = None
    zoneout_weights: Any | None = None

    def direction_options(self) -> dict[str, Any]:
        """This direction's lengths, direction and recurrent mask, as the keyword
        arguments every layer function shares (:func:`lstm_jax._src.scan.run_layer`'s)."""
        return {
            "seq_lengths": self.seq_lengths,
            "reverse": self.reverse,
            "recurrent_mask": self.recurrent_mask,
        }

    def for_direction(
        self, *, reverse: bool, recurrent_mask: jax.Array | None = None, zoneout_weights=None
    ) -> LayerPlan:
        """This plan for one layer and direction, with the masks drawn for it."""
        return dataclasses.replace(
            self, reverse=reverse, recurrent_mask=recurrent_mask, zoneout_weights=zoneout_weights
        )


class Kernel:
    """One way of running recurrent layers; subclasses set the class attributes.

    Attributes:
      name: the ``backend=`` value that asks for it.
      auto_platforms: the platforms (``jax.default_backend()``) on which ``"auto"``
        may pick it, where it supports the configuration.
      auto_note: why ``"auto"`` does not pick it elsewhere (its measured standing).
      runs_stack: it runs whole stacks (:meth:`run_stack`), not one layer at a time.
    """

    name: ClassVar[str]
    auto_platforms: ClassVar[tuple[str, ...]] = ()
    auto_note: ClassVar[str] = ""
    runs_stack: ClassVar[bool] = False

    def supports(
        self, cell: CellDef, params: Sequence[Sequence[Any]], plan: LayerPlan
    ) -> str | None:
        """Why this kernel cannot run ``params[layer][direction]`` of ``cell`` under
        ``plan``, or ``None`` when it can."""
        raise NotImplementedError

    def run_layer(
        self, cell: CellDef, params: Any, x: jax.Array, state: Any, plan: LayerPlan
    ) -> tuple[jax.Array, Any]:
        """One layer in one direction: ``x`` ``[time, batch, input_size]`` and the
        state's leaves ``[batch, size]`` give ``(outputs [time, batch, H_out], final)``,
        with the semantics of :func:`lstm_jax._src.scan.run_layer`."""
        raise NotImplementedError

    def run_stack(
        self,
        cell: CellDef,
        params: Sequence[Sequence[Any]],
        x: jax.Array,
        states: Any,
        plan: LayerPlan,
    ) -> tuple[jax.Array, Any]:
        """A whole stack, for kernels with ``runs_stack``; see
        :func:`lstm_jax._src.stack.run_stack` for the contract."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<kernel {self.name!r}>"
