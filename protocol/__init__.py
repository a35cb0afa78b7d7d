"""Sans-I/O protocol core shared by devices and the coordinator: no sockets, clock or global RNG."""

from fedrt.protocol.errors import (
    BadSignature,
    ConsistencyCheckFailed,
    ConsistencyError,
    DecodeError,
    DecryptionFailed,
    DuplicateDevice,
    DuplicateMessage,
    DuplicateShare,
    LengthError,
    ParameterError,
    ProtocolError,
    ReplayError,
    RoundAborted,
    StageError,
    UnknownDevice,
)
from fedrt.protocol.graph import choose_parameters, neighbor_graph
from fedrt.protocol.messages import ShareKind, Stage
from fedrt.protocol.prg import RandomSource, SeededRandom, system_random
from fedrt.protocol.quantize import (
    AggregatedUpdate,
    QuantSpec,
    decode_update_sum,
    encode_update,
    ring_bits,
)
from fedrt.protocol.secagg import (
    Observer,
    SecAggClient,
    SecAggServer,
    drive,
    make_cohort,
    run_in_memory,
)
from fedrt.protocol.secagg_config import Member, SecAggConfig

__all__ = [
    "AggregatedUpdate",
    "BadSignature",
    "ConsistencyCheckFailed",
    "ConsistencyError",
    "DecodeError",
    "DecryptionFailed",
    "DuplicateDevice",
    "DuplicateMessage",
    "DuplicateShare",
    "LengthError",
    "Member",
    "Observer",
    "ParameterError",
    "ProtocolError",
    "QuantSpec",
    "RandomSource",
    "ReplayError",
    "RoundAborted",
    "SecAggClient",
    "SecAggConfig",
    "SecAggServer",
    "SeededRandom",
    "ShareKind",
    "Stage",
    "StageError",
    "UnknownDevice",
    "choose_parameters",
    "decode_update_sum",
    "drive",
    "encode_update",
    "make_cohort",
    "neighbor_graph",
    "ring_bits",
    "run_in_memory",
    "system_random",
]
