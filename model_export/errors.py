"""Errors raised by fedrt.model_export.

FedrtError                      (fedrt.errors)
 └── ExportError                root of this package
      ├── UnsupportedModel      topology, input or option the exporter cannot build
      │    └── UnsupportedLayer a layer class or layer option outside the supported set
      ├── ConversionError       the converter failed or produced Flex/custom ops
      ├── ModelFileError        a file that is not a readable TFLite model (e.g. truncated)
      ├── MissingSignature      a model lacks one of the signatures fedrt needs
      ├── ManifestError         a manifest.json that is malformed or inconsistent
      │    └── HashMismatch     the model file's sha256 differs from the manifest's
      └── RuntimeInputError     arrays handed to a LiteRT model that its signature refuses
"""

from __future__ import annotations

from collections.abc import Iterable

from fedrt.errors import FedrtError


class ExportError(FedrtError):
    """Base class of every model_export error."""


class UnsupportedModel(ExportError):
    """The model as a whole (topology, input, loss, option) cannot be exported."""


class UnsupportedLayer(UnsupportedModel):
    """A layer, or an option of a layer, that has no builtin-only training graph."""

    def __init__(self, layer: str, reason: str, supported: Iterable[str]) -> None:
        self.layer = layer
        self.reason = reason
        self.supported = tuple(sorted(supported))
        super().__init__(
            f"layer {layer!r}: {reason}; supported layers: {', '.join(self.supported)}"
        )


class ConversionError(ExportError):
    """TFLite conversion failed, or its output needs ops the plain interpreter lacks."""


class ModelFileError(ExportError):
    """A file that cannot be read as a TFLite flatbuffer."""


class MissingSignature(ExportError):
    """A model lacks a signature (or a signature input) fedrt relies on."""

    def __init__(self, missing: Iterable[str], present: Iterable[str]) -> None:
        self.missing = tuple(missing)
        self.present = tuple(present)
        super().__init__(
            f"model lacks signature(s) {', '.join(self.missing)}; "
            f"it has: {', '.join(self.present) or 'none'}"
        )


class ManifestError(ExportError):
    """A manifest that does not parse or does not describe its model consistently."""


class HashMismatch(ManifestError):
    """The model file's sha256 is not the one the manifest records."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(f"{path}: sha256 {actual} does not match the manifest's {expected}")


class RuntimeInputError(ExportError):
    """Arrays passed to a LiteRT model that do not fit its signature."""
