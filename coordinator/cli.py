"""``fedrt coordinator serve|backup|restore|rotate-admin-token``: run it, keep its state."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Entry point of ``fedrt coordinator`` (group ``fedrt.commands``); imports stay light."""
    parser = subparsers.add_parser("coordinator", help="run the federated-learning coordinator")
    sub = parser.add_subparsers(dest="coordinator_command", metavar="SUBCOMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve the REST API, dashboard and MQTT rounds",
        description="Config precedence: TOML file < FEDRT_* environment < these flags.",
    )
    serve.add_argument("--config", type=Path, help="coordinator.toml (or FEDRT_CONFIG)")
    serve.add_argument("--http", metavar="HOST:PORT", help="listen address (127.0.0.1:8080)")
    serve.add_argument(
        "--public-url",
        metavar="URL",
        help="the URL devices reach this coordinator at (required when --http is 0.0.0.0:PORT)",
    )
    serve.add_argument(
        "--tls",
        choices=["self-signed"],
        help="HTTPS with a certificate from the coordinator's own CA (DATA_DIR/tls/ca.crt)",
    )
    serve.add_argument("--tls-cert", metavar="PEM", help="HTTPS certificate (chain)")
    serve.add_argument("--tls-key", metavar="PEM", help="the key of --tls-cert")
    serve.add_argument(
        "--tls-ca", metavar="PEM", help="the CA that signs --tls-cert, handed to devices"
    )
    serve.add_argument(
        "--broker", metavar="URL", help="embedded (default), mqtt://HOST:PORT or mqtts://HOST:PORT"
    )
    serve.add_argument("--db", metavar="PATH", help="SQLite file (DATA_DIR/coordinator.sqlite3)")
    serve.add_argument(
        "--store",
        metavar="URL",
        help="postgresql://USER@HOST:PORT/DB instead of SQLite (a password belongs in "
        "FEDRT_STORE_URL, not on a command line others can read)",
    )
    serve.add_argument("--data-dir", metavar="DIR", help="keys, artifacts, database (fedrt-data)")
    serve.add_argument(
        "--instance-id",
        metavar="ID",
        help="this instance's name among several on one store (default: host and data dir)",
    )
    serve.add_argument(
        "--pace-min-delay",
        type=float,
        metavar="S",
        help="pace steering: no device sent away returns sooner than this (60)",
    )
    serve.add_argument(
        "--pace-spread", type=float, metavar="S", help="width of each reconnect window (30)"
    )
    serve.add_argument(
        "--pace-rate",
        type=float,
        metavar="N",
        help="check-ins per second at most from devices sent away (10)",
    )
    serve.add_argument(
        "--eval-data",
        metavar="FILE",
        help="held-out .npz (x, y): each task's new versions are evaluated on it and one that "
        "loses more than the task's promote_margin of accuracy is not promoted",
    )
    serve.set_defaults(run=run_serve)
    _register_maintenance(sub)


def _register_maintenance(sub: Any) -> None:
    """``backup``, ``restore`` and ``rotate-admin-token``: they work beside a running serve."""

    def paths(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", type=Path, help="coordinator.toml (or FEDRT_CONFIG)")
        parser.add_argument("--data-dir", metavar="DIR", help="the coordinator's data dir")
        parser.add_argument(
            "--db", metavar="PATH", help="SQLite file (DATA_DIR/coordinator.sqlite3)"
        )
        parser.add_argument("--store", metavar="URL", help="postgresql://... (unset: SQLite)")

    backup = sub.add_parser(
        "backup",
        help="copy the database, model files and keys into a new directory (service may run)",
    )
    backup.add_argument("dir", type=Path, metavar="DIR", help="a new or empty directory")
    paths(backup)
    backup.set_defaults(run=run_backup)
    restore = sub.add_parser(
        "restore", help="verify a backup and write it into a data dir (service stopped)"
    )
    restore.add_argument("dir", type=Path, metavar="DIR", help="made by `coordinator backup`")
    paths(restore)
    restore.add_argument("--force", action="store_true", help="overwrite a non-empty data dir")
    restore.set_defaults(run=run_restore)
    rotate = sub.add_parser(
        "rotate-admin-token",
        help="write a new DATA_DIR/admin-token; a running service takes it without a restart",
    )
    paths(rotate)
    rotate.set_defaults(run=run_rotate_admin_token)


def _paths_config(args: argparse.Namespace) -> Any:
    from fedrt.coordinator.config import cli_layer, load_config

    layer = cli_layer(db=args.db, data_dir=args.data_dir, store=args.store)
    return load_config(args.config, cli=layer)


def run_backup(args: argparse.Namespace) -> int:
    from fedrt.coordinator.api.tls import TLS_DIR
    from fedrt.coordinator.errors import ConfigError
    from fedrt.coordinator.security.signing import KEY_FILE
    from fedrt.coordinator.service import ADMIN_TOKEN_FILE
    from fedrt.coordinator.store.backup import create_backup

    config = _paths_config(args)
    if config.store.url is not None:
        raise ConfigError(
            "the store is PostgreSQL (store.url): back it up with pg_dump, and copy the data "
            "dir's keys, admin-token, tls/ and artifacts/ yourself"
        )
    # The state a coordinator cannot rebuild: keys, the operator token, the CA, model files.
    entries = (KEY_FILE, ADMIN_TOKEN_FILE, TLS_DIR, "artifacts")
    manifest = create_backup(config.db_path, config.data_dir, entries, args.dir)
    print(f"backed up {len(manifest['files'])} files to {args.dir}")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    from fedrt.coordinator.store.backup import restore_backup

    config = _paths_config(args)
    manifest = restore_backup(args.dir, config.db_path, config.data_dir, force=args.force)
    print(
        f"restored {len(manifest['files'])} files into {config.data_dir} "
        f"(backup of {manifest.get('created')}, fedrt {manifest.get('fedrt_version')})"
    )
    return 0


def run_rotate_admin_token(args: argparse.Namespace) -> int:
    from fedrt.coordinator.errors import ConfigError
    from fedrt.coordinator.security.admin_token import write_admin_token
    from fedrt.coordinator.service import ADMIN_TOKEN_FILE

    config = _paths_config(args)
    if config.admin_token is not None:
        raise ConfigError(
            "the admin token comes from the configuration (admin_token or FEDRT_ADMIN_TOKEN): "
            "change it there and restart the coordinator"
        )
    path = config.data_dir / ADMIN_TOKEN_FILE
    if not config.data_dir.is_dir():
        raise ConfigError(f"no data dir at {config.data_dir}: pass --data-dir or --config")
    write_admin_token(path)
    print(
        f"wrote a new admin token to {path}; a running coordinator accepts the old one "
        f"for {config.admin_token_grace_s:g} s more"
    )
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from fedrt.coordinator.config import cli_layer, load_config

    config = load_config(
        args.config,
        cli=cli_layer(
            http=args.http,
            public_url=args.public_url,
            tls=args.tls,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
            broker=args.broker,
            db=args.db,
            store=args.store,
            data_dir=args.data_dir,
            instance_id=args.instance_id,
            pace_min_delay=args.pace_min_delay,
            pace_spread=args.pace_spread,
            pace_rate=args.pace_rate,
            eval_data=args.eval_data,
        ),
    )
    asyncio.run(serve(config))
    return 0


async def serve(config: Any, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set or SIGTERM/SIGINT arrives; always shut down gracefully."""
    from fedrt.coordinator.driver_registry import default_driver_factory
    from fedrt.coordinator.service import CoordinatorService

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = CoordinatorService(config, driver_factory=default_driver_factory())
    try:
        await service.start()
        print(
            f"fedrt coordinator: {service.public_url} "
            f"(admin token: {(config.admin_token and 'from config') or 'see data dir'})",
            flush=True,
        )
        await stop.wait()
        log.info("shutdown requested")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await service.stop()


__all__ = [
    "register", "run_backup", "run_restore", "run_rotate_admin_token", "run_serve", "serve",
]  # fmt: skip
