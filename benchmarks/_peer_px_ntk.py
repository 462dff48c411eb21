"""Runs one pruner of the PX authors' PyTorch code (iurada/px-ntk-pruning) the way its training
script does, and prints one JSON line: the whole call's time and the process's peak RSS.

Run by `benchmarks/peers.py` with an interpreter that has torch, never imported by tf_tradyx:

    python benchmarks/_peer_px_ntk.py --checkout=DIR --method=px --data=pruning.npz \
        --rounds=100 --density=0.018 --threads=2 [--arch=resnet50 --batch_size=32]

The pruning loop is the one of the checkout's `train_classification.Experiment.__init__`: the
pruner of `lib/pruners.py` over `masked_parameters(model)`, model in eval mode for SynFlow and PX,
`rounds` rounds at density ** ((round + 1) / rounds), global masking. (`Experiment` itself also
loads a dataset, wandb and torchmetrics, so the loop is restated here around the same calls.)
`--arch=resnet20` is their CIFAR-10 setting (`lottery_resnet.resnet20`, PX on `examples_per_class`
images per class, SNIP on `batch_limit` 2 batches of 128); `--arch=resnet50` their ImageNet one
(`imagenet_resnet.resnet50`, 1,000 classes, dataset "ImageNet": PX reads every batch of the loader
and SNIP `batch_limit` batches, set here to all of them).
"""

import time

_STARTED = time.perf_counter()  # imports are part of a run's process time

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _peak_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", required=True)
    parser.add_argument("--method", required=True, choices=["px", "synflow", "snip"])
    parser.add_argument("--data", required=True, help=".npz with x (N, H, W, C) and y")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--density", type=float, default=0.018)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", default="resnet20", choices=["resnet20", "resnet50"])
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    sys.path.insert(0, args.checkout)  # the checkout's own modules, by name
    config = importlib.import_module("globals").CONFIG
    pruners = importlib.import_module("lib.pruners")
    masked_parameters = importlib.import_module("lib.generator").masked_parameters
    if args.arch == "resnet20":
        network = importlib.import_module("lib.models.lottery_resnet").resnet20
    else:
        network = importlib.import_module("lib.models.imagenet_resnet").resnet50

    arrays = np.load(args.data)
    x = torch.from_numpy(np.ascontiguousarray(arrays["x"].transpose(0, 3, 1, 2)))
    y = torch.from_numpy(arrays["y"].astype(np.int64))

    class Images(torch.utils.data.TensorDataset):
        targets = y.tolist()  # PX's balanced subset reads the labels here

    loader = torch.utils.data.DataLoader(Images(x, y), batch_size=args.batch_size, shuffle=False)
    cifar = args.arch == "resnet20"
    config.update(
        {
            "device": "cpu",
            "dataset": "CIFAR10" if cifar else "ImageNet",
            "batch_size": args.batch_size,
            "experiment_args": {
                "weight_remaining_ratio": args.density,
                "rounds": args.rounds,
                "batch_limit": 2 if cifar else len(loader),
                "examples_per_class": len(x) // 10,
            },
        }
    )
    model = network(num_classes=10 if cifar else 1000)
    loss_fn = torch.nn.CrossEntropyLoss()
    name = {"px": "PX", "synflow": "SynFlow", "snip": "SNIP"}[args.method]
    ready, ready_cpu = time.perf_counter(), time.process_time()
    pruner = getattr(pruners, name)(masked_parameters(model))
    if name in ("SynFlow", "PX"):
        model.eval()
    round_times, round_cpu = [], []
    for r in range(args.rounds):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        pruner.score(model, loss_fn, loader, "cpu")
        pruner.mask(args.density ** ((r + 1) / args.rounds), "global")
        round_times.append(time.perf_counter() - begin)
        round_cpu.append(time.process_time() - begin_cpu)
    prune_seconds = time.perf_counter() - ready
    prune_cpu_seconds = time.process_time() - ready_cpu
    remaining, total = pruner.stats()
    print(
        json.dumps(
            {
                "code": "px-ntk-pruning",
                "method": args.method,
                "rounds": args.rounds,
                "prune_seconds": prune_seconds,
                "prune_cpu_seconds": prune_cpu_seconds,
                "process_seconds": time.perf_counter() - _STARTED,
                "first_round_seconds": round_times[0],
                "later_round_ms": 1000 * float(np.median(round_times[1:]))
                if args.rounds > 1
                else None,
                "later_round_cpu_ms": 1000 * float(np.median(round_cpu[1:]))
                if args.rounds > 1
                else None,
                "density": float(remaining / total),
                "weights": int(total),
                "peak_rss_mb": _peak_mb(),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
