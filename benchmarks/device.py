"""``fedrt bench device``: LiteRT vs TensorFlow time per train step and peak RSS."""

from __future__ import annotations

import argparse
from typing import Any


def run(args: argparse.Namespace) -> int:
    print("fedrt bench device: not implemented yet")
    return 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("device", help="LiteRT vs TensorFlow train-step time and RSS")
    parser.set_defaults(run=run)
