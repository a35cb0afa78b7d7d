"""How a round's device deltas become the next global model, in two independent steps.

1. An **aggregator** (``aggregators``) reduces the per-device deltas to one delta: the
   weighted mean under SecAgg+, or a robust rule when SecAgg is off.
2. A **server optimizer** (``optimizers``) treats that delta as a pseudo-gradient step and
   moves the global weights.

Pure numpy, no I/O. May import: the floor (``errors``). Coordinator modules import the
modules by path; this facade re-exports both for callers outside the coordinator.
"""

from fedrt.coordinator.strategies.aggregators import (
    AGGREGATORS,
    Aggregator,
    Bulyan,
    CoordinateMedian,
    Krum,
    TrimmedMean,
    WeightedMean,
    norm_outliers,
)
from fedrt.coordinator.strategies.optimizers import (
    OPTIMIZERS,
    AggregationError,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedYogi,
    OptimizerState,
    ServerOptimizer,
)
from fedrt.coordinator.strategies.scaffold import Scaffold

__all__ = [
    "AGGREGATORS",
    "OPTIMIZERS",
    "AggregationError",
    "Aggregator",
    "Bulyan",
    "CoordinateMedian",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedYogi",
    "Krum",
    "OptimizerState",
    "Scaffold",
    "ServerOptimizer",
    "TrimmedMean",
    "WeightedMean",
    "norm_outliers",
]
