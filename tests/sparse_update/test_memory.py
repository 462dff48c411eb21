"""What a sparse-update train step keeps for its backward pass."""

import subprocess
import sys

import numpy as np
import pytest

import tf_tradyx as tx
from tests.testing_utils import CANDIDATES, small_cnn
from tf_tradyx.sparse_update import memory

SU = tx.sparse_update


def activations(model, batch):
    return [r for r in memory.retained_tensors(model, batch) if r.kind in ("activation", "mask")]


def test_tradi_keeps_sampled_channels_and_bit_masks_only():
    sparse = SU.wrap(small_cnn(), budget=10_000, layers=CANDIDATES)
    SU.set_selection(sparse, {"c1": [2], "dw": [1, 7], "pw": [0], "fc": [0, 3]})
    kept = activations(sparse, batch=4)
    gathers = {r.name.split("/")[1]: r for r in kept if r.op_type == "GatherV2"}
    # Sampled channels of each wrapped layer's input (dw's input is its padded 14x14 map).
    assert gathers["sparse_update_c1_1"].shape == (4, 12, 12, 1)
    assert gathers["sparse_update_dw_1"].shape == (4, 14, 14, 2)
    assert gathers["sparse_update_pw_1"].shape == (4, 6, 6, 1)
    assert gathers["sparse_update_fc_1"].shape == (4, 2)
    masks = sorted((r.shape, r.dtype) for r in kept if r.kind == "mask")
    # ReLU after BN (8 channels -> 1 byte per 8, positions flattened: 4 * 12 * 12 rows), relu
    # of pw (6 channels) and fc (5): 1 byte each.
    assert masks == [((4, 5), "uint8"), ((4, 6, 6, 6), "uint8"), ((576, 1), "uint8")]
    others = [r for r in kept if r.op_type != "GatherV2" and r.kind == "activation"]
    # Only the classifier's input (4, 5) and the loss's logits gradient (4, 3) remain.
    assert sorted(r.shape for r in others) == [(4, 3), (4, 5)]


def test_nothing_is_kept_before_the_earliest_wrapped_layer():
    sparse = SU.wrap(small_cnn(), budget=10_000, layers=["pw", "fc"])
    SU.set_selection(sparse, {"pw": [0, 1, 2, 3, 4, 5, 6, 7], "fc": [1]})
    names = [r.name for r in memory.retained_tensors(sparse, 4)]
    for early in ("/c1", "/bn", "/re_lu", "/dw", "x:0"):
        assert not [n for n in names if early in n or n == early], early
    kept = activations(sparse, 4)
    assert sum(r.nbytes for r in kept if r.op_type == "GatherV2") == 4 * 6 * 6 * 8 * 4 + 4 * 1 * 4


def test_simulated_and_plain_activations_keep_full_maps():
    def total(model):
        return sum(r.nbytes for r in activations(model, 4))

    chosen = {"dw": [1], "pw": [0], "fc": [0]}
    sizes = {}
    for mode, kwargs in (
        ("tradi", {}),
        ("plain_relu", {"compact_activations": False}),
        ("simulated", {"simulate": True}),
    ):
        sparse = SU.wrap(small_cnn(), budget=10_000, layers=CANDIDATES, **kwargs)
        SU.set_selection(sparse, chosen)
        sizes[mode] = total(sparse)
    # The simulation holds the input (4x12x12x3), the ReLU map, the padded dw input...
    assert sizes["simulated"] > 8 * sizes["tradi"]
    # Without compact ReLUs the float ReLU map (4*12*12*8 floats) comes back.
    assert sizes["plain_relu"] - sizes["tradi"] >= 4 * 12 * 12 * 8 * 4 - 4 * 144


@pytest.mark.slow
def test_pretrained_mbv2_rules():
    model = tx.models.load_pretrained("mbv2-w0.35", num_classes=10)
    names = SU.cost_table(model).names
    sparse = SU.wrap(model, budget=27_946, layers=names[20:], seed=0)
    kept = activations(sparse, batch=2)
    by_wrapper = {w.name: w for w in SU.sparse_layers(sparse)}
    for r in kept:
        if r.kind == "mask":
            assert r.dtype == "uint8", r
        elif r.op_type == "GatherV2":
            wrapper = by_wrapper[r.name.split("/")[1][:-2]]
            assert r.shape[-1] == len(wrapper.get_channels()), r
        else:  # classifier input (2, 112) and logits gradient (2, 10)
            assert np.prod(r.shape) <= 2 * 112, r
    # Masks are packed 8 per byte: their bytes are 1/32 of the float maps they replace.
    mask_bytes = sum(r.nbytes for r in kept if r.kind == "mask")
    plain = SU.wrap(model, budget=27_946, layers=names[20:], seed=0, compact_activations=False)
    relu_bytes = sum(r.nbytes for r in activations(plain, 2) if r.op_type in ("Relu6", "Relu"))
    assert mask_bytes * 32 == relu_bytes


@pytest.mark.slow
def test_memory_module_is_reachable_as_documented():
    code = "import tf_tradyx as tx; print(callable(tx.sparse_update.memory.retained_bytes))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-2000:]


if __name__ == "__main__":  # runnable as a script (Bazel's py_test runs it so)
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
