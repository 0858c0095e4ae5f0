"""Datasets and batching: your own arrays and sequences, time series, synthetic long-memory
tasks, character text, Penn Treebank.

Every batch is a pure function of its step, so the data position of a run is its step.

Example:
  >>> from lstm_jax import data
  >>> data.SyntheticTask("copy", batch_size=4, length=30).batch(0)["inputs"].shape
  (50, 4)
"""

from lstm_jax._src.data.arrays import ArrayBatches as ArrayBatches
from lstm_jax._src.data.arrays import steps_for_epochs as steps_for_epochs
from lstm_jax._src.data.series import Standardizer as Standardizer
from lstm_jax._src.data.series import sliding_windows as sliding_windows
from lstm_jax._src.data.series import split_by_time as split_by_time
from lstm_jax._src.data.synthetic import ADDING_BASELINE_MSE as ADDING_BASELINE_MSE
from lstm_jax._src.data.synthetic import COPY_VOCAB_SIZE as COPY_VOCAB_SIZE
from lstm_jax._src.data.synthetic import WAVEFORM_CLASSES as WAVEFORM_CLASSES
from lstm_jax._src.data.synthetic import SyntheticTask as SyntheticTask
from lstm_jax._src.data.synthetic import adding_problem as adding_problem
from lstm_jax._src.data.synthetic import copy_task as copy_task
from lstm_jax._src.data.synthetic import copy_task_baseline as copy_task_baseline
from lstm_jax._src.data.synthetic import step_rng as step_rng
from lstm_jax._src.data.synthetic import waveform_dataset as waveform_dataset
from lstm_jax._src.data.text import KNOWN_FILES as KNOWN_FILES
from lstm_jax._src.data.text import Corpus as Corpus
from lstm_jax._src.data.text import LMStream as LMStream
from lstm_jax._src.data.text import batchify as batchify
from lstm_jax._src.data.text import char_rnn_split as char_rnn_split
from lstm_jax._src.data.text import fetch as fetch
from lstm_jax._src.data.text import load_char_text as load_char_text
from lstm_jax._src.data.text import load_ptb as load_ptb
from lstm_jax._src.data.text import md5sum as md5sum
from lstm_jax._src.data.text import split_fractions as split_fractions
from lstm_jax._src.data.text import stream_windows as stream_windows

__all__ = [
    "ADDING_BASELINE_MSE",
    "ArrayBatches",
    "Standardizer",
    "WAVEFORM_CLASSES",
    "COPY_VOCAB_SIZE",
    "KNOWN_FILES",
    "Corpus",
    "LMStream",
    "SyntheticTask",
    "adding_problem",
    "batchify",
    "char_rnn_split",
    "copy_task",
    "copy_task_baseline",
    "fetch",
    "load_char_text",
    "load_ptb",
    "md5sum",
    "split_fractions",
    "sliding_windows",
    "split_by_time",
    "step_rng",
    "steps_for_epochs",
    "stream_windows",
    "waveform_dataset",
]
