"""The operator commands over HTTPS: the coordinator's CA verifies it, and without it they stop."""

from __future__ import annotations

from pathlib import Path

from fedrt.ops.cli import EXIT_UNREACHABLE, EXIT_USAGE
from tests.coordinator.harness import ServiceThread
from tests.coordinator.https_harness import coordinator_ca, https_config
from tests.ops.cli_harness import env_for, fedrt


def test_https_is_verified_against_the_coordinators_ca(tmp_path: Path) -> None:
    with ServiceThread(https_config(tmp_path / "data", tls="self-signed")) as svc:
        env = {**env_for(svc), "FEDRT_URL": f"https://localhost:{svc.port}"}
        ca = coordinator_ca(svc)
        unverified = fedrt("tasks", "list", env=env)
        assert unverified.code == EXIT_UNREACHABLE
        assert "cannot verify the certificate" in unverified.err
        assert "--ca-file" in unverified.err
        assert fedrt("tasks", "list", "--ca-file", str(ca), env=env).code == 0
        assert fedrt("devices", "list", env={**env, "FEDRT_CA_FILE": str(ca)}).code == 0
        # Plain http to a TLS port: no answer the client can read, said so.
        plain = fedrt("tasks", "list", "--url", f"http://127.0.0.1:{svc.port}", env=env)
        assert plain.code == EXIT_UNREACHABLE
        not_pem = tmp_path / "not.pem"
        not_pem.write_text("hello\n")
        bad_ca = fedrt("tasks", "list", "--ca-file", str(not_pem), env=env)
        assert bad_ca.code == EXIT_USAGE
        assert "cannot use CA file" in bad_ca.err
