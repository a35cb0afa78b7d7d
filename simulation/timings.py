"""Participant timings for devices whose rounds last seconds, not minutes (simulations, tests).

Its own module so that a device process (``device_tests.round_device``) takes it without
importing the fleet and its simulation machinery.
"""

from __future__ import annotations

__all__ = ["PARTICIPANT_TIMINGS"]

# Simulated devices react fast: the rounds they take part in last seconds, not minutes. A
# device waits for its plan through the round's whole check-in, which simulate sizes from
# the round (up to 55 s: ``sim_config.CHECKIN_S_MAX``), so its check-in timeout is longer.
PARTICIPANT_TIMINGS = {
    "deadline_margin": 1.0,
    "grace": 15.0,
    "checkin_timeout": 60.0,
    "retry_earliest": 1.0,
    "retry_latest": 3.0,
    # Unanswered check-ins double the 1-3 s back-off, up to a minute (a swamped coordinator).
    "retry_cap": 60.0,
}
