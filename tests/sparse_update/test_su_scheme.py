"""MCUNetV3's sparse-update schemes: the paper's costs, largest-norm channels."""

import sys

import numpy as np
import pytest

import tf_tradyx as tx

SU = tx.sparse_update


@pytest.mark.parametrize(
    "scheme, name, units",
    [
        ("mbv2-w0.35/50kb", "mbv2-w0.35", 28_282),
        ("mcunet-in1/50kb", "mcunet-in1", 15_936),
        ("mcunet-in1/100kb", "mcunet-in1", 64_832),
        ("proxyless-w0.3/50kb", "proxyless-w0.3", 25_984),
    ],
)
def test_paper_su_schemes_cost(scheme, name, units):
    model = tx.models.load_pretrained(name, num_classes=10)
    sparse = SU.wrap(model, strategy="su", scheme=scheme)
    assert SU.efficiency(sparse).units == units
    # Channels are the largest-norm ones of each layer.
    for w in SU.sparse_layers(sparse):
        chosen = SU.selection(sparse).get(w.layer.name, [])
        norms = SU.channel_norms(w.kernel, w.kind)
        if len(chosen):
            rest = np.setdiff1d(np.arange(w.in_channels), chosen)
            if len(rest):
                assert norms[chosen].min() >= norms[rest].max(), w.layer.name


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
