"""Split scikit-learn's digits into one .npz per silo and a held-out test set, and write each
silo's device.toml (examples/cross_silo/README.md runs it)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DEVICE_TOML = """\
[device]
data_dir = "{data_dir}"
coordinator_url = "{url}"
task_id = "{task_id}"
# The embedded broker of `fedrt coordinator serve` speaks MQTT 3.1.1 only.
mqtt_protocol = 4
poll_s = 1.0
labels = {{ silo = "{name}" }}

[data]
manifest = "{model}/manifest.json"

[policy]
# A silo is a server: it trains whenever the coordinator asks.
always = true
"""


def split(out: Path, shares: list[float], seed: int) -> list[int]:
    """silo-1.npz .. silo-N.npz (x float32 [N, 64] in [0, 1], y int32) and test.npz."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (np.asarray(digits.data, dtype=np.float32) / 16.0).reshape(-1, 64)
    y = np.asarray(digits.target, dtype=np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    # A fifth is held out: no silo trains on it, the operator evaluates on it.
    test, train = order[: len(y) // 5], order[len(y) // 5 :]
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "test.npz", x=x[test], y=y[test])
    cuts = (np.cumsum(shares)[:-1] / sum(shares) * len(train)).astype(int)
    sizes = []
    for i, part in enumerate(np.split(train, cuts), start=1):
        np.savez(out / f"silo-{i}.npz", x=x[part], y=y[part])
        sizes.append(len(part))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the silos' files")
    parser.add_argument("--shares", default="1,1,1", help="relative size of each silo's data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", help="the coordinator's URL: also write silo-N/device.toml")
    parser.add_argument("--task-id", help="the task the silos follow (with --url)")
    parser.add_argument("--model", type=Path, help="the export folder (with --url)")
    args = parser.parse_args()
    shares = [float(s) for s in args.shares.split(",")]
    sizes = split(args.out, shares, args.seed)
    for i, size in enumerate(sizes, start=1):
        print(f"silo-{i}: {size} examples -> {args.out / f'silo-{i}.npz'}")
    if args.url:
        if not (args.task_id and args.model):
            parser.error("--url needs --task-id and --model")
        for i in range(1, len(sizes) + 1):
            silo = (args.out / f"silo-{i}").resolve()
            silo.mkdir(exist_ok=True)
            (silo / "device.toml").write_text(DEVICE_TOML.format(
                data_dir=silo / "state", url=args.url, task_id=args.task_id,
                name=f"silo-{i}", model=args.model.resolve()))  # fmt: skip
            print(f"silo-{i}: {silo / 'device.toml'}")


if __name__ == "__main__":
    main()
