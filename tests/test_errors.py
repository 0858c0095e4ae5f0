"""Errors at the public boundary: each names the argument, what it received and what was
expected. Also the safety of ``data.fetch`` (checksums, timeouts, no partial files)."""

import hashlib
import http.server
import io
import os
import re
import threading
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm_jax
import lstm_jax.linen
from lstm_jax import data
from lstm_jax import functional as F
from lstm_jax._src.native import lstm_cpu
from lstm_jax._src.options import RecurrentOptions

T, B, I, H = 4, 2, 3, 5  # noqa: E741 (time, batch, input, hidden)


@pytest.fixture(scope="module")
def x():
    return jnp.ones((T, B, I), jnp.float32)


@pytest.fixture(scope="module")
def params():
    """One layer of each kind, NumPy zeros: the checks fail before anything is computed."""

    def stack(param_type, gates):
        w_ih, w_hh = np.zeros((gates * H, I), np.float32), np.zeros((gates * H, H), np.float32)
        return ((param_type(w_ih, w_hh),),)

    return {
        "lstm": stack(F.LSTMParams, 4),
        "gru": stack(F.GRUParams, 3),
        "rnn": stack(F.RNNParams, 1),
    }


# Text files that are not UTF-8.


def test_char_text_not_utf8_names_path_and_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("abc caf\xe9 def".encode("latin-1"))  # é is 0xe9 at offset 7
    expected = rf"{re.escape(repr(str(path)))} is not valid utf-8: byte 0xe9 at byte offset 7"
    with pytest.raises(ValueError, match=expected):
        data.load_char_text(path)
    with pytest.raises(ValueError, match="must be utf-8-encoded"):
        data.load_char_text(path)
    corpus = data.load_char_text(path, fractions=(0.8, 0.1, 0.1), encoding="latin-1")
    assert "é" in corpus.vocab


def test_ptb_not_utf8_names_the_file(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"ptb.{split}.txt").write_text(" a b\n", encoding="utf-8")
    (tmp_path / "ptb.valid.txt").write_bytes(b" a \xff b\n")
    with pytest.raises(ValueError, match=r"ptb\.valid\.txt.*byte 0xff at byte offset 3"):
        data.load_ptb(tmp_path)


# String booleans.

BOOL_MESSAGE = "{name} must be a bool \\(True or False\\), got str 'no'"


@pytest.mark.parametrize("name", ["bidirectional", "batch_first", "bias"])
@pytest.mark.parametrize("cls", [lstm_jax.LSTM, lstm_jax.GRU, lstm_jax.RNN])
def test_nnx_stack_rejects_string_bools(cls, name):
    with pytest.raises(TypeError, match=BOOL_MESSAGE.format(name=name)):
        cls(I, H, **{name: "no"}, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", ["peephole", "layer_norm", "cifg"])
def test_lstm_variants_reject_string_bools(name):
    with pytest.raises(TypeError, match=BOOL_MESSAGE.format(name=name)):
        lstm_jax.LSTM(I, H, **{name: "no"}, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=BOOL_MESSAGE.format(name=name)):
        lstm_jax.LSTMCell(I, H, **{name: "no"}, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=BOOL_MESSAGE.format(name=name)):
        F.init_lstm_params(jax.random.key(0), I, H, **{name: "no"})


@pytest.mark.parametrize("cls", [lstm_jax.LSTMCell, lstm_jax.GRUCell, lstm_jax.RNNCell])
def test_nnx_cells_reject_string_bias(cls):
    with pytest.raises(TypeError, match=BOOL_MESSAGE.format(name="bias")):
        cls(I, H, bias="no", rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "init", [F.init_lstm_params, F.init_gru_params, F.init_rnn_params], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("name", ["bidirectional", "bias"])
def test_init_params_reject_string_bools(init, name):
    with pytest.raises(TypeError, match=BOOL_MESSAGE.format(name=name)):
        init(jax.random.key(0), I, H, **{name: "no"})


@pytest.mark.parametrize("name", ["bidirectional", "batch_first", "bias", "peephole"])
def test_linen_lstm_rejects_string_bools(name, x):
    with pytest.raises(TypeError, match=BOOL_MESSAGE.format(name=name)):  # when built
        lstm_jax.linen.LSTM(I, H, **{name: "no"}).init(jax.random.key(0), x)


def test_linen_cell_rejects_string_bias():
    cell = lstm_jax.linen.GRUCell(I, H, bias="no")
    with pytest.raises(TypeError, match=BOOL_MESSAGE.format(name="bias")):
        cell.init(jax.random.key(0), jnp.ones((B, I), jnp.float32))


def test_recurrent_options_and_functional_reject_string_bools(params, x):
    with pytest.raises(TypeError, match=BOOL_MESSAGE.format(name="batch_first")):
        RecurrentOptions(batch_first="no")
    with pytest.raises(TypeError, match=BOOL_MESSAGE.format(name="batch_first")):
        F.lstm(params["lstm"], x, batch_first="no")
    with pytest.raises(TypeError, match=BOOL_MESSAGE.format(name="deterministic")):
        F.lstm(params["lstm"], x, deterministic="no")


def test_bools_accept_numpy_bools_and_zero_one():
    # torch takes any truthy value; real bools, NumPy bools and 0/1 mean what they say.
    model = lstm_jax.LSTM(I, H, bidirectional=np.True_, bias=0, batch_first=1, rngs=nnx.Rngs(0))
    assert model.bidirectional is True and model.bias is False and model.batch_first is True
    with pytest.raises(TypeError, match="bidirectional must be a bool.*got int 2"):
        lstm_jax.LSTM(I, H, bidirectional=2, rngs=nnx.Rngs(0))


def test_other_options_name_themselves():
    with pytest.raises(TypeError, match="dtype must be None or a dtype.*'float33'"):
        RecurrentOptions(dtype="float33")
    with pytest.raises(TypeError, match="forget_bias must be None or a number, got str '1'"):
        F.init_lstm_params(jax.random.key(0), I, H, forget_bias="1")
    with pytest.raises(TypeError, match="chrono_init must be None or a number, got str"):
        F.init_lstm_params(jax.random.key(0), I, H, chrono_init="100")


# The structure of hx.


def test_lstm_hx_must_be_a_pair(params, x):
    h = jnp.zeros((1, B, H), jnp.float32)
    with pytest.raises(ValueError, match=r"hx must be \(h_0, c_0\) for an LSTM, got a tuple of 3"):
        F.lstm(params["lstm"], x, (h, h, h))
    with pytest.raises(
        TypeError, match=r"hx must be \(h_0, c_0\) for an LSTM, got an array of shape \(1, 2, 5\)"
    ):
        F.lstm(params["lstm"], x, h)
    model = lstm_jax.LSTM(I, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"hx must be \(h_0, c_0\) for an LSTM, got a list of 1"):
        model(x, [h])


def test_lstm_cell_hx_must_be_a_pair():
    cell = lstm_jax.LSTMCell(I, H, rngs=nnx.Rngs(0))
    h = jnp.zeros((B, H), jnp.float32)
    with pytest.raises(ValueError, match=r"hx must be \(h, c\) for an LSTM, got a tuple of 3"):
        cell(jnp.ones((B, I), jnp.float32), (h, h, h))


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_single_state_hx_must_be_one_array(kind, params, x):
    h = jnp.zeros((1, B, H), jnp.float32)
    apply = F.gru if kind == "gru" else F.rnn
    article = "a GRU" if kind == "gru" else "an RNN"
    expected = rf"hx must be one array \(h_0\) for {article}, got a tuple of 2"
    with pytest.raises(TypeError, match=expected):
        apply(params[kind], x, (h, h))
    model = (lstm_jax.GRU if kind == "gru" else lstm_jax.RNN)(I, H, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=expected):
        model(x, (h, h))
    cell = (lstm_jax.GRUCell if kind == "gru" else lstm_jax.RNNCell)(I, H, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=rf"hx must be one array \(h\) for {article}, got a tuple"):
        cell(jnp.ones((B, I), jnp.float32), (h[0],))


# Parameters of one cell kind given to another's function.


@pytest.mark.parametrize(
    "fn, given, expected, owner",
    [
        ("lstm", "gru", "LSTMParams for an LSTM", "GRUParams, which lstm_jax.functional.gru"),
        ("lstm", "rnn", "LSTMParams for an LSTM", "RNNParams, which lstm_jax.functional.rnn"),
        ("gru", "lstm", "GRUParams for a GRU", "LSTMParams, which lstm_jax.functional.lstm"),
        ("gru", "rnn", "GRUParams for a GRU", "RNNParams, which lstm_jax.functional.rnn"),
        ("rnn", "lstm", "RNNParams for an RNN", "LSTMParams, which lstm_jax.functional.lstm"),
        ("rnn", "gru", "RNNParams for an RNN", "GRUParams, which lstm_jax.functional.gru"),
    ],
)
def test_params_of_another_cell_kind(fn, given, expected, owner, params, x):
    apply = {"lstm": F.lstm, "gru": F.gru, "rnn": F.rnn}[fn]
    with pytest.raises(TypeError, match=rf"params\[0\]\[0\] must be {expected}, got {owner}"):
        apply(params[given], x)


def test_params_structure(params, x):
    with pytest.raises(TypeError, match=r"params\[0\] must be a sequence of one LSTMParams"):
        F.lstm(params["lstm"][0], x)  # one layer, not nested
    with pytest.raises(TypeError, match="params must be params\\[layer\\]\\[direction\\].*None"):
        F.lstm(None, x)
    with pytest.raises(TypeError, match="params must be params.*got a list of 0"):
        F.lstm([], x)
    with pytest.raises(TypeError, match="must be GRUParams for a GRU, got LSTMParams"):
        F.step_cell("gru", params["lstm"][0][0], jnp.ones((B, I), jnp.float32))


def test_params_directions_must_agree(params, x):
    p = params["lstm"][0][0]
    with pytest.raises(ValueError, match=r"1 or 2 directions in every layer, got \[2, 1\]"):
        F.lstm(((p, p), (p,)), x)


# from_torch with the wrong torch module.


@pytest.mark.parametrize(
    "cls, module, expected, match",
    [
        ("LSTM", "LSTMCell", "LSTM", "LSTMCell"),
        ("RNN", "LSTM", "RNN", "LSTM"),
        ("GRU", "LSTM", "GRU", "LSTM"),
        ("LSTMCell", "LSTM", "LSTMCell", "LSTM"),
        ("GRUCell", "GRU", "GRUCell", "GRU"),
        ("RNNCell", "RNN", "RNNCell", "RNN"),
    ],
)
def test_from_torch_wrong_module(cls, module, expected, match):
    torch = pytest.importorskip("torch")
    instance = getattr(torch.nn, module)(I, H)
    message = (
        rf"lstm_jax\.{cls}\.from_torch takes a torch\.nn\.{expected}, got {module}; "
        rf"convert a torch\.nn\.{match} with lstm_jax\.{match}\.from_torch"
    )
    with pytest.raises(TypeError, match=message):
        getattr(lstm_jax, cls).from_torch(instance)


def test_from_torch_unrelated_module():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"takes a torch\.nn\.LSTM, got Linear$"):
        lstm_jax.LSTM.from_torch(torch.nn.Linear(I, H))


# Environment variables of the native CPU loops.


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_native_threads_variable(value, monkeypatch):
    monkeypatch.setenv("LSTM_JAX_NATIVE_THREADS", value)
    expected = rf"LSTM_JAX_NATIVE_THREADS must be a positive integer.*{re.escape(repr(value))}"
    with pytest.raises(ValueError, match=expected):
        lstm_cpu.max_threads()


@pytest.mark.parametrize("value", ["off", "false", "2"])
def test_native_cpu_variable(value, monkeypatch):
    monkeypatch.setenv("LSTM_JAX_NATIVE_CPU", value)
    expected = rf"LSTM_JAX_NATIVE_CPU must be '0' .* or '1' .*, got {re.escape(repr(value))}"
    with pytest.raises(ValueError, match=expected):
        lstm_cpu._native_cpu_enabled()


def test_native_cpu_variable_values(monkeypatch):
    monkeypatch.delenv("LSTM_JAX_NATIVE_CPU", raising=False)
    assert lstm_cpu._native_cpu_enabled()
    monkeypatch.setenv("LSTM_JAX_NATIVE_CPU", "0")
    assert not lstm_cpu._native_cpu_enabled()
    monkeypatch.setenv("LSTM_JAX_NATIVE_CPU", "1")
    assert lstm_cpu._native_cpu_enabled()


def test_native_isa_variable(monkeypatch):
    monkeypatch.setenv("LSTM_JAX_NATIVE_ISA", "avx3")
    with pytest.raises(ValueError, match="LSTM_JAX_NATIVE_ISA must be 'native' or 'avx2'.*avx3"):
        lstm_cpu._isa_options()


# data.fetch: verified files, timeouts, nothing partial left behind.

NAME = "tinyshakespeare/input.txt"
BODY = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50
MD5 = hashlib.md5(BODY).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """``/good``: BODY; ``/cut``: announces BODY's length, sends half and closes."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY if self.path == "/good" else BODY[: len(BODY) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _leftovers(tmp_path):
    return sorted(p.name for p in tmp_path.rglob("*") if p.is_file())


def test_fetch_downloads_and_verifies(tmp_path, server, monkeypatch):
    monkeypatch.setitem(data.KNOWN_FILES, NAME, (f"{server}/good", MD5))
    path = data.fetch(NAME, tmp_path, download=True, timeout=5.0)
    assert open(path, "rb").read() == BODY
    assert _leftovers(tmp_path) == ["input.txt"]


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path, server, monkeypatch):
    monkeypatch.setitem(data.KNOWN_FILES, NAME, (f"{server}/good", "0" * 32))
    with pytest.raises(ValueError, match=rf"checksum mismatch.*md5 {MD5}, expected 0{{32}}"):
        data.fetch(NAME, tmp_path, download=True, timeout=5.0)
    assert _leftovers(tmp_path) == []


def test_fetch_download_cut_short_leaves_nothing(tmp_path, server, monkeypatch):
    monkeypatch.setitem(data.KNOWN_FILES, NAME, (f"{server}/cut", MD5))
    with pytest.raises(ConnectionError, match=f"ended after {len(BODY) // 2} of {len(BODY)}"):
        data.fetch(NAME, tmp_path, download=True, timeout=5.0)
    assert _leftovers(tmp_path) == []


class _FailingResponse(io.BytesIO):
    """A response whose connection drops after the first block."""

    headers: dict = {}

    def read(self, size=-1):
        if self.tell():
            raise ConnectionResetError("connection reset by peer")
        return super().read(1000)


def test_fetch_connection_error_midstream_and_timeout(tmp_path, monkeypatch):
    seen = {}

    def urlopen(url, timeout=None):
        seen["timeout"] = timeout
        return _FailingResponse(BODY)

    monkeypatch.setitem(data.KNOWN_FILES, NAME, ("http://example.invalid/input.txt", MD5))
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(ConnectionResetError):
        data.fetch(NAME, tmp_path, download=True)
    assert seen["timeout"] == 60.0  # the default: a download never hangs forever
    assert _leftovers(tmp_path) == []


def test_fetch_existing_file(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("fetch went to the network")

    monkeypatch.setitem(data.KNOWN_FILES, NAME, ("http://example.invalid/input.txt", MD5))
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    target = tmp_path / NAME
    target.parent.mkdir(parents=True)
    target.write_bytes(BODY)
    assert data.fetch(NAME, tmp_path) == os.path.join(tmp_path, NAME)  # good: no network

    target.write_bytes(BODY[:-1] + b"?")
    got = hashlib.md5(BODY[:-1] + b"?").hexdigest()
    expected = rf"input\.txt is corrupt.*md5 {got}, expected {MD5}\. Delete it.*download=True"
    with pytest.raises(ValueError, match=expected):
        data.fetch(NAME, tmp_path)


def test_fetch_redownloads_a_corrupt_file(tmp_path, server, monkeypatch):
    monkeypatch.setitem(data.KNOWN_FILES, NAME, (f"{server}/good", MD5))
    target = tmp_path / NAME
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    assert data.fetch(NAME, tmp_path, download=True, timeout=5.0) == os.path.join(tmp_path, NAME)
    assert target.read_bytes() == BODY and _leftovers(tmp_path) == ["input.txt"]


def test_initialize_carry_input_shape():
    with pytest.raises(TypeError, match="input_shape must be a tuple.*got 3"):
        lstm_jax.LSTM(I, H, rngs=nnx.Rngs(0)).initialize_carry(3)
    with pytest.raises(TypeError, match=r"input_shape must be a tuple \[..., batch, input_size\]"):
        lstm_jax.GRUCell(I, H, rngs=nnx.Rngs(0)).initialize_carry(3)
    with pytest.raises(TypeError, match=r"input_shape must be a tuple \[..., batch, input_size\]"):
        lstm_jax.linen.LSTMCell(I, H).initialize_carry(None, 3)
