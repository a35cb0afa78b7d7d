"""Logging of the fedrt commands: FEDRT_LOG_LEVEL / FEDRT_LOG_FORMAT, flags anywhere, JSON lines."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedrt.cli import _hoist_global_options
from fedrt.logs import JsonFormatter, LogConfigError, resolve


def test_flags_beat_the_environment_which_beats_the_commands_default() -> None:
    env = {"FEDRT_LOG_LEVEL": "debug", "FEDRT_LOG_FORMAT": "JSON"}
    assert resolve(None, None, "WARNING", {}) == ("WARNING", "text")
    assert resolve(None, None, "WARNING", env) == ("DEBUG", "json")
    assert resolve("ERROR", "text", "WARNING", env) == ("ERROR", "text")
    with pytest.raises(LogConfigError, match="log level"):
        resolve(None, None, "INFO", {"FEDRT_LOG_LEVEL": "LOUD"})
    with pytest.raises(LogConfigError, match="log format"):
        resolve(None, None, "INFO", {"FEDRT_LOG_FORMAT": "xml"})


def test_global_options_after_the_subcommand_move_to_the_front() -> None:
    argv = ["coordinator", "serve", "--log-format", "json", "--http", "h:1", "--log-level=DEBUG"]
    assert _hoist_global_options(argv) == [
        "--log-format", "json", "--log-level=DEBUG", "coordinator", "serve", "--http", "h:1",
    ]  # fmt: skip
    assert _hoist_global_options(["x", "--", "--log-level", "y"]) == ["x", "--", "--log-level", "y"]


def test_a_json_line_holds_the_message_level_logger_extras_and_exception() -> None:
    record = logging.LogRecord("fedrt.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.task_id = "task-1"
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "hello you"
    assert out["level"] == "WARNING"
    assert out["logger"] == "fedrt.x"
    assert out["task_id"] == "task-1"
    assert out["ts"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]


def test_the_environment_alone_turns_on_json_lines_and_a_bad_level_is_a_usage_error(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "FEDRT_LOG_FORMAT": "json", "FEDRT_LOG_LEVEL": "INFO"}
    code = (
        "import logging\n"
        "from fedrt.logs import configure\n"
        "configure()\n"
        "logging.getLogger('fedrt.t').info('hello', extra={'round_no': 3})\n"
        "logging.getLogger('fedrt.t').debug('not shown')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip
    (line,) = done.stderr.splitlines()
    assert json.loads(line)["message"] == "hello"
    assert json.loads(line)["round_no"] == 3
    bad = subprocess.run(
        [sys.executable, "-m", "fedrt", "coordinator", "serve", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "FEDRT_LOG_LEVEL": "LOUD"},
    )  # fmt: skip
    assert bad.returncode == 2
    assert "log level" in bad.stderr
    assert not list(tmp_path.iterdir())  # refused before anything started


def test_importing_fedrt_changes_no_logger_of_another_library() -> None:
    code = (
        "import logging\n"
        "before = {n: logging.getLogger(n).level for n in ('amqtt', 'transitions', 'aiohttp')}\n"
        "import fedrt.coordinator.broker.embedded, fedrt.coordinator.service, fedrt.sdk.device\n"
        "after = {n: logging.getLogger(n).level for n in before}\n"
        "assert before == after, (before, after)\n"
        "assert logging.getLogger().handlers == []\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_command_run_in_process_logs_to_the_stderr_of_the_moment() -> None:
    import io

    from fedrt.logs import configure

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure("INFO", "text", environ={})
        old = sys.stderr
        sys.stderr = gone = io.StringIO()
        gone.close()  # as pytest closes a finished test's capture
        sys.stderr = now = io.StringIO()
        try:
            logging.getLogger("fedrt.t").info("still heard")
        finally:
            sys.stderr = old
        assert "still heard" in now.getvalue()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
