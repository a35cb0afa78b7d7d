"""`import fedrt.sdk` in a fresh process loads no TensorFlow, aiohttp or pydantic; RSS reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fedrt.sdk

PROBE = r"""
import json, sys

def hwm_kb():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking pytest.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1

# pydantic is the coordinator's (fedrt[device] does not install it).
HEAVY = ("tensorflow", "keras", "aiohttp", "pydantic", "pydantic_core", "pydantic_settings")

class Forbid:
    # Any attempt to import these fails loudly instead of silently costing 500 MB (and
    # numpy.random 1.9 MiB: a device's rounding and DP noise come from the AES-CTR PRG).
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY or name == "numpy.random":
            raise ImportError(f"device code imported {name}")
        return None

sys.meta_path.insert(0, Forbid())
import fedrt.sdk
after_import = hwm_kb()
for name in fedrt.sdk.__all__:
    getattr(fedrt.sdk, name)
trainer = fedrt.sdk.LiteRtTrainer.open(sys.argv[1])
trainer.get_weights()
from fedrt.sdk.participant import SystemJitter
jitter = SystemJitter()
jitter.uniform(0.0, 1.0)
import numpy as np
from fedrt.protocol import round_dp, round_update
from fedrt.protocol.prg import KeyedUniforms
from fedrt.protocol.round_plan import UpdateSpec
spec = UpdateSpec(params=5, clip_norm=1.0, bits=8, weight_cap=10, rotation_seed=b"r")
round_update.encode(np.ones(5, np.float32), 3, spec, KeyedUniforms(bytes(32)))
for skellam in (False, True):  # the device's DP path: rounding and noise, each keyed
    noisy = round_dp.calibrate(spec, noise_multiplier=1.0, clients=10, threshold=5,
                               skellam=skellam, unclipped_bit=True, bit_sum_std=2.0)
    round_dp.device_vector(np.ones(5, np.float32), 1, noisy, KeyedUniforms(bytes(32)),
                           noise=KeyedUniforms(bytes(range(32))))
# Never loaded on a device: numpy.random (1.9 MiB of extension modules). Loaded only when
# an op histogram is named: LiteRT's 690 KB generated schema (6.7 MiB of RSS).
late = ("numpy.random", "ai_edge_litert.schema_py_generated")
print(json.dumps({
    "rss_import_kb": after_import,
    "rss_all_kb": hwm_kb(),
    "modules": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY),
    "late": sorted(m for m in late if m in sys.modules),
}))
"""


def test_sdk_imports_no_tensorflow_aiohttp_or_pydantic(exported_mlp: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(exported_mlp)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["modules"] == []
    assert report["late"] == []
    # Reported, not asserted (timings and sizes belong to benchmarks).
    print(
        f"\nfedrt.sdk peak RSS: {report['rss_import_kb'] / 1024:.1f} MB after import, "
        f"{report['rss_all_kb'] / 1024:.1f} MB with every export loaded and a model open"
    )


def test_bare_import_loads_only_the_errors() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, fedrt.sdk; print(sorted(m for m in ('numpy', 'paho', 'cryptography',"
            " 'sqlite3', 'ai_edge_litert') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert fedrt.sdk.__all__ == sorted(fedrt.sdk.__all__)
    for name in fedrt.sdk.__all__:
        assert getattr(fedrt.sdk, name) is not None


def test_the_facade_names_of_docs_sdk_are_importable_from_the_package_lazily() -> None:
    code = (
        "import sys, fedrt.sdk\n"
        "assert 'fedrt.sdk.device' not in sys.modules, 'fedrt.sdk imported the facade eagerly'\n"
        "from fedrt.sdk import Device, DeviceConfig, DeviceEvent, ExampleStore, "
        "EligibilityPolicy, LinuxDeviceState, ScriptedDeviceState, idle_plugged_in\n"
        "from fedrt.sdk.device import Device as D\n"
        "assert Device is D\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
