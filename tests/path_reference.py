"""A brute-force reference for path-based scores: networks as explicit unit graphs, every
input-to-output path enumerated in numpy. Deliberately naive: it shares no code with the package.
"""

import itertools
import math

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
        self.smooth = {}  # tensor -> activation name (SMOOTH), applied after the bias
        self.layer_norm = {}  # tensor -> layer: tensor = LayerNorm(its single source), over units
        self.product = {}  # tensor -> (a, b): tensor = a * b, unit by unit
        self.softmax = {}  # tensor -> groups of units: a softmax over each group, after the sum

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


def _phi(v):
    return np.exp(-0.5 * v * v) / np.sqrt(2 * np.pi)


_ERF = np.vectorize(math.erf)


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


# name -> (function, derivative), written out by hand (the package differentiates automatically).
SMOOTH = {
    "gelu": (
        lambda v: 0.5 * v * (1 + _ERF(v / np.sqrt(2))),
        lambda v: 0.5 * (1 + _ERF(v / np.sqrt(2))) + v * _phi(v),
    ),
    "silu": (lambda v: v * _sigmoid(v), lambda v: _sigmoid(v) * (1 + v * (1 - _sigmoid(v)))),
    "sigmoid": (_sigmoid, lambda v: _sigmoid(v) * (1 - _sigmoid(v))),
    "tanh": (np.tanh, lambda v: 1 - np.tanh(v) ** 2),
    "hard_silu": (
        lambda v: v * np.clip(v + 3, 0, 6) / 6,
        lambda v: np.where(v < -3, 0.0, np.where(v > 3, 1.0, (2 * v + 3) / 6)),
    ),
}


def real_forward(net, x, params):
    """Activations of the real network; params[layer] = kernel array, params[(layer,'b')] = bias,
    params[(layer,'bn')] = (gamma, beta, mean, var, eps)."""
    vals = {net.order[0]: x}
    net.pre = {}
    for t in net.order[1:]:
        if t in net.product:
            a, b = net.product[t]
            vals[t] = vals[a] * vals[b]
            continue
        if t in net.layer_norm:
            ((src, _, _, _), *_) = net.edges[t]
            g, b, eps = params[(net.layer_norm[t], "ln")]
            v = vals[src]
            mean, var = v.mean(axis=1, keepdims=True), v.var(axis=1, keepdims=True)
            vals[t] = (v - mean) / np.sqrt(var + eps) * g + b
            continue
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
        if t in net.smooth:
            net.pre[t] = out
            out = SMOOTH[net.smooth[t]][0](out)
        for group in net.softmax.get(t, ()):
            e = np.exp(out[:, group] - out[:, group].max(axis=1, keepdims=True))
            out[:, group] = e / e.sum(axis=1, keepdims=True)
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
    gates.update({t: SMOOTH[name][1](net.pre[t]) ** 2 for t, name in net.smooth.items()})
    # A softmax inside the network: the diagonal of its Jacobian, p (1 - p), squared.
    gates.update({t: (vals[t] * (1 - vals[t])) ** 2 for t in net.softmax})
    for t, layer in net.layer_norm.items():  # 1 / sigma^2 of the real input, per sample
        ((src, _, _, _), *_) = net.edges[t]
        eps = params[(layer, "ln")][2]
        gates[t] = np.repeat(1.0 / (vals[src].var(axis=1, keepdims=True) + eps), net.sizes[t], 1)
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
        if f[0] == "p":  # product: the other factor's real value, squared, per sample
            return vals[f[1]][:, f[2]] ** 2
        return 1.0 if f[0] in ("bn", "a", "ln") else f[1]

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
        if f[0] == "ln":
            return params[(f[1], "ln")][0][f[2]] ** 2
        if f[0] == "p":
            return 1.0
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


def product(net, a, b, dst):
    """dst = a * b unit by unit; each factor's edge carries the other factor ("p", other, unit)."""
    net.add_tensor(dst, net.sizes[a])
    net.product[dst] = (a, b)
    for u in range(net.sizes[a]):
        net.connect(a, u, dst, u, ("p", b, u))
        net.connect(b, u, dst, u, ("p", a, u))


def layer_norm(net, src, dst, layer):
    """dst = LayerNormalization(src) over all units; edges carry gamma ("ln", layer, unit)."""
    net.add_tensor(dst, net.sizes[src])
    net.layer_norm[dst] = layer
    for u in range(net.sizes[src]):
        net.connect(src, u, dst, u, ("ln", layer, u))


def synflow_objective(net, params, masks):
    """R of SynFlow on the linearised network: |theta * mask|, |bias|, absolute BN parameters
    (inference mode), |scale| x + |offset| for affine edges, |gamma| x + |beta| for layer norm (no
    normalisation), a product adds its factors, every activation is the identity; all-ones input."""
    vals = {net.order[0]: np.ones(net.sizes[net.order[0]])}
    for t in net.order[1:]:
        out = np.zeros(net.sizes[t])
        for src, su, du, f in net.edges[t]:
            v = vals[src][su]
            if f[0] == "w":
                out[du] += abs(params[f[1]][f[2]] * masks.get(f[1], 1.0)[f[2]]) * v
            elif f[0] == "a":
                out[du] += abs(f[1]) * v + abs(f[2])
            elif f[0] == "bn":
                g, b, m, var, eps = params[(f[1], "bn")]
                c = f[2]
                out[du] += (v - abs(m[c])) * abs(g[c]) / np.sqrt(abs(var[c]) + eps) + abs(b[c])
            elif f[0] == "ln":
                g, b, _ = params[(f[1], "ln")]
                out[du] += abs(g[f[2]]) * v + abs(b[f[2]])
            elif f[0] == "p":
                out[du] += v
            else:
                out[du] += f[1] * v
        if t in net.bias:
            layer, channels = net.bias[t]
            out += np.abs(params[(layer, "b")][channels])
        vals[t] = out
    return vals[net.order[-1]].sum()


def synflow_scores(net, params, masks):
    """|theta| * dR/d|theta| for every masked weight. R is affine in each single weight (a path
    passes a weight at most once), so the derivative is R(|theta_j| = 1) - R(|theta_j| = 0)."""
    scores = {}
    for layer, m in masks.items():
        w = np.abs(params[layer] * m)
        s = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            if w[idx] == 0:
                continue
            p1, p0 = dict(params), dict(params)
            p1[layer], p0[layer] = params[layer] * m, params[layer] * m
            p1[layer][idx], p0[layer][idx] = 1.0, 0.0
            ones = {k: (np.ones_like(v) if k == layer else v) for k, v in masks.items()}
            s[idx] = w[idx] * (synflow_objective(net, p1, ones) - synflow_objective(net, p0, ones))
        scores[layer] = s
    return scores


def token_dense(net, src, dst, tokens, nin, nout, layer):
    """A Dense layer applied to every token: units (token, channel), kernel (nin, nout)."""
    net.add_tensor(dst, tokens * nout)
    for t, i, o in itertools.product(range(tokens), range(nin), range(nout)):
        net.connect(src, t * nin + i, dst, t * nout + o, ("w", layer, (i, o)))
    net.bias[dst] = (layer, [u % nout for u in range(tokens * nout)])


def matmul(net, a, b, dst, n, m, k, name):
    """dst (n x k) = a (n x m) @ b (m x k), row-major units, written as what it is: a sum over m of
    elementwise products of copies of a's and b's entries (each copy an edge of weight 1)."""
    net.add_tensor(f"{name}_a", n * m * k)
    net.add_tensor(f"{name}_b", n * m * k)
    for i, j, l in itertools.product(range(n), range(m), range(k)):
        u = (i * m + j) * k + l
        net.connect(a, i * m + j, f"{name}_a", u, ("c", 1.0))
        net.connect(b, j * k + l, f"{name}_b", u, ("c", 1.0))
    product(net, f"{name}_a", f"{name}_b", f"{name}_ab")
    net.add_tensor(dst, n * k)
    for i, j, l in itertools.product(range(n), range(m), range(k)):
        net.connect(f"{name}_ab", (i * m + j) * k + l, dst, i * k + l, ("c", 1.0))


def transpose(net, src, dst, n, m):
    """dst (m x n) = src (n x m) transposed: edges of weight 1."""
    net.add_tensor(dst, n * m)
    for i, j in itertools.product(range(n), range(m)):
        net.connect(src, i * m + j, dst, j * n + i, ("c", 1.0))


def scale(net, src, dst, c):
    """dst = c * src: an affine edge (a path weight, squared in z2)."""
    net.add_tensor(dst, net.sizes[src])
    for u in range(net.sizes[src]):
        net.connect(src, u, dst, u, ("a", c, 0.0))


def softmax_rows(net, src, dst, n, m):
    """dst = softmax of each row of src (n x m)."""
    net.add_tensor(dst, n * m)
    for u in range(n * m):
        net.connect(src, u, dst, u, ("c", 1.0))
    net.softmax[dst] = [list(range(i * m, (i + 1) * m)) for i in range(n)]
