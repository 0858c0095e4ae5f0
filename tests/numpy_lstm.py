"""An independent float64 NumPy LSTM, written from the equations, for reference only.

It shares no code with lstm_jax: plain Python loops over time, a per-row explicit flip
of each valid prefix for the reverse direction (the library uses a masked reverse scan
instead), and its own parameter layout reading (torch's names).
"""

import numpy as np


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def lstm_step(named, suffix, x, h, c):
    """One step for all rows: x [B, I], h [B, H_out], c [B, H] -> (h, c)."""
    z = x @ named["weight_ih" + suffix].T + h @ named["weight_hh" + suffix].T
    if "bias_ih" + suffix in named:
        z = z + named["bias_ih" + suffix] + named["bias_hh" + suffix]
    hidden = c.shape[-1]
    i = _sigmoid(z[:, :hidden])
    f = _sigmoid(z[:, hidden : 2 * hidden])
    g = np.tanh(z[:, 2 * hidden : 3 * hidden])
    o = _sigmoid(z[:, 3 * hidden :])
    c = f * c + i * g
    h = o * np.tanh(c)
    if "weight_hr" + suffix in named:
        h = h @ named["weight_hr" + suffix].T
    return h, c


def _run_direction(named, suffix, x, h0, c0, lengths, reverse):
    """x [T, B, I]; returns outputs [T, B, H_out] and final (h, c), one row at a time."""
    time, batch = x.shape[:2]
    out = np.zeros((time, batch, h0.shape[-1]))
    h_n, c_n = np.zeros_like(h0), np.zeros_like(c0)
    for b in range(batch):
        n = lengths[b]
        order = range(n - 1, -1, -1) if reverse else range(n)
        h, c = h0[b : b + 1], c0[b : b + 1]
        for t in order:
            h, c = lstm_step(named, suffix, x[t, b : b + 1], h, c)
            out[t, b] = h[0]
        h_n[b], c_n[b] = h[0], c[0]
    return out, h_n, c_n


def lstm(named, x, num_layers, bidirectional, h0=None, c0=None, lengths=None):
    """torch.nn.LSTM's forward in float64 with optional packed lengths.

    Args:
      named: dict of torch-named float64 arrays.
      x: [T, B, I].
      h0, c0: [L * D, B, H_out] / [L * D, B, H] or None.
      lengths: [B] ints or None.

    Returns:
      output [T, B, D * H_out], h_n, c_n.
    """
    directions = 2 if bidirectional else 1
    time, batch = x.shape[:2]
    hidden = named["weight_hh_l0"].shape[0] // 4
    h_out = named["weight_hh_l0"].shape[1]
    if h0 is None:
        h0 = np.zeros((num_layers * directions, batch, h_out))
        c0 = np.zeros((num_layers * directions, batch, hidden))
    lengths = np.full(batch, time) if lengths is None else np.asarray(lengths)
    h_n, c_n = [], []
    layer_input = np.asarray(x, np.float64)
    for layer in range(num_layers):
        outs = []
        for d in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            k = layer * directions + d
            out, h, c = _run_direction(named, suffix, layer_input, h0[k], c0[k], lengths, d == 1)
            outs.append(out)
            h_n.append(h)
            c_n.append(c)
        layer_input = np.concatenate(outs, axis=-1)
    return layer_input, np.stack(h_n), np.stack(c_n)
