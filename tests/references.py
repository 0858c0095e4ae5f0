"""Independent float64 NumPy references for the GRU, the Elman RNN and the LSTM variants.

Written from the papers' equations; shares no code with lstm_jax. Parameters are read
from dicts under torch's names (``weight_ih_l0``, ``weight_ci_l0_reverse``, ...).
Sequences are run one row at a time with an explicit flip of each row's valid prefix for
the reverse direction (the library uses a masked reverse scan instead).
"""

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _layer_norm(z, gain, shift, eps=1e-5):
    mean = z.mean(axis=-1, keepdims=True)
    var = ((z - mean) ** 2).mean(axis=-1, keepdims=True)
    return (z - mean) / np.sqrt(var + eps) * gain + shift


def lstm_variant_step(p, x, state):
    """LSTM step with optional peepholes, layer norm, CIFG and projection.

    Args:
      p: dict of one layer-direction's float64 arrays under field names (``weight_ih``,
        ``weight_ci``, ``ln_ih_weight``, ...); absent keys mean the option is off.
      x: [B, I]; state: (h [B, H_out], c [B, H]).
    """
    h, c = state
    hidden = c.shape[-1]
    zx = x @ p["weight_ih"].T
    zh = h @ p["weight_hh"].T
    if "ln_ih_weight" in p:  # Ba et al. 2016: LN of each part, bias after
        zx = _layer_norm(zx, p["ln_ih_weight"], p["ln_ih_bias"])
        zh = _layer_norm(zh, p["ln_hh_weight"], p["ln_hh_bias"])
    z = zx + zh
    if "bias_ih" in p:
        z = z + p["bias_ih"] + p["bias_hh"]
    cifg = z.shape[-1] == 3 * hidden
    blocks = [z[:, k * hidden : (k + 1) * hidden] for k in range(z.shape[-1] // hidden)]
    if cifg:
        zf, zg, zo = blocks
    else:
        zi, zf, zg, zo = blocks
    if "weight_cf" in p:  # Gers & Schmidhuber 2000: i, f peep at c_{t-1}, o at c_t
        zf = zf + p["weight_cf"] * c
        if not cifg:
            zi = zi + p["weight_ci"] * c
    f = sigmoid(zf)
    i = 1.0 - f if cifg else sigmoid(zi)  # Greff et al. 2017
    c_new = f * c + i * np.tanh(zg)
    if "weight_co" in p:
        zo = zo + p["weight_co"] * c_new
    c_read = _layer_norm(c_new, p["ln_c_weight"], p["ln_c_bias"]) if "ln_c_weight" in p else c_new
    h_new = sigmoid(zo) * np.tanh(c_read)
    if "weight_hr" in p:
        h_new = h_new @ p["weight_hr"].T
    return h_new, c_new


def gru_step(p, x, state):
    """torch.nn.GRUCell's equations: r, z, n gates; r multiplies (W_hn h + b_hn)."""
    (h,) = state
    hidden = h.shape[-1]
    gx = x @ p["weight_ih"].T + p.get("bias_ih", 0.0)
    gh = h @ p["weight_hh"].T + p.get("bias_hh", 0.0)
    r = sigmoid(gx[:, :hidden] + gh[:, :hidden])
    z = sigmoid(gx[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
    n = np.tanh(gx[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
    return ((1.0 - z) * n + z * h,)


def rnn_step(p, x, state, nonlinearity="tanh"):
    """Elman: h' = phi(W_ih x + b_ih + W_hh h + b_hh)."""
    (h,) = state
    z = x @ p["weight_ih"].T + h @ p["weight_hh"].T + p.get("bias_ih", 0.0) + p.get("bias_hh", 0.0)
    return (np.tanh(z) if nonlinearity == "tanh" else np.maximum(z, 0.0),)


def layer_dict(named, layer, direction):
    """The fields of one layer and direction from a torch-named dict."""
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    return {
        k[: -len(suffix)]: np.asarray(v, np.float64)
        for k, v in named.items()
        if k.endswith(suffix) and not (direction == 0 and k.endswith("_reverse"))
    }


def run(step, named, x, state0, num_layers, bidirectional, lengths=None, zoneout=None):
    """A stacked, optionally bidirectional recurrent net, one row at a time.

    Args:
      step: ``(p, x [1, I], state tuple) -> state tuple``; ``state[0]`` is the output.
      named: torch-named arrays.
      x: [T, B, I].
      state0: tuple of arrays [L * D, B, size], one per state field.
      lengths: [B] or None.
      zoneout: per-field rates for evaluation-mode zoneout (Krueger et al. 2017):
        new = rate * old + (1 - rate) * step(old), or None.

    Returns:
      output [T, B, D * H_out] and the final states, a tuple of [L * D, B, size].
    """
    directions = 2 if bidirectional else 1
    time, batch = x.shape[:2]
    lengths = np.full(batch, time) if lengths is None else np.asarray(lengths)
    finals = [[] for _ in state0]
    layer_input = np.asarray(x, np.float64)
    for layer in range(num_layers):
        outs = []
        for d in range(directions):
            p = layer_dict(named, layer, d)
            k = layer * directions + d
            out = None
            final = [np.zeros_like(s[k]) for s in state0]
            for b in range(batch):
                n = lengths[b]
                state = tuple(np.asarray(s[k, b : b + 1], np.float64) for s in state0)
                order = range(n - 1, -1, -1) if d else range(n)
                for t in order:
                    new = step(p, layer_input[t, b : b + 1], state)
                    if zoneout is not None:
                        new = tuple(
                            z * o + (1 - z) * s for z, o, s in zip(zoneout, state, new, strict=True)
                        )
                    state = new
                    if out is None:
                        out = np.zeros((time, batch, state[0].shape[-1]))
                    out[t, b] = state[0][0]
                for f, s in enumerate(state):
                    final[f][b] = s[0]
            outs.append(out)
            for f in range(len(state0)):
                finals[f].append(final[f])
        layer_input = np.concatenate(outs, axis=-1)
    return layer_input, tuple(np.stack(f) for f in finals)
