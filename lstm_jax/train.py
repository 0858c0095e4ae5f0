"""Training-loop pieces: train step, evaluation, truncated BPTT, checkpoints, many devices.

Built on optax (optimisers, gradient clipping), orbax (checkpoints), ``jax.sharding`` and
``jax.distributed`` (data parallelism over devices and hosts), tensorboardX and tqdm.

Example (the adding problem, a few steps):
  >>> import tempfile
  >>> from flax import nnx
  >>> from lstm_jax import data, train
  >>> task = data.SyntheticTask("adding", batch_size=8, length=10)
  >>> model = train.SequenceRegressor("lstm", 2, 8, rngs=nnx.Rngs(0))
  >>> result = train.fit(model, train.regression_loss, train.make_optimizer("adam", 1e-2),
  ...                    task.batch, steps=4, log_every=2, run_dir=tempfile.mkdtemp(),
  ...                    progress=False)
  >>> result.summary["status"], int(result.state.step), sorted(result.summary["final"])
  ('completed', 4, ['train/grad_norm', 'train/loss'])
"""

from lstm_jax._src.train.callers import spelled_as as spelled_as
from lstm_jax._src.train.checkpoint import Checkpointer as Checkpointer
from lstm_jax._src.train.checkpoint import CheckpointError as CheckpointError
from lstm_jax._src.train.early_stopping import EarlyStopping as EarlyStopping
from lstm_jax._src.train.early_stopping import ReduceOnPlateau as ReduceOnPlateau
from lstm_jax._src.train.linear_cross_entropy import linear_cross_entropy as linear_cross_entropy
from lstm_jax._src.train.loop import FitResult as FitResult
from lstm_jax._src.train.loop import NonFiniteLossError as NonFiniteLossError
from lstm_jax._src.train.loop import fit as fit
from lstm_jax._src.train.loop import history_of as history_of
from lstm_jax._src.train.loop import params_digest as params_digest
from lstm_jax._src.train.losses import apply_to_batch as apply_to_batch
from lstm_jax._src.train.losses import classification_loss as classification_loss
from lstm_jax._src.train.losses import regression_loss as regression_loss
from lstm_jax._src.train.losses import token_loss as token_loss
from lstm_jax._src.train.metrics import MetricsWriter as MetricsWriter
from lstm_jax._src.train.metrics import environment_info as environment_info
from lstm_jax._src.train.metrics import read_metrics as read_metrics
from lstm_jax._src.train.metrics import write_json as write_json
from lstm_jax._src.train.models import SequenceRegressor as SequenceRegressor
from lstm_jax._src.train.models import TokenModel as TokenModel
from lstm_jax._src.train.models import cell_kinds as cell_kinds
from lstm_jax._src.train.models import init_uniform as init_uniform
from lstm_jax._src.train.models import make_recurrent as make_recurrent
from lstm_jax._src.train.models import recurrent_class as recurrent_class
from lstm_jax._src.train.models import reset_carry as reset_carry
from lstm_jax._src.train.models import zero_carry as zero_carry
from lstm_jax._src.train.predict import predict as predict
from lstm_jax._src.train.sampling import sample_tokens as sample_tokens
from lstm_jax._src.train.sharding import initialize_distributed as initialize_distributed
from lstm_jax._src.train.sharding import make_mesh as make_mesh
from lstm_jax._src.train.sharding import shard_batch as shard_batch
from lstm_jax._src.train.step import TrainState as TrainState
from lstm_jax._src.train.step import applied_learning_rate as applied_learning_rate
from lstm_jax._src.train.step import create_train_state as create_train_state
from lstm_jax._src.train.step import evaluate as evaluate
from lstm_jax._src.train.step import make_eval_step as make_eval_step
from lstm_jax._src.train.step import make_optimizer as make_optimizer
from lstm_jax._src.train.step import make_schedule as make_schedule
from lstm_jax._src.train.step import make_train_step as make_train_step
from lstm_jax._src.train.step import place_state as place_state

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "EarlyStopping",
    "FitResult",
    "MetricsWriter",
    "NonFiniteLossError",
    "ReduceOnPlateau",
    "SequenceRegressor",
    "TokenModel",
    "TrainState",
    "applied_learning_rate",
    "apply_to_batch",
    "cell_kinds",
    "classification_loss",
    "create_train_state",
    "environment_info",
    "evaluate",
    "fit",
    "history_of",
    "init_uniform",
    "linear_cross_entropy",
    "initialize_distributed",
    "make_eval_step",
    "make_mesh",
    "make_optimizer",
    "make_recurrent",
    "make_schedule",
    "make_train_step",
    "params_digest",
    "place_state",
    "predict",
    "read_metrics",
    "recurrent_class",
    "regression_loss",
    "reset_carry",
    "sample_tokens",
    "shard_batch",
    "spelled_as",
    "token_loss",
    "write_json",
    "zero_carry",
]
