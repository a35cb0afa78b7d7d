"""The ``fedrt`` command line; its subcommands are contributed by the packages.

A package adds a command by declaring an entry point in the ``fedrt.commands`` group
(``fedrt bench`` back-ends use ``fedrt.bench``) whose value is a function
``register(subparsers) -> None``. The function adds its parser and sets ``run`` to a
callable ``run(args) -> int``. Only the named command's module is imported, so
``fedrt --version`` and device-side commands never load TensorFlow or aiohttp.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from fedrt import __version__
from fedrt.errors import FedrtError
from fedrt.logs import FORMATS, LEVELS, LogConfigError, configure

COMMAND_GROUP = "fedrt.commands"
BENCH_GROUP = "fedrt.bench"

Register = Callable[[Any], None]
log = logging.getLogger("fedrt")


def _group(name: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=name)}


def _register_bench(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="measure fedrt against its targets")
    bench = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for ep in sorted(_group(BENCH_GROUP).values(), key=lambda e: e.name):
        register: Register = ep.load()
        register(bench)


def _loader(ep: EntryPoint) -> Register:
    def register(subparsers: Any) -> None:
        fn: Register = ep.load()
        fn(subparsers)

    return register


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; with ``command`` set, load only that command's module."""
    parser = argparse.ArgumentParser(prog="fedrt", description="federated learning runtime")
    parser.add_argument("--version", action="version", version=f"fedrt {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=LEVELS,
        help="or FEDRT_LOG_LEVEL; default: INFO (WARNING for commands that print progress)",
    )
    parser.add_argument(
        "--log-format",
        default=None,
        type=str.lower,
        choices=FORMATS,
        help="text (default) or json: one JSON object per line (or FEDRT_LOG_FORMAT)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = _group(COMMAND_GROUP)
    registrars: dict[str, Register] = {}
    if _group(BENCH_GROUP):
        registrars["bench"] = _register_bench
    for name, ep in commands.items():
        registrars[name] = _loader(ep)
    for name in sorted(registrars):
        if command is None or command == name:
            registrars[name](sub)
    return parser


def _first_command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


_GLOBAL_OPTIONS = ("--log-level", "--log-format")


def _hoist_global_options(argv: list[str]) -> list[str]:
    """Move ``--log-level X`` / ``--log-format X`` given after the subcommand to the front,
    so ``fedrt coordinator serve --log-format json`` works as ``fedrt --log-format json ...``."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_OPTIONS and "=" in arg:
            front.append(arg)
        elif name in _GLOBAL_OPTIONS and i + 1 < len(argv):
            front += argv[i : i + 2]
            i += 1
        elif arg == "--":
            rest += argv[i:]
            break
        else:
            rest.append(arg)
        i += 1
    return front + rest


def main(argv: Sequence[str] | None = None) -> int:
    args_in = _hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    first = _first_command(args_in)
    known = set(_group(COMMAND_GROUP)) | ({"bench"} if _group(BENCH_GROUP) else set())
    parser = build_parser(first if first in known else None)
    args = parser.parse_args(args_in)
    try:
        configure(args.log_level, args.log_format,
                  default_level=getattr(args, "default_log_level", "INFO"))  # fmt: skip
    except LogConfigError as exc:
        parser.error(str(exc))
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return run(args)
    except FedrtError as exc:
        print(f"fedrt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
