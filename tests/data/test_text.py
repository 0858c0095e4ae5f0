"""Text loaders and LM batching, on small generated files (and the real data if present)."""

import hashlib
import os

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
    assert len(c.train) == round(0.9 * len(text)) and c.train.dtype == np.int32
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
