"""Managed child processes for tests (the same ones the deployment benchmarks use)."""

from fedrt.benchmarks.processes import (
    ManagedProcess,
    NotReady,
    free_port,
    http_ok,
    until,
    wait_for_port,
)

__all__ = ["ManagedProcess", "NotReady", "free_port", "http_ok", "until", "wait_for_port"]
