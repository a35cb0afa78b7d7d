"""``fedrt tasks|rounds|models|devices|tokens|audit``: thin commands over ``OpsClient``.

Each command parses its flags, makes one or two client calls and prints the result: a table
for people, the API's JSON as is with ``--json``. Exit status (``EXIT_CODES``): 0 done,
1 the coordinator refused, 2 usage or configuration, 3 coordinator unreachable or TLS
failed, 4 not found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrt.ops import render
from fedrt.ops.client import OpsClient
from fedrt.ops.connection import (
    DEFAULT_TIMEOUT_S,
    ENV_CA_FILE,
    ENV_TOKEN,
    ENV_URL,
    load_connection,
)
from fedrt.ops.errors import (
    ApiError,
    NotFoundError,
    OpsConfigError,
    OpsError,
    UnreachableError,
)
from fedrt.ops.task_spec import build_spec

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
# Most specific first: NotFoundError is an ApiError.
EXIT_CODES: tuple[tuple[type[OpsError], int], ...] = (
    (NotFoundError, EXIT_NOT_FOUND),
    (ApiError, EXIT_REFUSED),
    (UnreachableError, EXIT_UNREACHABLE),
    (OpsConfigError, EXIT_USAGE),
)


# Where to look when a name is not found, per command group.
_LOOKUP = {
    "tasks": "fedrt tasks list",
    "rounds": "fedrt tasks list, fedrt rounds list TASK",
    "models": "fedrt models list",
    "devices": "fedrt devices list",
}


def exit_code(exc: OpsError) -> int:
    return next((code for cls, code in EXIT_CODES if isinstance(exc, cls)), EXIT_USAGE)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command prints: ``data`` with --json, else ``text``; ``note`` goes to stderr."""

    data: Any
    text: str
    note: str = ""


Command = Callable[[OpsClient, argparse.Namespace], Outcome]


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument("--url", help=f"the coordinator, e.g. https://host:8080 (or {ENV_URL})")
    group.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help=f"file holding the admin token (else {ENV_TOKEN}); never a flag: argv leaks",
    )
    group.add_argument(
        "--ca-file", type=Path, metavar="PEM", help=f"the coordinator's CA (or {ENV_CA_FILE})"
    )
    group.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow plain http to a non-loopback host (sends the token in clear)",
    )
    group.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="per request"
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON as is")
    return common


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            connection = load_connection(
                url=args.url,
                token_file=args.token_file,
                ca_file=args.ca_file,
                insecure_http=args.insecure_http,
                timeout_s=args.timeout,
                env=os.environ,
            )
            out = command(OpsClient(connection), args)
        except OpsError as exc:
            lookup = _LOOKUP.get(args.ops_prog.split()[1])
            hint = f" (see {lookup})" if isinstance(exc, NotFoundError) and lookup else ""
            print(f"{args.ops_prog}: {exc}{hint}", file=sys.stderr)
            return exit_code(exc)
        print(json.dumps(out.data, indent=2) if args.json else out.text)
        if out.note and not args.json:
            print(out.note, file=sys.stderr)
        return EXIT_OK

    return run


def _leaf(sub: Any, prog: str, name: str, help: str, command: Command) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=help, parents=[_connection_options()]
    )
    # Commands that print results log only warnings unless asked (--log-level).
    parser.set_defaults(
        run=_run(command),
        ops_prog=" ".join(p for p in ("fedrt", prog, name) if p),
        default_log_level="WARNING",
    )
    return parser


def _group(subparsers: Any, name: str, help: str) -> Any:
    parser = subparsers.add_parser(name, help=help, description=help)
    return parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", required=True)


# ------------------------------------------------------------------ tasks
def _tasks_list(c: OpsClient, a: argparse.Namespace) -> Outcome:
    body = c.list_tasks()
    return Outcome(body, render.tasks(body))


def _tasks_show(c: OpsClient, a: argparse.Namespace) -> Outcome:
    body = c.get_task(a.task)
    return Outcome(body, render.task(body))


def _tasks_create(c: OpsClient, a: argparse.Namespace) -> Outcome:
    spec = build_spec(a.spec, a.overrides)  # before any upload: a typo costs no request
    sha = a.model_sha256
    if a.upload is not None:
        sha = c.upload_model(a.upload)["sha256"]
    task = c.create_task(
        name=a.name, spec=spec, model_dir=a.model_dir, model_sha256=sha, task_id=a.task_id
    )
    if a.start:
        task = c.task_action(task["task_id"], "start")
    return Outcome(task, render.task(task))


def _task_action(action: str, verb: str) -> Command:
    def command(c: OpsClient, a: argparse.Namespace) -> Outcome:
        task = c.task_action(a.task, action)
        return Outcome(task, render.task_moved(task, verb))

    return command


def register_tasks(subparsers: Any) -> None:
    """``fedrt tasks list|show|create|start|pause|resume|cancel`` (group ``fedrt.commands``)."""
    sub = _group(subparsers, "tasks", "list, create and steer training tasks")
    _leaf(sub, "tasks", "list", "list tasks with their latest round", _tasks_list)
    _leaf(sub, "tasks", "show", "one task: status, model, spec", _tasks_show).add_argument("task")
    create = _leaf(sub, "tasks", "create", "create a task (status created)", _tasks_create)
    create.add_argument("--name", required=True, help="a label for people")
    create.add_argument("--task-id", metavar="ID", help="the task's id (default: generated)")
    model = create.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--model-dir", metavar="PATH", help="a `fedrt export` dir ON THE COORDINATOR"
    )
    model.add_argument("--model-sha256", metavar="SHA", help="an uploaded version (models list)")
    model.add_argument("--upload", type=Path, metavar="DIR", help="upload a local export dir")
    create.add_argument("--spec", type=Path, metavar="FILE", help="the task spec, .json or .toml")
    create.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a spec field over --spec (repeatable; dp.mode=central for nested; JSON values)",
    )
    create.add_argument("--start", action="store_true", help="start it once created")
    for action, verb, help in (
        ("start", "started", "start a created task"),
        ("pause", "paused", "pause a running task (the current round is abandoned)"),
        ("resume", "resumed", "resume a paused task"),
        ("cancel", "cancelled", "cancel a task for good"),
    ):
        _leaf(sub, "tasks", action, help, _task_action(action, verb)).add_argument("task")


# ------------------------------------------------------------------ rounds
def _rounds_list(c: OpsClient, a: argparse.Namespace) -> Outcome:
    body = c.list_rounds(a.task)
    return Outcome(body, render.rounds(body))


def _rounds_show(c: OpsClient, a: argparse.Namespace) -> Outcome:
    body = c.get_round(a.task, a.round_no)
    return Outcome(body, render.round_detail(body))


def _whole(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, not {text!r}")
    return int(text)


def register_rounds(subparsers: Any) -> None:
    """``fedrt rounds list TASK`` and ``fedrt rounds show TASK ROUND``."""
    sub = _group(subparsers, "rounds", "the rounds of a task")
    _leaf(sub, "rounds", "list", "a task's rounds", _rounds_list).add_argument("task")
    show = _leaf(sub, "rounds", "show", "one round with its stage transitions", _rounds_show)
    show.add_argument("task")
    show.add_argument("round_no", type=_whole, metavar="ROUND")


# ------------------------------------------------------------------ models
def _models_list(c: OpsClient, a: argparse.Namespace) -> Outcome:
    body = c.list_models(a.task)
    return Outcome(body, render.models(body))


def _models_upload(c: OpsClient, a: argparse.Namespace) -> Outcome:
    body = c.upload_model(a.export_dir)
    return Outcome(body, render.model(body))


def _models_promote(c: OpsClient, a: argparse.Namespace) -> Outcome:
    task = c.promote(a.task, a.sha256)
    return Outcome(task, render.task_moved(task, "promoted"))


def _models_rollback(c: OpsClient, a: argparse.Namespace) -> Outcome:
    task = c.rollback(a.task, a.to)
    return Outcome(task, render.task_moved(task, "rolled back"))


def register_models(subparsers: Any) -> None:
    """``fedrt models list|upload|promote|rollback``."""
    sub = _group(subparsers, "models", "model versions and which one a task serves")
    listing = _leaf(sub, "models", "list", "model versions, newest lineage", _models_list)
    listing.add_argument("--task", metavar="TASK", help="only this task's versions")
    upload = _leaf(sub, "models", "upload", "upload a `fedrt export` directory", _models_upload)
    upload.add_argument("export_dir", type=Path, metavar="DIR")
    promote = _leaf(
        sub, "models", "promote", "make a version the task's current model", _models_promote
    )
    promote.add_argument("task")
    promote.add_argument("sha256", metavar="SHA256", help="the full sha256 (models list)")
    rollback = _leaf(
        sub, "models", "rollback", "roll a task back (default: the parent)", _models_rollback
    )
    rollback.add_argument("task")
    rollback.add_argument("--to", metavar="SHA256", help="an ancestor version instead")


# ------------------------------------------------------------------ devices, tokens, audit
def _devices_list(c: OpsClient, a: argparse.Namespace) -> Outcome:
    body = c.list_devices()
    return Outcome(body, render.devices(body))


def _devices_revoke(c: OpsClient, a: argparse.Namespace) -> Outcome:
    body = c.revoke_device(a.device)
    return Outcome(body, f"device {body['device_id']} revoked (its next connection is refused)")


def register_devices(subparsers: Any) -> None:
    """``fedrt devices list|revoke``."""
    sub = _group(subparsers, "devices", "enrolled devices")
    _leaf(sub, "devices", "list", "enrolled devices", _devices_list)
    revoke = _leaf(sub, "devices", "revoke", "revoke a device's credentials", _devices_revoke)
    revoke.add_argument("device")


def _tokens_create(c: OpsClient, a: argparse.Namespace) -> Outcome:
    body = c.create_enrollment_token(ttl_s=a.ttl, note=a.note)
    # The token alone on stdout, so TOKEN=$(fedrt tokens create) works.
    note = f"one-time enrollment token, valid until {render.when(body['expires_at'])}"
    return Outcome(body, body["token"], note)


def register_tokens(subparsers: Any) -> None:
    """``fedrt tokens create``."""
    sub = _group(subparsers, "tokens", "one-time enrollment tokens for devices")
    create = _leaf(sub, "tokens", "create", "issue a one-time enrollment token", _tokens_create)
    create.add_argument("--ttl", type=float, metavar="S", help="seconds valid (default 86400)")
    create.add_argument("--note", default="", help="what it is for (kept in the audit log)")


def _audit(c: OpsClient, a: argparse.Namespace) -> Outcome:
    body = c.audit(after=a.after, limit=a.limit)
    return Outcome(body, render.audit(body))


def register_audit(subparsers: Any) -> None:
    """``fedrt audit [--after SEQ] [--limit N]``."""
    parser = _leaf(subparsers, "", "audit", "the coordinator's audit log, oldest first", _audit)
    parser.add_argument("--after", type=_whole, default=0, metavar="SEQ", help="entries after SEQ")
    parser.add_argument("--limit", type=_whole, default=100, metavar="N", help="at most N (1000)")


__all__ = [
    "EXIT_CODES", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_REFUSED", "EXIT_UNREACHABLE", "EXIT_USAGE",
    "Outcome", "exit_code", "register_audit", "register_devices", "register_models",
    "register_rounds", "register_tasks", "register_tokens",
]  # fmt: skip
