"""A brute-force reference for path-based scores: networks as explicit unit graphs, every
input-to-output path enumerated in numpy. Deliberately naive: it shares no code with the package.
"""

import itertools

import numpy as np


class UnitNet:
    """A DAG of tensors made of units. Edges carry a factor: a weight ("w", layer, index), a batch
    norm scale ("bn", layer, channel) or a constant ("c", value). Tensors may have a bias, a batch
    norm or a ReLU applied in the real network."""

    def __init__(self):
        self.sizes = {}
        self.order = []
        self.edges = {}  # dst tensor -> list of (src tensor, src unit, dst unit, factor)
        self.relu = set()
        self.leaky = {}  # tensor -> negative slope (a leaky ReLU in the real network)
        self.bias = {}  # tensor -> (layer, per-unit channel list)
        self.bn = {}  # tensor -> (layer, per-unit channel list) applied as affine in real mode

    def add_tensor(self, name, size):
        self.sizes[name] = size
        self.order.append(name)
        self.edges[name] = []

    def connect(self, src, su, dst, du, factor):
        self.edges[dst].append((src, su, du, factor))


def conv_same(net, src, dst, h, w, cin, cout, k, layer):
    """3x3 (or kxk) stride-1 'same' conv edges, channels-last unit index (i * w + j) * c + ch."""
    net.add_tensor(dst, h * w * cout)
    p = (k - 1) // 2
    for i, j, co in itertools.product(range(h), range(w), range(cout)):
        for di, dj, ci in itertools.product(range(k), range(k), range(cin)):
            ii, jj = i + di - p, j + dj - p
            if 0 <= ii < h and 0 <= jj < w:
                net.connect(
                    src,
                    (ii * w + jj) * cin + ci,
                    dst,
                    (i * w + j) * cout + co,
                    ("w", layer, (di, dj, ci, co)),
                )


def dense(net, src, dst, nin, nout, layer):
    net.add_tensor(dst, nout)
    for i, o in itertools.product(range(nin), range(nout)):
        net.connect(src, i, dst, o, ("w", layer, (i, o)))


def channelwise(net, src, dst, n, channels, factor_fn):
    net.add_tensor(dst, n)
    for u in range(n):
        net.connect(src, u, dst, u, factor_fn(u % channels))


def global_avg(net, src, dst, hw, c):
    net.add_tensor(dst, c)
    for pos, ch in itertools.product(range(hw), range(c)):
        net.connect(src, pos * c + ch, dst, ch, ("c", 1.0 / hw))


def real_forward(net, x, params):
    """Activations of the real network; params[layer] = kernel array, params[(layer,'b')] = bias,
    params[(layer,'bn')] = (gamma, beta, mean, var, eps)."""
    vals = {net.order[0]: x}
    for t in net.order[1:]:
        out = np.zeros((x.shape[0], net.sizes[t]))
        for src, su, du, f in net.edges[t]:
            if f[0] == "w":
                out[:, du] += params[f[1]][f[2]] * vals[src][:, su]
            elif f[0] == "a":  # Affine: scale * x + offset (Rescaling).
                out[:, du] += f[1] * vals[src][:, su] + f[2]
            elif f[0] == "bn":
                g, b, m, v, eps = params[(f[1], "bn")]
                out[:, du] += (vals[src][:, su] - m[f[2]]) * g[f[2]] / np.sqrt(v[f[2]] + eps) + b[
                    f[2]
                ]
            else:
                out[:, du] += f[1] * vals[src][:, su]
        if t in net.bias:
            layer, channels = net.bias[t]
            out += params[(layer, "b")][channels]
        if t in net.relu:
            out = np.maximum(out, 0)
        if t in net.leaky:
            out = np.where(out > 0, out, net.leaky[t] * out)
        vals[t] = out
    return vals


def px_scores(net, x, params, masks):
    """PX scores by path enumeration: S_j = sum_k z1_k * sum_{p through j, ending at k} v_p^2."""
    masked_params = dict(params)
    for layer, m in masks.items():
        masked_params[layer] = params[layer] * m  # Gates of the real *masked* network.
    vals = real_forward(net, x, masked_params)
    gates = {t: (vals[t] > 0).astype(float) for t in net.relu}
    # A leaky ReLU's squared derivative: 1 where active, slope^2 where negative.
    gates.update(
        {
            t: np.where(vals[t] > 0, 1.0, np.where(vals[t] < 0, a * a, 0.0))
            for t, a in net.leaky.items()
        }
    )
    incoming = {t: {} for t in net.order}
    for dst in net.order:
        for src, su, du, f in net.edges[dst]:
            incoming[dst].setdefault(du, []).append((src, su, f))
    out_t = net.order[-1]

    def paths_to(t, u):
        """All paths ending at unit u of tensor t, as lists of (tensor, unit, factor) edges."""
        if t == net.order[0]:
            yield u, []
            return
        for src, su, f in incoming[t].get(u, []):
            for start, path in paths_to(src, su):
                yield start, path + [(t, u, f)]

    def z1_factor(f):
        if f[0] == "w":
            return masks[f[1]][f[2]]
        return 1.0 if f[0] in ("bn", "a") else f[1]

    def z2_factor(f):
        if f[0] == "w":
            v = params[f[1]][f[2]] * masks[f[1]][f[2]]
            return v * v
        if f[0] == "bn":
            g, _, _, var, eps = params[(f[1], "bn")]
            s = g[f[2]] / np.sqrt(var[f[2]] + eps)
            return s * s
        if f[0] == "a":
            return f[1] * f[1]
        return f[1]

    n_out = net.sizes[out_t]
    all_paths = [(k, start, path) for k in range(n_out) for start, path in paths_to(out_t, k)]
    z1 = np.zeros(n_out)
    for k, start, path in all_paths:
        a = x[:, start] ** 2
        for t, u, f in path:
            a = a * z1_factor(f)
            if t in gates:
                a = a * gates[t][:, u]
        z1[k] += a.sum()
    scores = {layer: np.zeros_like(params[layer]) for layer in masks}
    for k, _start, path in all_paths:
        v2 = np.prod([z2_factor(f) for _, _, f in path])
        for _, _, f in path:
            if f[0] == "w":
                scores[f[1]][f[2]] += z1[k] * v2
    return scores, z1
