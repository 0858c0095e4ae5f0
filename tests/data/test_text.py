"""Text loaders and LM batching, on small generated files (and the real data if present)."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from lstm_jax import data


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def test_char_text_vocab_split_and_roundtrip(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 5
    c = data.load_char_text(write(tmp_path / "input.txt", text))
    assert c.vocab == tuple(sorted(set(text))) and c.vocab_size == len(set(text))
    assert len(c.train) + len(c.valid) + len(c.test) == len(text)
    assert len(c.train) == round(0.9 * len(text)) and c.train.dtype == np.uint8
    assert c.decode(np.concatenate([c.train, c.valid, c.test])) == text


def test_char_text_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        data.load_char_text(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="empty"):
        data.load_char_text(write(tmp_path / "empty.txt", ""))


def test_char_rnn_split_exact_boundaries(tmp_path):
    # char-rnn's loader: 50 rows of n // 2500 windows of 50; per row the first
    # floor(0.95 * windows) windows train, the rest validate, no test.
    windows = 20  # 50,007 characters: 20 windows of 50 per row of 1,000, 7 left over
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefgh\n "), 50 * 50 * windows + 7))
    c = data.load_char_text(write(tmp_path / "input.txt", text), split="char-rnn")
    rows = [text[r * 1000 : (r + 1) * 1000] for r in range(50)]
    assert c.decode(c.train) == "".join(row[:950] for row in rows)  # 19 windows
    assert c.decode(c.valid) == "".join(row[950:] for row in rows)  # the last one
    assert len(c.test) == 0 and c.vocab == tuple(sorted(set(text)))
    valid_rows = data.batchify(c.valid, 50).T  # char-rnn's validation rows, exactly
    assert [c.decode(r) for r in valid_rows] == [row[950:] for row in rows]
    # with a test fraction: floor(windows * val_frac) validate and the rest test
    train, valid, test = data.char_rnn_split(
        63, batch_size=2, seq_length=3, train_frac=0.5, val_frac=0.25
    )  # 10 windows a row of 30
    assert train.tolist() == [*range(0, 15), *range(30, 45)]
    assert valid.tolist() == [*range(15, 21), *range(45, 51)]
    assert test.tolist() == [*range(21, 30), *range(51, 60)]
    # the contiguous split stays the default
    d = data.load_char_text(tmp_path / "input.txt")
    assert (len(d.train), len(d.valid), len(d.test)) == (45006, 2500, 2501)


def test_char_split_errors(tmp_path):
    path = write(tmp_path / "t.txt", "abc" * 100)
    with pytest.raises(ValueError, match="split must be one of.*'karpathy'"):
        data.load_char_text(path, split="karpathy")
    with pytest.raises(ValueError, match="fewer than one batch of 50 x 50"):
        data.load_char_text(path, split="char-rnn")
    with pytest.raises(ValueError, match="contiguous split"):
        data.load_char_text(path, (0.95, 0.05, 0.0), split="char-rnn")
    with pytest.raises(ValueError, match="sum <= 1"):
        data.char_rnn_split(10_000, train_frac=0.9, val_frac=0.2)


def test_stream_windows_cover_every_prediction_once():
    ids = np.arange(23, dtype=np.int32)
    windows = list(data.stream_windows(data.batchify(ids, 2), seq_len=4))  # [11, 2]
    assert [w["inputs"].shape for w in windows] == [(4, 2), (4, 2), (2, 2)]
    assert [w["reset"].tolist() for w in windows] == [[True] * 2, [False] * 2, [False] * 2]
    targets = np.concatenate([w["targets"] for w in windows])
    np.testing.assert_array_equal(targets.T, [np.arange(1, 11), np.arange(12, 22)])
    np.testing.assert_array_equal(np.concatenate([w["inputs"] for w in windows]) + 1, targets)
    one = list(data.stream_windows(data.batchify(ids, 1), seq_len=100))
    assert len(one) == 1 and one[0]["targets"][:, 0].tolist() == list(range(1, 23))
    with pytest.raises(ValueError, match="seq_len"):
        next(data.stream_windows(data.batchify(ids, 1), 0))


def make_ptb(directory, valid="a b\n", test="b <unk>\n"):
    write(os.path.join(directory, "ptb.train.txt"), " a b a\n <unk> a\n")
    write(os.path.join(directory, "ptb.valid.txt"), valid)
    write(os.path.join(directory, "ptb.test.txt"), test)


def test_ptb_eos_per_line_and_vocab_order(tmp_path):
    make_ptb(tmp_path)
    c = data.load_ptb(tmp_path)
    # counts: a 3, <eos> 2, b 1, <unk> 1 (ties alphabetical)
    assert c.vocab == ("a", "<eos>", "<unk>", "b")
    assert c.decode(c.train, " ") == "a b a <eos> <unk> a <eos>"
    assert c.decode(c.valid, " ") == "a b <eos>" and c.decode(c.test, " ") == "b <unk> <eos>"


def test_ptb_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="wojzaremba"):
        data.load_ptb(tmp_path)
    make_ptb(tmp_path, valid="a zebra\n")
    with pytest.raises(ValueError, match="zebra"):
        data.load_ptb(tmp_path)


def test_batchify_and_lm_stream():
    ids = np.arange(43, dtype=np.int32)
    grid = data.batchify(ids, 3)  # 14 rows, column b holds tokens 14b .. 14b+13
    assert grid.shape == (14, 3) and grid[0].tolist() == [0, 14, 28]
    stream = data.LMStream(grid, seq_len=4)
    assert stream.num_batches == 3  # (14 - 1) // 4
    seen = []
    for step in range(stream.num_batches):
        b = stream.batch(step)
        assert b["inputs"].shape == b["targets"].shape == (4, 3)
        np.testing.assert_array_equal(b["targets"], b["inputs"] + 1)  # next token
        assert b["reset"].tolist() == [step == 0] * 3
        seen.append(b["inputs"])
    # Consecutive windows continue each column: the state can be carried across them.
    np.testing.assert_array_equal(np.concatenate(seen)[:, 1], np.arange(14, 26))
    np.testing.assert_array_equal(stream.batch(3)["inputs"], stream.batch(0)["inputs"])
    assert stream.batch(3)["reset"].all()
    with pytest.raises(ValueError, match="too few"):
        data.batchify(np.arange(3, dtype=np.int32), 4)
    with pytest.raises(ValueError, match="too short"):
        data.LMStream(grid, seq_len=20)


def test_fetch_missing_download_and_checksum(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="karpathy/char-rnn"):
        data.fetch("tinyshakespeare/input.txt", tmp_path)
    source = write(tmp_path / "src" / "input.txt", "to be or not to be\n")
    md5 = hashlib.md5(open(source, "rb").read()).hexdigest()
    assert data.md5sum(source) == md5
    dest = tmp_path / "data"
    monkeypatch.setitem(
        data.KNOWN_FILES, "tinyshakespeare/input.txt", (f"file://{source}", "0" * 32)
    )
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.fetch("tinyshakespeare/input.txt", dest, download=True)
    assert not os.path.exists(dest / "tinyshakespeare" / "input.txt")
    monkeypatch.setitem(data.KNOWN_FILES, "tinyshakespeare/input.txt", (f"file://{source}", md5))
    path = data.fetch("tinyshakespeare/input.txt", dest, download=True)
    assert data.load_char_text(path).vocab_size == len(set("to be or not to be\n"))


REAL = os.environ.get("LSTM_JAX_DATA")


@pytest.mark.skipif(
    not REAL or not os.path.isdir(os.path.join(REAL or "", "ptb")),
    reason="real data not available ($LSTM_JAX_DATA)",
)
def test_real_ptb_matches_published_counts():
    for name, (_, md5) in data.KNOWN_FILES.items():
        assert data.md5sum(os.path.join(REAL, name)) == md5, name
    c = data.load_ptb(os.path.join(REAL, "ptb"))
    assert (len(c.train), len(c.valid), len(c.test), c.vocab_size) == (929589, 73760, 82430, 10000)
    shakespeare = os.path.join(REAL, "tinyshakespeare", "input.txt")
    c = data.load_char_text(shakespeare, split="char-rnn")  # 446 windows: 423 train, 23 valid
    assert (len(c.train), len(c.valid), len(c.test), c.vocab_size) == (1057500, 57500, 0, 65)


def reference_char_corpus(path, split):
    """The loader as it was: the whole text, a dict per character, index arrays."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    vocab = tuple(sorted(set(text)))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = np.array([index[ch] for ch in text], np.int64)
    if split == "contiguous":
        a, b = round(0.9 * len(ids)), round(0.9 * len(ids)) + round(0.05 * len(ids))
        return vocab, (ids[:a], ids[a:b], ids[b:])
    windows = len(ids) // 2500
    rows = ids[: 2500 * windows].reshape(50, -1)
    ntrain = int(np.floor(windows * 0.95)) * 50
    return vocab, (rows[:, :ntrain].reshape(-1), rows[:, ntrain:].reshape(-1), ids[:0])


SHAKESPEARE = os.path.join(
    os.path.dirname(__file__), "../../../shared/data/tinyshakespeare/input.txt"
)


@pytest.mark.parametrize("split", ["contiguous", "char-rnn"])
@pytest.mark.parametrize("corpus", ["mixed", "tinyshakespeare"])
def test_char_ids_and_splits_are_those_of_the_reference(tmp_path, monkeypatch, split, corpus):
    from lstm_jax._src.data import text as text_module

    if corpus == "tinyshakespeare":
        if not os.path.exists(SHAKESPEARE):
            pytest.skip("../shared/data/tinyshakespeare is not here")
        path = SHAKESPEARE
    else:  # non-ASCII, CRLF and lone CR (read as newlines), in chunks that split characters
        monkeypatch.setattr(text_module, "_CHUNK_CHARS", 97)
        rng = np.random.default_rng(0)
        pieces = ["a", "b", "é", "😀", "中", "\r\n", "\r", "\n", " "]
        path = tmp_path / "mixed.txt"
        path.write_bytes("".join(rng.choice(pieces, 6000)).encode("utf-8"))
    vocab, parts = reference_char_corpus(path, split)
    c = data.load_char_text(path, split=split)
    assert c.vocab == vocab and c.train.dtype == np.uint8
    for got, want in zip((c.train, c.valid, c.test), parts, strict=True):
        np.testing.assert_array_equal(got, want)


def test_char_ids_take_the_smallest_dtype(tmp_path):
    wide = "".join(chr(0x4E00 + i) for i in range(300))  # 300 characters: uint16
    c = data.load_char_text(write(tmp_path / "wide.txt", wide * 3))
    assert c.vocab_size == 300 and c.train.dtype == np.uint16
    assert c.decode(np.concatenate([c.train, c.valid, c.test])) == wide * 3
    batch = data.LMStream(data.batchify(c.train, 2), 4).batch(0)
    assert batch["inputs"].dtype == np.int32  # models see int32 as before


def test_invalid_utf8_offset_counts_from_the_start_across_chunks(tmp_path, monkeypatch):
    from lstm_jax._src.data import text as text_module

    monkeypatch.setattr(text_module, "_CHUNK_CHARS", 5)
    path = tmp_path / "bad.txt"
    path.write_bytes("héllo wörld".encode() * 3 + b"\xff" + b"tail")
    with pytest.raises(ValueError, match=r"byte 0xff at byte offset 39 \(invalid start byte\)"):
        data.load_char_text(path)


MEASURE = """
import resource, sys
from lstm_jax import data
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c = data.load_char_text(sys.argv[1], split=sys.argv[2])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((peak - before) * 1024 / (len(c.train) + len(c.valid) + len(c.test)))
"""


@pytest.mark.parametrize("split", ["contiguous", "char-rnn"])
def test_loading_takes_a_few_bytes_per_character(tmp_path, split):
    path = tmp_path / "big.txt"
    line = "".join(chr(32 + i % 90) for i in range(99)) + "\n"
    path.write_text(line * 200_000)  # 20 MB (the loader as it was: 26 bytes a character)
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), split],
        capture_output=True, text=True, check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )  # fmt: skip
    assert float(out.stdout) < 4, out.stdout
