"""One distribution: editable and wheel installs import alike; device imports stay light; CLI."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import fedrt
from fedrt.cli import main

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("protocol", "sdk", "coordinator", "model_export")
HEAVY = ("tensorflow", "keras", "aiohttp", "aiomqtt", "amqtt")

# A meta-path finder that makes every import of a heavy framework fail, as on a device.
BLOCKER = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {heavy!r}:
            raise ImportError(f"{{name}} is not installed on this device")
        return None
sys.meta_path.insert(0, _Block())
"""


def _run(python: Path | str, code: str, **kwargs: object) -> str:
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=240, **kwargs
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_device_side_imports_load_no_heavy_framework() -> None:
    code = BLOCKER.format(heavy=HEAVY) + (
        "import fedrt.sdk, fedrt.protocol, fedrt.model_export, fedrt.cli\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    assert _run(sys.executable, code, cwd="/").strip() == "[]"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, timeout=240, capture_output=True,
    )  # fmt: skip
    (found,) = out.glob("fedrt-*.whl")
    return found


def test_wheel_contains_every_subpackage(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for sub in SUBPACKAGES:
        assert f"fedrt/{sub}/__init__.py" in names
        assert f"fedrt/{sub}/py.typed" in names
    assert "fedrt/cli.py" in names
    assert not any(n.startswith(("tests/", "protocol/", "sdk/")) for n in names)


def test_wheel_installs_and_imports_in_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, timeout=240, capture_output=True,
    )  # fmt: skip
    # Third-party libraries come from the dev environment, but fedrt itself only from the wheel:
    # a path in a .pth file is added as is, so the editable finder there is not activated.
    purelib = Path(sysconfig.get_paths()["purelib"])
    fresh_site = Path(_run(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    (Path(fresh_site.as_posix().strip()) / "devlibs.pth").write_text(f"{purelib}\n")
    imports = "".join(f"print(import_module('fedrt.{s}').__file__)\n" for s in SUBPACKAGES)
    code = (
        BLOCKER.format(heavy=("tensorflow", "aiohttp"))
        + "from importlib import import_module\n"
        + imports
    )
    files = _run(python, code, cwd=tmp_path).split()
    assert len(files) == len(SUBPACKAGES)
    assert all(f.startswith(str(venv)) for f in files), files
    version = subprocess.run(
        [str(venv / "bin" / "fedrt"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.stdout.strip() == f"fedrt {fedrt.__version__}"


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedrt {fedrt.__version__}"


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_runs() -> None:
    script = Path(sys.executable).parent / "fedrt"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: fedrt" in out.stdout
    assert "not implemented" not in out.stdout.lower()
