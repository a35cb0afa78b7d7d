"""The protocol error hierarchy hangs under fedrt's root."""

from __future__ import annotations

import fedrt.protocol as protocol
from fedrt.errors import FedrtError
from fedrt.protocol import errors


def test_every_protocol_error_is_a_fedrt_error() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.ProtocolError)
        assert issubclass(cls, FedrtError)
    assert issubclass(errors.LengthError, errors.DecodeError)
    assert issubclass(errors.DuplicateMessage, errors.ReplayError)
    assert issubclass(errors.ParameterError, ValueError)
    aborted = errors.RoundAborted("x", stage="unmask", survivors=2, threshold=3)
    assert (aborted.stage, aborted.survivors, aborted.threshold) == ("unmask", 2, 3)


def test_package_reexports_are_sorted_and_resolve() -> None:
    assert protocol.__all__ == sorted(protocol.__all__)
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None
