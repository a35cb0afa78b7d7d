"""Participant timings for devices whose rounds last seconds, not minutes (simulations, tests).

Its own module so that a device process (``device_tests.round_device``) takes it without
importing the fleet and its simulation machinery.
"""

from __future__ import annotations

__all__ = ["PARTICIPANT_TIMINGS"]

# Simulated devices react fast: the rounds they take part in last seconds, not minutes.
PARTICIPANT_TIMINGS = {
    "deadline_margin": 1.0,
    "grace": 15.0,
    "checkin_timeout": 30.0,
    "retry_earliest": 1.0,
    "retry_latest": 3.0,
}
