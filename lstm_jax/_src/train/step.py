"""The train state, a jitted train step (loss, gradient clipping, optax update) and eval.

The NNX model is split once into a static ``graphdef``, its ``nnx.Param`` state (what
the optimizer updates) and the rest (its RNG streams, which advance with dropout). The
step is a pure function of the :class:`TrainState`, so it can be jitted with explicit
shardings, checkpointed whole, and resumed bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from tqdm.auto import tqdm

from lstm_jax._src.train import metrics as metrics_lib
from lstm_jax._src.train import sharding as sharding_lib

_EVAL_LINE_EVERY_S = 60.0  # a long evaluation's plain progress lines, in seconds

LossFn = Callable[..., tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped.

    Attributes:
      step: int32 scalar, the number of updates done (also the data position).
      params: the model's ``nnx.Param`` state.
      rest: the model's other state (RNG key and counter of each stream).
      opt_state: the optax state.
      carry: the recurrent state carried between batches (truncated BPTT), or ``None``.

    Example:
      >>> from flax import nnx
      >>> from lstm_jax import LSTM, train
      >>> model = LSTM(2, 4, rngs=nnx.Rngs(0))
      >>> _, state = train.create_train_state(model, train.make_optimizer())
      >>> int(state.step), state.carry, int(state.replace(step=state.step + 1).step)
      (0, None, 1)
    """

    step: jax.Array
    params: nnx.State
    rest: nnx.State
    opt_state: optax.OptState
    carry: Any = None


def make_schedule(
    learning_rate: float = 1e-3,
    *,
    warmup_steps: int = 0,
    decay_steps: int = 0,
    decay_rate: float = 1.0,
    decay_begin: int = 0,
    decay_every: int = 0,
) -> optax.Schedule:
    """The learning-rate schedule of :func:`make_optimizer`, built from optax's schedules.

    Two schedules: a cosine decay (``decay_steps``, after an optional linear warm-up), or
    a step decay (``decay_every``), Zaremba et al. (2014)'s: the learning rate is kept for
    ``decay_begin`` steps, then multiplied by ``decay_rate`` at the start of every block of
    ``decay_every`` steps, i.e. ``lr * decay_rate ** max(0, (step - decay_begin) //
    decay_every + 1)``. With ``decay_begin = 4 * E`` and ``decay_every = E`` (``E`` steps an
    epoch) the rate is ``lr`` for epochs 1-4 and ``lr * decay_rate ** (k - 4)`` in epoch
    ``k > 4``. The step decay is ``optax.exponential_decay(staircase=True)`` joined after a
    constant by ``optax.join_schedules``; ``step`` counts updates from 0.

    Args:
      learning_rate: peak learning rate.
      warmup_steps: linear warm-up from 0.
      decay_steps: if > 0, cosine decay to 0 over this many steps after warm-up.
      decay_rate: the step decay's factor (with ``decay_every > 0``).
      decay_begin: steps at the full rate before the first step decay.
      decay_every: if > 0, a step decay every this many steps after ``decay_begin``.

    Returns:
      ``step -> learning rate``.

    Raises:
      ValueError: a step decay combined with warm-up or a cosine decay, or a negative
        ``decay_begin``.

    Example:
      >>> sched = make_schedule(1.0, decay_rate=0.5, decay_begin=4, decay_every=2)
      >>> [float(sched(s)) for s in (0, 3, 4, 5, 6)]
      [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    if decay_every > 0:
        if decay_steps > 0 or warmup_steps > 0:
            raise ValueError(
                "a step decay (decay_every > 0) does not combine with warmup_steps or "
                f"decay_steps, got warmup_steps={warmup_steps}, decay_steps={decay_steps}"
            )
        if decay_begin < 0:
            raise ValueError(f"decay_begin must be >= 0, got {decay_begin}")
        decayed = optax.exponential_decay(
            learning_rate * decay_rate, decay_every, decay_rate, staircase=True
        )
        return optax.join_schedules(
            [optax.constant_schedule(learning_rate), decayed], [decay_begin]
        )
    if decay_steps > 0:
        return optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, max(warmup_steps, 1), warmup_steps + decay_steps
        )
    if warmup_steps > 0:
        return optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.constant_schedule(learning_rate)


_OPTIMIZERS = {
    "adam": lambda lr, weight_decay, momentum: optax.adam(lr),
    "adamw": lambda lr, weight_decay, momentum: optax.adamw(lr, weight_decay=weight_decay),
    "sgd": lambda lr, weight_decay, momentum: optax.sgd(lr, momentum=momentum or None),
    "rmsprop": lambda lr, weight_decay, momentum: optax.rmsprop(lr),
}


def make_optimizer(
    name: str = "adam",
    learning_rate: float = 1e-3,
    *,
    clip_norm: float | None = 1.0,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    warmup_steps: int = 0,
    decay_steps: int = 0,
    decay_rate: float = 1.0,
    decay_begin: int = 0,
    decay_every: int = 0,
) -> optax.GradientTransformation:
    """An optax optimizer with global-norm gradient clipping and an optional schedule.

    The schedule is :func:`make_schedule`'s. The optimizer is wrapped in
    ``optax.inject_hyperparams``, so the learning rate applied by the last update sits in
    the optimizer state, where :func:`~lstm_jax.train.fit` reads it
    (:func:`applied_learning_rate`) to log it.

    Args:
      name: ``"adam"``, ``"adamw"``, ``"sgd"`` or ``"rmsprop"``.
      learning_rate: peak learning rate.
      clip_norm: clip gradients to this global norm first (``None``: no clipping).
      weight_decay: AdamW's decoupled weight decay.
      momentum: SGD's momentum.
      warmup_steps, decay_steps, decay_rate, decay_begin, decay_every: the learning-rate
        schedule, as in :func:`make_schedule`.

    Raises:
      ValueError: an unknown ``name``, or a schedule :func:`make_schedule` rejects.

    Example:
      >>> opt = make_optimizer("adam", 1e-3, clip_norm=1.0)
      >>> params = {"w": jnp.ones((2,), jnp.float32)}
      >>> updates, state = opt.update(
      ...     {"w": jnp.full((2,), 100.0, jnp.float32)}, opt.init(params))
      >>> [round(float(u), 6) for u in updates["w"]]  # clipped to norm 1, then Adam's step
      [-0.001, -0.001]
      >>> float(applied_learning_rate(state))  # float32
      0.0010000000474974513
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be adam, adamw, sgd or rmsprop, got {name!r}")
    schedule = make_schedule(
        learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=decay_steps,
        decay_rate=decay_rate,
        decay_begin=decay_begin,
        decay_every=decay_every,
    )
    factory = _OPTIMIZERS[name]
    opt = optax.inject_hyperparams(
        lambda learning_rate: factory(learning_rate, weight_decay, momentum),
        hyperparam_dtype=jnp.float32,
    )(learning_rate=schedule)
    if clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
    return standard_promotion(opt)


def applied_learning_rate(opt_state: optax.OptState) -> jax.Array | None:
    """The learning rate of the last update, from a state of ``optax.inject_hyperparams``.

    Args:
      opt_state: an optax state.

    Returns:
      The float32 scalar ``learning_rate`` hyperparameter, or ``None`` if the state holds
      none (an optimizer built without ``optax.inject_hyperparams``).

    Example:
      >>> opt = make_optimizer("sgd", 0.5)
      >>> float(applied_learning_rate(opt.init({"w": jnp.zeros(2, jnp.float32)})))
      0.5
      >>> applied_learning_rate(optax.sgd(0.5).init({"w": jnp.zeros(2, jnp.float32)})) is None
      True
    """
    return optax.tree_utils.tree_get(
        opt_state,
        "learning_rate",
        default=None,
        filtering=lambda _, value: isinstance(value, jax.Array),  # not the schedule's state
    )


def standard_promotion(opt: optax.GradientTransformation) -> optax.GradientTransformation:
    """Runs ``opt`` under JAX's standard dtype promotion.

    Optax mixes Python floats with int32 step counts (Adam's bias correction), which
    ``jax_numpy_dtype_promotion="strict"`` rejects; this keeps strict promotion usable
    for the model code around it.
    """

    def init(params):
        with jax.numpy_dtype_promotion("standard"):
            return opt.init(params)

    def update(updates, state, params=None):
        with jax.numpy_dtype_promotion("standard"):
            return opt.update(updates, state, params)

    return optax.GradientTransformation(init, update)


def create_train_state(
    model: nnx.Module, optimizer: optax.GradientTransformation, carry: Any = None
) -> tuple[nnx.GraphDef, TrainState]:
    """Splits ``model`` and initialises the optimizer: ``(graphdef, state)`` at step 0.

    ``state`` holds ``model``'s own arrays, not copies, and the train step donates them:
    after the first step read the model through ``state`` (``nnx.merge(graphdef,
    state.params, state.rest)``), not through ``model``, whose arrays may be deleted.

    Example:
      >>> import lstm_jax
      >>> model = lstm_jax.LSTM(2, 4, rngs=nnx.Rngs(0))
      >>> graphdef, state = create_train_state(model, make_optimizer())
      >>> int(state.step), sorted(nnx.to_pure_dict(state.params))[:2]
      (0, ['bias_hh_l0', 'bias_ih_l0'])
    """
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=standard_promotion(optimizer).init(params),
        carry=carry,
    )
    return graphdef, state


def state_shardings(state: TrainState, mesh: Mesh) -> TrainState:
    """Shardings for a train state: all replicated but the carry, split on its batch axis."""
    rep = sharding_lib.replicated(mesh)
    shardings = jax.tree.map(lambda _: rep, state)
    carry = None if state.carry is None else sharding_lib.carry_sharding(mesh, state.carry)
    return shardings.replace(carry=carry)


def place_state(state: TrainState, mesh: Mesh) -> TrainState:
    """Puts a train state on ``mesh`` with :func:`state_shardings`.

    Example:
      >>> from flax import nnx
      >>> from lstm_jax import LSTM, train
      >>> model = LSTM(2, 4, rngs=nnx.Rngs(0))
      >>> _, state = train.create_train_state(model, train.make_optimizer())
      >>> train.place_state(state, train.make_mesh()).step.sharding.is_fully_replicated
      True
    """
    return sharding_lib.put_global(state, state_shardings(state, mesh))


def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    loss_fn: LossFn,
    state: TrainState,
    mesh: Mesh,
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """The jitted ``train_step(state, batch) -> (state, metrics)``.

    One step computes ``loss_fn`` and its gradient, clips and applies the optax update
    (clipping is part of ``optimizer``, see :func:`make_optimizer`), carries the
    recurrent state (gradient stopped) and adds ``grad_norm`` (before clipping) to the
    metrics. Parameters stay replicated and the batch sharded on ``mesh``; the input
    state's buffers are donated.

    Args:
      graphdef: from :func:`create_train_state`.
      optimizer: the optax transformation the state was created with.
      loss_fn: ``loss_fn(model, batch, carry) -> (loss, (metrics, carry))``.
      state: a state of the right structure (only its structure is used).
      mesh: the device mesh.

    Example:
      >>> from flax import nnx
      >>> from lstm_jax import data, train
      >>> model = train.SequenceRegressor("lstm", 2, 4, rngs=nnx.Rngs(0))
      >>> optimizer, mesh = train.make_optimizer("adam", 1e-2), train.make_mesh()
      >>> graphdef, state = train.create_train_state(model, optimizer)
      >>> step = train.make_train_step(graphdef, optimizer, train.regression_loss, state, mesh)
      >>> batch = data.SyntheticTask("adding", batch_size=8, length=5).batch(0)
      >>> state, metrics = step(train.place_state(state, mesh), train.shard_batch(batch, mesh))
      >>> int(state.step), sorted(metrics)
      (1, ['grad_norm', 'loss'])
    """
    shardings = state_shardings(state, mesh)
    rep = sharding_lib.replicated(mesh)
    optimizer = standard_promotion(optimizer)

    def train_step(state: TrainState, batch):
        model = nnx.merge(graphdef, state.params, state.rest)
        # nnx.value_and_grad (not jax's) so that dropout may advance the model's RNG
        # streams inside the differentiated function; only the nnx.Param state is
        # differentiated.
        (_, (metrics, carry)), grads = nnx.value_and_grad(
            lambda m: loss_fn(m, batch, state.carry),
            argnums=nnx.DiffState(0, nnx.Param),
            has_aux=True,
        )(model)
        _, _, rest = nnx.split(model, nnx.Param, ...)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
        new_state = state.replace(
            step=state.step + jnp.ones((), jnp.int32),
            params=params,
            rest=rest,
            opt_state=opt_state,
            carry=jax.lax.stop_gradient(carry),
        )
        return new_state, metrics

    return jax.jit(train_step, out_shardings=(shardings, rep), donate_argnums=0)


def make_eval_step(graphdef: nnx.GraphDef, loss_fn: LossFn, mesh: Mesh):
    """The jitted ``eval_step(params, rest, carry, batch) -> (metrics, carry)``.

    ``graphdef`` should come from a model in evaluation mode (``model.eval()``), so that
    dropout is off.

    Example:
      >>> from flax import nnx
      >>> from lstm_jax import data, train
      >>> model = train.SequenceRegressor("lstm", 2, 4, rngs=nnx.Rngs(0))
      >>> _, state = train.create_train_state(model, train.make_optimizer())
      >>> model.eval()
      >>> eval_step = train.make_eval_step(nnx.graphdef(model), train.regression_loss,
      ...                                  train.make_mesh())
      >>> batch = data.SyntheticTask("adding", batch_size=8, length=5).batch(0)
      >>> metrics, carry = eval_step(state.params, state.rest, None, batch)
      >>> sorted(metrics), carry
      (['loss'], None)
    """
    rep = sharding_lib.replicated(mesh)

    def eval_step(params, rest, carry, batch):
        model = nnx.merge(graphdef, params, rest)
        _, (metrics, carry) = loss_fn(model, batch, carry)
        return metrics, carry

    return jax.jit(eval_step, out_shardings=(rep, None))


def evaluate(
    eval_step,
    state: TrainState,
    batches: Iterable[dict[str, np.ndarray]],
    mesh: Mesh,
    carry: Any = None,
    *,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, float]:
    """Averages ``eval_step``'s metrics over ``batches``' rows, carrying the state.

    Args:
      eval_step: from :func:`make_eval_step`.
      state: the train state whose parameters are evaluated.
      batches: host batches, in order (for a language model, consecutive windows).
      mesh: the device mesh the batches are sharded over.
      carry: the initial recurrent state (zeros for a language model), or ``None``.
      progress: report progress: a transient tqdm bar in a terminal or Jupyter; where
        stdout is not a terminal (a scheduler's log file), a plain line with the result
        (and one every minute of a long evaluation) instead.
      desc: the label of the bar or the lines.

    Returns:
      The mean of each metric, as Python floats.

    Raises:
      ValueError: ``batches`` is empty.

    Example:
      >>> from flax import nnx
      >>> from lstm_jax import data, train
      >>> model = train.SequenceRegressor("lstm", 2, 4, rngs=nnx.Rngs(0))
      >>> _, state = train.create_train_state(model, train.make_optimizer())
      >>> model.eval()
      >>> mesh = train.make_mesh()
      >>> eval_step = train.make_eval_step(nnx.graphdef(model), train.regression_loss, mesh)
      >>> task = data.SyntheticTask("adding", batch_size=8, length=5)
      >>> result = train.evaluate(eval_step, state, [task.batch(0), task.batch(1)], mesh)
      >>> sorted(result), type(result["loss"]).__name__
      (['loss'], 'float')
    """
    if carry is not None:
        carry = sharding_lib.put_global(carry, sharding_lib.carry_sharding(mesh, carry))
    totals: dict[str, jax.Array] = {}
    count = examples = 0
    show = progress and jax.process_index() == 0
    bar_mode = show and metrics_lib.is_interactive()
    bar = tqdm(batches, desc=desc, leave=False, delay=2.0, disable=not bar_mode)
    start = last_line = time.perf_counter()
    for batch in bar:
        metrics, carry = eval_step(
            state.params, state.rest, carry, sharding_lib.shard_batch(batch, mesh)
        )
        rows = sharding_lib.batch_rows(batch)
        for k, v in metrics.items():  # weighted by rows: a last, smaller batch counts less
            totals[k] = totals[k] + v * rows if k in totals else v * rows
        count += 1
        examples += rows
        if show and not bar_mode and time.perf_counter() - last_line > _EVAL_LINE_EVERY_S:
            last_line = time.perf_counter()
            metrics_lib.log_line(f"{desc}: {count} batches, {last_line - start:.0f} s")
    if count == 0:
        raise ValueError("evaluate got no batches")
    result = {k: float(v) / examples for k, v in totals.items()}
    if show and not bar_mode:
        metrics_lib.log_line(
            f"{desc} {metrics_lib.format_metrics(result)} "
            f"({count} batches, {time.perf_counter() - start:.1f} s)"
        )
    return result
