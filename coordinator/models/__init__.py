"""Model versions: the catalog of signed versions (``catalog``), their content-addressed files
(``blobs``) and the server-optimizer state saved with each version (``optimizer_state``).

May import: the floor, ``store``, ``security`` (the signing key) and ``strategies`` (the
optimizer state's types). Coordinator modules import the modules by path; this facade is
for callers outside the coordinator.
"""

from fedrt.coordinator.models.blobs import BlobStore
from fedrt.coordinator.models.catalog import ModelCatalog, parse_manifest

__all__ = ["BlobStore", "ModelCatalog", "parse_manifest"]
