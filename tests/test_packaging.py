"""One distribution: editable and wheel installs import alike; device imports stay light; CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import fedrt
from fedrt.cli import main

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("protocol", "sdk", "coordinator", "model_export", "ops")
HEAVY = ("tensorflow", "keras", "aiohttp", "amqtt")
# The coordinator validates with pydantic; a device never loads it (nor needs it installed).
COORDINATOR_ONLY = ("pydantic", "pydantic_core", "pydantic_settings")

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
    blocked = HEAVY + COORDINATOR_ONLY
    code = BLOCKER.format(heavy=blocked) + (
        "import fedrt.sdk, fedrt.protocol, fedrt.model_export, fedrt.cli\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {blocked!r}))\n"
    )
    assert _run(sys.executable, code, cwd="/").strip() == "[]"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a clean copy: setuptools' build/ keeps the files of earlier builds (modules
    # since moved or deleted), and a wheel built in place would ship them.
    src = tmp_path_factory.mktemp("src") / "fedrt"
    junk = (".venv", "build", ".git", ".typecheck", "*.egg-info", "*_cache", ".hypothesis")
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*junk, "__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)],
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


def test_wheel_contains_every_coordinator_module_and_the_dashboard(wheel: Path) -> None:
    # Sub-packages are listed in pyproject.toml by hand: one left out imports fine from
    # the source tree but is missing from the wheel.
    names = set(zipfile.ZipFile(wheel).namelist())
    coordinator = ROOT / "coordinator"
    packages = sorted(coordinator.rglob("__init__.py"))
    assert len(packages) > 1
    for module in sorted(coordinator.rglob("*.py")):
        assert f"fedrt/coordinator/{module.relative_to(coordinator).as_posix()}" in names
    static = sorted(p.name for p in (coordinator / "api" / "static").iterdir() if p.is_file())
    assert "index.html" in static
    for asset in static:
        assert f"fedrt/coordinator/api/static/{asset}" in names


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


def _extra_closure(metadata: str, extra: str) -> set[str]:
    """Distribution names ``fedrt[extra]`` pulls in, following ``fedrt[...]`` references."""
    from packaging.requirements import Requirement

    reqs = [Requirement(line.split(":", 1)[1].strip())
            for line in metadata.splitlines() if line.startswith("Requires-Dist:")]  # fmt: skip
    wanted: set[str] = set()
    todo, names = ["", extra], set()  # "": the base dependencies, always installed
    while todo:
        current = todo.pop()
        if current in wanted:
            continue
        wanted.add(current)
        for req in reqs:
            if req.marker is not None and not req.marker.evaluate({"extra": current}):
                continue
            if req.marker is None and current != "":
                continue
            if req.name == "fedrt":
                todo.extend(req.extras)
            else:
                names.add(req.name.lower())
    return names


def test_the_coordinator_extra_pulls_no_litert_or_tensorflow(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        (meta,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = whl.read(meta).decode()
    coordinator = _extra_closure(metadata, "coordinator")
    assert {"aiohttp", "paho-mqtt", "amqtt", "numpy"} <= coordinator
    assert "aiomqtt" not in coordinator  # the link uses paho's public API alone
    assert not coordinator & {"ai-edge-litert", "tflite-runtime", "tensorflow"}, coordinator
    assert {"pydantic", "pydantic-settings"} <= coordinator
    device = _extra_closure(metadata, "device")
    assert not device & {"pydantic", "pydantic-settings", "aiohttp"}, device
    assert "ai-edge-litert" in device
    assert "ai-edge-litert" in _extra_closure(metadata, "sim")
    # amqtt 0.11.0-0.11.3 carry a topic-matching ReDoS advisory.
    from packaging.requirements import Requirement

    lines = [line.split(":", 1)[1] for line in metadata.splitlines()
             if line.startswith("Requires-Dist: amqtt")]  # fmt: skip
    specifiers = {Requirement(line).specifier for line in lines}
    assert len(specifiers) == 1
    (amqtt,) = specifiers
    assert not amqtt.contains("0.11.3")
    assert amqtt.contains("0.11.4")


def test_constraints_pin_every_dependency_the_dev_install_names() -> None:
    from packaging.requirements import Requirement

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        named += extra
    for spec in named:
        req = Requirement(spec)
        if req.name == "fedrt":
            continue
        assert req.name.lower() in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[req.name.lower()]), (req, pins[req.name.lower()])
