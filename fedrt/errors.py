"""The root of every exception fedrt raises on purpose.

    FedrtError
     ├── fedrt.protocol  errors (wire, quantization, secure aggregation)
     ├── fedrt.sdk       errors (device runtime)
     ├── fedrt.coordinator errors (service)
     ├── fedrt.model_export errors (export, inspection, model files)
     └── UsageError      (bad command line or configuration, reported by the CLI)

Each package draws its own sub-tree in its ``errors`` module and derives its root from
``FedrtError``, so a caller can catch everything fedrt raises in one clause.
"""


class FedrtError(Exception):
    """Base class of all fedrt errors."""


class UsageError(FedrtError):
    """A command line or configuration value that cannot be used as given."""
