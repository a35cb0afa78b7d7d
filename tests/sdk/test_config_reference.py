"""The device.toml reference in docs/guide-raspberry-pi.md is the generator's output, and the
generator's --check and --write do what they say."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrt.sdk.config_reference import BEGIN, END, main, render, replace_block
from fedrt.sdk.device_file import keys

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide-raspberry-pi.md"


def test_the_guide_holds_the_generated_reference() -> None:
    text = GUIDE.read_text()
    assert replace_block(text, render()) == text, (
        "docs/guide-raspberry-pi.md is stale: python -m fedrt.sdk.config_reference --write "
        "docs/guide-raspberry-pi.md"
    )
    for key in keys():  # every key the loader accepts is documented
        assert f"| `{key.name}` |" in text


def test_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "guide.md"
    doc.write_text(f"# Guide\n\n{BEGIN}\n| stale |\n{END}\n\nAfter.\n")
    assert main(["--check", str(doc)]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["--write", str(doc)]) == 0
    assert main(["--check", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(f"# Guide\n\n{BEGIN}\n#### `[device]`")
    assert text.endswith(f"{END}\n\nAfter.\n")
    doc.write_text("no markers\n")
    assert main(["--check", str(doc)]) == 2
    assert main([]) == 0
    assert capsys.readouterr().out == render()
