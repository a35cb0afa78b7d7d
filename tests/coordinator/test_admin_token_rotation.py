"""``fedrt coordinator rotate-admin-token``: a serving coordinator takes the new token at
once and the old one for a grace period, with no restart."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fedrt.cli import main
from fedrt.coordinator.config import BrokerConfig, CoordinatorConfig, HttpConfig, Secret
from fedrt.coordinator.security.admin_token import AdminToken, write_admin_token
from fedrt.coordinator.service import ADMIN_TOKEN_FILE
from tests.coordinator.harness import ServiceThread


def _config(data_dir: Path, **extra: object) -> CoordinatorConfig:
    return CoordinatorConfig(
        data_dir=data_dir,
        tick_interval_s=0.05,
        http=HttpConfig(port=0),
        broker=BrokerConfig(url="embedded", embedded_port=0),
        **extra,  # type: ignore[arg-type]
    )


def _status(svc: ServiceThread, token: str) -> int:
    return svc.request("GET", "/v1/tasks", token=token, check=False).status


@pytest.mark.parametrize(("grace", "old_after"), [(600.0, 200), (0.0, 401)])
def test_a_serving_coordinator_takes_the_rotated_token(
    tmp_path: Path, grace: float, old_after: int
) -> None:
    data = tmp_path / "data"
    path = data / ADMIN_TOKEN_FILE
    with ServiceThread(_config(data, admin_token_grace_s=grace)) as svc:
        old = path.read_text().strip()
        assert _status(svc, old) == 200
        rotate = ["coordinator", "rotate-admin-token", "--data-dir", str(data)]
        assert main(rotate) == 0
        new = path.read_text().strip()
        assert new != old
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert _status(svc, new) == 200
        assert _status(svc, old) == old_after
        assert _status(svc, "not-the-token-at-all-0123") == 401
        assert main(rotate) == 0  # again: the first new token is now the previous one
        newest = path.read_text().strip()
        assert _status(svc, newest) == 200
        assert _status(svc, old) == 401  # only one previous token is ever kept


def test_the_grace_period_ends_and_a_bad_file_keeps_the_token_in_use(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / ADMIN_TOKEN_FILE
    first = write_admin_token(path)
    token = AdminToken(first, path=path, grace_s=60.0, clock=lambda: now[0])
    second = write_admin_token(path)
    assert token.accepts(second.reveal().encode())
    now[0] = 59.0
    assert token.accepts(first.reveal().encode())
    now[0] = 60.0
    assert not token.accepts(first.reveal().encode())
    path.write_text("short\n")  # a slip of the operator's: not a token
    assert token.accepts(second.reveal().encode())
    assert not token.accepts(None)
    assert not token.accepts(b"")


def test_a_configured_token_is_not_rotated_through_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixed = AdminToken(Secret("configured-token-0123456789"))
    assert fixed.accepts(b"configured-token-0123456789")
    config = tmp_path / "coordinator.toml"
    config.write_text(f'data_dir = "{tmp_path}"\nadmin_token = "configured-token-0123456789"\n')
    assert main(["coordinator", "rotate-admin-token", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "change it there and restart" in err
    assert not (tmp_path / ADMIN_TOKEN_FILE).exists()
