"""Keras models to LiteRT models with on-device training signatures (builtin ops only).

Importing this package loads neither tensorflow nor keras: ``manifest``, ``inspect`` and
``litert_model`` are device-safe. ``export_model`` and ``ExportOptions`` (module ``exporter``)
import tensorflow on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedrt.model_export.errors import (
    ConversionError,
    ExportError,
    HashMismatch,
    ManifestError,
    MissingSignature,
    ModelFileError,
    RuntimeInputError,
    UnsupportedLayer,
    UnsupportedModel,
)
from fedrt.model_export.inspect import (
    ModelReport,
    SignatureInfo,
    inspect_file,
    inspect_model,
    signature_flops,
)
from fedrt.model_export.litert_model import LiteRTModel
from fedrt.model_export.manifest import (
    EXPORTED_SIGNATURES,
    FORMAT_VERSION,
    LOSSES,
    MANIFEST_NAME,
    READ_WEIGHTS,
    REQUIRED_SIGNATURES,
    Manifest,
    SignatureSpec,
    TensorSpec,
    file_sha256,
)

if TYPE_CHECKING:
    from fedrt.model_export.exporter import ExportOptions, export_model

_LAZY = {"ExportOptions", "export_model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from fedrt.model_export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EXPORTED_SIGNATURES",
    "FORMAT_VERSION",
    "LOSSES",
    "MANIFEST_NAME",
    "READ_WEIGHTS",
    "REQUIRED_SIGNATURES",
    "ConversionError",
    "ExportError",
    "ExportOptions",
    "HashMismatch",
    "LiteRTModel",
    "Manifest",
    "ManifestError",
    "MissingSignature",
    "ModelFileError",
    "ModelReport",
    "RuntimeInputError",
    "SignatureInfo",
    "SignatureSpec",
    "TensorSpec",
    "UnsupportedLayer",
    "UnsupportedModel",
    "export_model",
    "file_sha256",
    "inspect_file",
    "inspect_model",
    "signature_flops",
]
