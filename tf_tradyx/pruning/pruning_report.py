"""Per-layer pruning report: what was kept where, printable, as a dict, and as a plot."""

import json
import weakref

import numpy as np
import tensorflow as tf

from tf_tradyx._graph import walk
from tf_tradyx.pruning import masking, paths


def _connected_outputs(mask, depthwise):
    """Fraction of output channels with at least one kept incoming weight.

    Conv/Dense kernels end with the output axis; depthwise kernels (kh, kw, in, multiplier) have
    in * multiplier output channels.
    """
    mask = np.asarray(mask) > 0
    width = mask.shape[-2] * mask.shape[-1] if depthwise else mask.shape[-1]
    return float(mask.reshape(-1, width).any(axis=0).mean())


def output_connectivity(model, masks=None):
    """Fraction of the model's output units that a path of kept weights still joins to the input,
    computed from the masks (an all-ones input through the network of 0/1 weights, identity
    activations and affine layers). None when the path networks cannot read the model.

    `masks`: {id(kernel variable): 0/1 array} to use instead of the live masks (a snapshot)."""
    try:
        net = paths.PathNetwork(model)
    except ValueError:  # UnsupportedLayerError included: a Lambda, a PReLU, several inputs
        return None
    shape = (1, *model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        return None
    kernels = {k: tf.constant(m, paths.DTYPE) for k, m in (masks or {}).items()}
    out = net.run(tf.ones(shape, paths.DTYPE), "connect", kernels=kernels)
    return float(np.mean(np.asarray(out) > 0))


def _is_depthwise(layer, kernel_name):
    return kernel_name.endswith("depthwise_kernel") or type(layer).__name__.startswith("Depthwise")


class PruningReport:
    """Rows (one per masked kernel) and totals; `str()` prints a table, `as_dict()` is JSON-ready.

    What `Pruner.prune` and `report` return. Each row is a dict with the kernel's `name`,
    `shape`, `weights`, `kept`, `density`, `connected_outputs` (the share of its output channels
    with a kept incoming weight) and `kept_positive`; the totals are properties (`total`, `kept`,
    `density`, `collapsed`, `connected`, `coverage`, `model_sparsity`); `meta` holds what the
    pruner adds (method, target sparsity, rounds, history). `to_json(path)` writes `as_dict()`.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="head"),
      ... ])
      >>> masked = tx.pruning.prune_at_init(
      ...     model, "magnitude", sparsity=0.9, min_density=0.05, verbose=0)
      >>> result = masked.pruning_report
      >>> result.total, result.kept, round(result.density, 3), result.collapsed
      (296, 30, 0.101, [])
      >>> [row["name"] for row in result.rows]
      ['conv/kernel', 'head/kernel']
      >>> result.meta["method"], result.as_dict()["totals"]["sparsity"] > 0.89
      ('magnitude', True)
      >>> print(result)  # doctest: +ELLIPSIS
      layer                              shape                weights      kept  density out conn
      ---...
      conv/kernel                        3x3x3x8                  216 ...
      head/kernel                        8x10                      80 ...
      ---...
      total                                                       296        30   0.1014
      masked kernels: 94.3% of the model's 314 trainable weights; the model as a whole is 84.7% sparse
    """

    def __init__(self, rows, meta=None, connected=None, model_weights=None):
        """`connected`: a number, None, or a function computing it on first use (one pass of the
        path network: it is read only when asked for, by `as_dict` or an emptied layer's message).
        `model_weights`: the model's trainable weights in all (masked kernels, biases, embeddings,
        layers pruning does not mask), to say what share of the model the sparsity covers."""
        self.rows = rows
        self.meta = dict(meta or {})
        self._connected = connected
        self.model_weights = model_weights

    @property
    def total(self):
        return sum(r["weights"] for r in self.rows)

    @property
    def kept(self):
        return sum(r["kept"] for r in self.rows)

    @property
    def density(self):
        return self.kept / self.total if self.total else 1.0

    @property
    def coverage(self):
        """The share of the model's trainable weights held by the masked kernels (None when
        unknown): a sparsity of the masked kernels is a sparsity of this share of the model."""
        if not self.model_weights:
            return None
        return min(1.0, self.total / self.model_weights)

    @property
    def model_sparsity(self):
        """The fraction of all the model's trainable weights that pruning removed."""
        if not self.model_weights:
            return None
        return (self.total - self.kept) / self.model_weights

    def coverage_message(self):
        """A sentence when the masked kernels hold less than half of the model's weights."""
        if self.coverage is None or self.coverage >= 0.5:
            return None
        return (
            f"The masked kernels hold only {self.coverage:.1%} of the model's "
            f"{self.model_weights:,} trainable weights, so the model as a whole is "
            f"{self.model_sparsity:.1%} sparse. The rest sits in layers pruning does not mask "
            "(embeddings, normalization, biases, or layers inside custom layers); pass "
            "skip=() and check tx.pruning.masked_layers(model) for what is covered."
        )

    @property
    def collapsed(self):
        """Kernels with no weight left: their layer passes nothing on. Whether that cuts the
        network (a plain chain) or not (a residual or squeeze-excite branch) is `connected`."""
        return [r["name"] for r in self.rows if r["weights"] and not r["kept"]]

    @property
    def connected(self):
        """Fraction of output units still joined to the input by kept weights (1.0: intact;
        0.0: the network is cut and its output no longer depends on its input); None when it
        could not be computed (a layer the path networks do not read)."""
        if callable(self._connected):
            self._connected = self._connected()
        return self._connected

    def collapse_message(self):
        """What an emptied layer means for this network, with advice; None when nothing emptied."""
        if not self.collapsed:
            return None
        names = ", ".join(self.collapsed[:8]) + ("..." if len(self.collapsed) > 8 else "")
        head = f"{len(self.collapsed)} layer(s) kept no weight: {names}."
        advice = "Pass min_density (e.g. 0.005) to the pruner to keep a few weights in every layer."
        if self.connected is None:
            return f"{head} Whether the network is cut was not computed. {advice}"
        if self.connected == 0.0:
            return f"{head} The network is cut: its output no longer depends on its input. {advice}"
        if self.connected < 1.0:
            return (
                f"{head} The network is partly cut: {1 - self.connected:.1%} of its output units "
                f"no longer depend on the input. {advice}"
            )
        return (
            f"{head} Every output is still joined to the input (through residual, parallel or "
            "squeeze-excite branches); those blocks now pass only their shortcut."
        )

    def as_dict(self):
        return {
            "layers": self.rows,
            "totals": {
                "weights": self.total,
                "kept": self.kept,
                "density": self.density,
                "sparsity": 1.0 - self.density,
                "collapsed": self.collapsed,
                "connected": self.connected,
                "model_weights": self.model_weights,
                "coverage": self.coverage,
                "model_sparsity": self.model_sparsity,
            },
            **self.meta,
        }

    def to_json(self, path):
        with open(path, "w") as f:
            json.dump(self.as_dict(), f, indent=1)

    def __str__(self):
        head = (
            f"{'layer':<34} {'shape':<18} {'weights':>9} {'kept':>9} {'density':>8} {'out conn':>8}"
        )
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r['name'][:34]:<34} {'x'.join(map(str, r['shape'])):<18} "
                f"{r['weights']:>9,} {r['kept']:>9,} {r['density']:>8.4f} "
                f"{r['connected_outputs']:>8.3f}"
            )
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<34} {'':<18} {self.total:>9,} {self.kept:>9,} {self.density:>8.4f}"
        )
        if self.coverage is not None:
            lines.append(
                f"masked kernels: {self.coverage:.1%} of the model's {self.model_weights:,} "
                f"trainable weights; the model as a whole is {self.model_sparsity:.1%} sparse"
            )
        if self.collapsed:
            lines.append(self.collapse_message())
        return "\n".join(lines)

    __repr__ = __str__


def _masks(model):
    """(wrapper, kernel name, mask, kernel) of MaskedLayers, and of sparse-update wrappers of pruned
    layers."""
    for layer in walk.flatten_layers(model):
        if isinstance(layer, masking.MaskedLayer):
            yield from (
                (layer, n, m, k) for n, m, k in zip(layer.kernel_names, layer.masks, layer.kernels)
            )
        elif getattr(layer, "kernel_mask", None) is not None:  # tx.sparse_update on a pruned model
            yield layer, f"{layer.layer.name}/kernel", layer.kernel_mask, layer.layer.kernel


def report(model, connectivity=True):
    """The current per-layer state of the masks of a wrapped model.

    Besides density and connected outputs, `kept_positive` is the fraction of kept weights that
    are > 0: about 0.5 for a sign-blind criterion; far from it, the kept set is sign-biased, which
    makes a layer's output channels move together (seen with GraSP at initialization).

    Args:
      model (keras.Model): a masked model (from `wrap`), or a sparse-update wrap of one.
      connectivity (bool): False skips `connected` (one pass of the network, not needed by
        per-epoch summaries).

    Returns:
      PruningReport: one row per masked kernel; no rows for a model without masks.

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="head"),
      ... ])
      >>> masked = tx.pruning.wrap(model)
      >>> tx.pruning.report(masked).density  # all-ones masks
      1.0
      >>> _ = tx.pruning.RandomPruner(verbose=0).prune(masked, sparsity=0.75)
      >>> result = tx.pruning.report(masked)
      >>> result.density, result.connected
      (0.25, 1.0)
    """
    rows, snapshot = [], {}
    for wrapper, name, mask, kernel in _masks(model):
        m = np.asarray(mask) > 0
        if connectivity:  # 1 bit per weight until asked for
            snapshot[id(kernel)] = (np.packbits(m), m.shape)
        kept = np.asarray(kernel)[m]
        rows.append(
            {
                "name": name,
                "shape": list(m.shape),
                "weights": int(m.size),
                "kept": int(m.sum()),
                "density": float(m.mean()),
                "connected_outputs": _connected_outputs(m, _is_depthwise(wrapper.layer, name)),
                "kept_positive": float((kept > 0).mean()) if kept.size else 0.0,
            }
        )

    held = weakref.ref(model)  # a kept report does not keep its model (and graph) alive

    def connected():  # the masks as they were at this call, even if pruned further since
        if held() is None:
            return None  # the model is gone: not computed
        masks = {
            k: np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape)
            for k, (bits, shape) in snapshot.items()
        }
        return output_connectivity(held(), masks)

    model_weights = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    return PruningReport(
        rows,
        connected=connected if rows and connectivity else None,
        model_weights=model_weights or None,
    )


def density_figure(result, title=None):
    """A matplotlib `Figure`: per-layer density (bars) and connected outputs (dots).

    Needs the `plots` extra. Made without pyplot, so the user's backend and open figures are
    untouched.

    Args:
      result (PruningReport | dict): a report, or its `as_dict()` (e.g. read back from JSON).
      title (str | None): the title; None says the method and target sparsity.

    Returns:
      matplotlib.figure.Figure: one bar and one dot per masked kernel.

    Raises:
      ImportError: without matplotlib (`pip install 'tf_tradyx[plots]'`).

    Examples:
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="head"),
      ... ])
      >>> masked = tx.pruning.prune_at_init(model, "magnitude", sparsity=0.5, verbose=0)
      >>> figure = tx.pruning.density_figure(masked.pruning_report)
      >>> axes = figure.axes[0]
      >>> len(axes.patches), axes.get_title(loc="left")
      (2, 'magnitude at sparsity 0.5')
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("density_figure needs matplotlib: pip install 'tf_tradyx[plots]'.") from e
    rows = result.rows if isinstance(result, PruningReport) else result["layers"]
    names = [r["name"] for r in rows]
    fig = Figure(figsize=(max(6, 0.35 * len(rows)), 4))
    ax = fig.add_subplot()
    ax.bar(range(len(rows)), [r["density"] for r in rows], color="tab:blue", label="density")
    ax.plot(
        range(len(rows)),
        [r["connected_outputs"] for r in rows],
        "o",
        color="tab:orange",
        label="connected outputs",
    )
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction kept")
    meta = result.meta if isinstance(result, PruningReport) else result
    ax.set_title(
        title or f"{meta.get('method', '')} at sparsity {meta.get('target_sparsity', '')}",
        loc="left",
    )
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_layer_density(result, path, title=None):
    """Writes `density_figure(result, title)` as a PNG to `path` and returns the path.

    Args:
      result (PruningReport | dict): a report, or its `as_dict()`.
      path (str): where to write the PNG.
      title (str | None): the title; None says the method and target sparsity.

    Returns:
      str: `path`.

    Raises:
      ImportError: without matplotlib (`pip install 'tf_tradyx[plots]'`).

    Examples:
      >>> import tempfile
      >>> model = keras.Sequential([
      ...     keras.Input((8, 8, 3)),
      ...     keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
      ...     keras.layers.GlobalAveragePooling2D(),
      ...     keras.layers.Dense(10, name="head"),
      ... ])
      >>> masked = tx.pruning.prune_at_init(model, "magnitude", sparsity=0.5, verbose=0)
      >>> with tempfile.TemporaryDirectory() as folder:
      ...     path = tx.pruning.plot_layer_density(
      ...         masked.pruning_report, os.path.join(folder, "density.png"))
      ...     with open(path, "rb") as f:
      ...         f.read(4)
      b'\\x89PNG'
    """
    density_figure(result, title).savefig(path, dpi=120)
    return path
