"""examples/systemd/: systemd accepts each unit as written, and their sandboxes are tight."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "examples" / "systemd"
UNIT = UNITS / "fedrt-device.service"
COORDINATOR_UNIT = UNITS / "fedrt-coordinator.service"
ALL_UNITS = pytest.mark.parametrize("unit", [UNIT, COORDINATOR_UNIT], ids=lambda u: u.stem)
INSTALLED_AT = "/opt/fedrt/venv/bin/fedrt"
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _service(unit: Path = UNIT) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    return parser["Service"]


def _here(tmp_path: Path, unit: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's fedrt (verify checks it exists)."""
    fedrt = Path(sys.executable).parent / "fedrt"
    assert fedrt.exists(), fedrt
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED_AT, str(fedrt)))
    return copy


def test_the_unit_runs_the_device_as_its_own_user_with_a_state_directory() -> None:
    service = _service()
    assert service["ExecStart"].startswith(f"{INSTALLED_AT} device run --config /etc/fedrt/")
    assert service["User"] == "fedrt"
    assert service["StateDirectory"] == "fedrt"
    assert service["ReadWritePaths"] == "/var/lib/fedrt"
    assert service["Restart"] == "on-failure"
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes")]:  # fmt: skip
        assert service[key] == value, key


def test_the_coordinator_unit_runs_serve_as_its_own_user_with_a_private_state_directory() -> None:
    service = _service(COORDINATOR_UNIT)
    assert service["ExecStart"] == (
        f"{INSTALLED_AT} coordinator serve --config /etc/fedrt/coordinator.toml"
    )
    assert service["User"] == "fedrt-coordinator"
    assert service["StateDirectory"] == "fedrt-coordinator"
    # Keys and the admin token live there: nobody else reads it.
    assert service["StateDirectoryMode"] == "0700"
    assert service["UMask"] == "0077"
    assert service["ReadWritePaths"] == "/var/lib/fedrt-coordinator"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"  # the graceful shutdown
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes")]:  # fmt: skip
        assert service[key] == value, key


@needs_systemd
@ALL_UNITS
def test_systemd_analyze_verify_has_nothing_to_say(tmp_path: Path, unit: Path) -> None:
    assert ANALYZE is not None
    out = subprocess.run([ANALYZE, "verify", str(_here(tmp_path, unit))], capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    # verify exits 0 on unknown keys and bad values too: its warnings are the failures.
    assert out.returncode == 0, out.stderr
    assert out.stdout + out.stderr == ""


@needs_systemd
@ALL_UNITS
def test_systemd_rates_the_sandbox_ok(tmp_path: Path, unit: Path) -> None:
    assert ANALYZE is not None
    out = subprocess.run([ANALYZE, "security", "--offline=true", str(_here(tmp_path, unit))],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    if "--offline" in out.stderr:
        pytest.skip(f"this systemd-analyze has no offline security check: {out.stderr.strip()}")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert found, out.stdout + out.stderr
    # 0 is a locked-down unit, 10 an unsandboxed one; systemd calls up to 2.x "OK".
    assert float(found.group(1)) <= 2.0, out.stdout
