"""fedrt: federated learning on devices, with secure aggregation over MQTT."""

from fedrt.errors import FedrtError

__version__ = "0.1.0"

__all__ = ["FedrtError", "__version__"]
