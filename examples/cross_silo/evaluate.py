"""Held-out accuracy of the version a task serves now: fetched with the operator's token,
run with LiteRT on prepare.py's test.npz (examples/cross_silo/README.md, last step)."""

from __future__ import annotations

import argparse
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from fedrt.model_export.litert_model import LiteRTModel
from fedrt.model_export.manifest import Manifest
from fedrt.simulation.datasets import Dataset
from fedrt.simulation.evaluate import accuracy_and_loss


def _get(url: str, token: str) -> bytes:
    # The token is a bearer secret: http(s) only (plain http to loopback: one machine here).
    if not url.startswith(("http://127.0.0.1", "http://localhost", "https://")):
        raise SystemExit(f"evaluate.py: https, or plain http to loopback only, not {url}")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 (checked above)
        body: bytes = reply.read()
        return body


def evaluate(url: str, token: str, task_id: str, test: Path) -> dict[str, Any]:
    task = json.loads(_get(f"{url}/v1/tasks/{task_id}", token))
    sha = task["model_sha256"]
    meta = json.loads(_get(f"{url}/v1/models/{sha}/meta", token))
    manifest = Manifest.from_dict(meta["manifest"])
    model = LiteRTModel(_get(f"{url}/v1/models/{sha}", token), manifest, num_threads=1)
    with np.load(test) as data:
        held_out = Dataset("digits", data["x"].astype(np.float32), data["y"].astype(np.int32), 10)
    figures = accuracy_and_loss(model, manifest, held_out)
    return {"task_id": task_id, "round_no": meta.get("round_no"), "sha256": sha, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", required=True)
    parser.add_argument("--test", type=Path, required=True, help="prepare.py's test.npz")
    parser.add_argument("--url", default=os.environ.get("FEDRT_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--token-file", type=Path, required=True, help="the admin token")
    args = parser.parse_args()
    token = args.token_file.read_text().strip()
    print(json.dumps(evaluate(args.url.rstrip("/"), token, args.task, args.test)))


if __name__ == "__main__":
    main()
