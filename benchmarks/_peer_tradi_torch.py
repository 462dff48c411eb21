"""TraDy as the TraDy paper ran it, in PyTorch: a full backward pass, then the kernel gradients masked
to the sampled input channels. Times a training step and reports the process's peak RSS.

Run by `benchmarks/peers.py --tradi` with an interpreter that has torch, never imported by tf_tradyx:

    python benchmarks/_peer_tradi_torch.py --network=net.json --batch=64 --steps=12 --threads=2

`net.json` (written by peers.py from the Keras model) lists the network's layers in graph order
(kind, sizes, inputs) and the selection {layer: input channels}; weights are random (time and memory
do not depend on their values). Frozen: batch norm (inference mode) and every unselected layer;
the wrapped layers' kernels require gradients, which are multiplied by their channel masks before
an SGD step, as the paper's simulation does.
"""

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def _peak_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


class Net(torch.nn.Module):
    """Interprets the layer list of net.json (NCHW)."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers
        self.mods = torch.nn.ModuleDict()
        for i, layer in enumerate(layers):
            kind = layer["kind"]
            if kind == "conv":
                groups = layer["in"] if layer["depthwise"] else layer["groups"]
                self.mods[str(i)] = torch.nn.Conv2d(
                    layer["in"],
                    layer["out"],
                    layer["kernel"],
                    stride=layer["stride"],
                    padding=layer["kernel"] // 2 if layer["padding"] == "same" else 0,
                    groups=groups,
                    bias=layer["bias"],
                )
            elif kind == "bn":
                self.mods[str(i)] = torch.nn.BatchNorm2d(layer["channels"]).eval()
            elif kind == "dense":
                self.mods[str(i)] = torch.nn.Linear(layer["in"], layer["out"], bias=layer["bias"])

    def forward(self, x):
        values = {self.layers[0]["inputs"][0]: x}
        for i, layer in enumerate(self.layers):
            kind, args = layer["kind"], [values[k] for k in layer["inputs"]]
            if kind in ("conv", "bn", "dense"):
                y = self.mods[str(i)](args[0])
            elif kind == "relu":
                y = F.relu6(args[0]) if layer.get("max_value") == 6 else F.relu(args[0])
            elif kind == "add":
                y = args[0] + args[1]
            elif kind == "pad":
                (top, bottom), (left, right) = layer["padding"]
                y = F.pad(args[0], (left, right, top, bottom))
            elif kind == "gap":
                y = args[0].mean(dim=(2, 3))
            else:  # identity (dropout at inference, flatten of a vector)
                y = args[0]
            if layer.get("activation") == "relu6":
                y = F.relu6(y)
            elif layer.get("activation") == "relu":
                y = F.relu(y)
            values[layer["outputs"][0]] = y
        return y


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--network", required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with open(args.network) as f:
        spec = json.load(f)
    net = Net(spec["layers"])
    for p in net.parameters():
        p.requires_grad_(False)
    masks = []
    for i, layer in enumerate(spec["layers"]):
        if layer.get("name") in spec["selection"]:
            weight = net.mods[str(i)].weight
            weight.requires_grad_(True)
            mask = torch.zeros_like(weight)
            channels = spec["selection"][layer["name"]]
            if layer["kind"] == "dense":
                mask[:, channels] = 1
            elif layer["depthwise"]:
                mask[channels] = 1  # (out = in channel) x 1 x kh x kw
            else:
                mask[:, channels] = 1
            masks.append((weight, mask))
    weights = [w for w, _ in masks]
    optimizer = torch.optim.SGD(weights, lr=0.01)
    rng = np.random.default_rng(0)
    h, w, c = spec["input"]
    x = torch.from_numpy(rng.uniform(-1, 1, (args.batch, c, h, w)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, spec["classes"], args.batch))
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        for weight, mask in masks:
            weight.grad.mul_(mask)
        optimizer.step()
        times.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "code": "PyTorch simulation",
                "step_seconds": float(np.median(times[2:])),
                "peak_rss_mb": _peak_mb(),
                "process_seconds": time.perf_counter() - _STARTED,
                "loss": float(loss),
                "threads": torch.get_num_threads(),
                "trained_kernels": len(masks),
            }
        )
    )


if __name__ == "__main__":
    main()
