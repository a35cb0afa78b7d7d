"""Frozen pydantic models that refuse unknown keys, their field types, and their errors as ours.

Two families share ``FrozenModel``: ``WireModel`` (JSON from the API or the store:
``BadRequestError``, nulls refused) and ``SettingsModel`` (TOML, environment, flags:
``ConfigError``, text parsed as the field's type). A failed validation becomes ONE error of
the model's class whose message names each field at fault (``spec.goal_count must be >= 1``).
Cross-field rules raise that error class themselves: pydantic passes it through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import NoneType
from typing import Annotated, Any, ClassVar, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails

from fedrt.coordinator.errors import BadRequestError, ConfigError, CoordinatorError

# Validation context of data from outside (the API, the store): refuses what Python callers
# may pass (None for an optional field means "unset" there; in JSON the key is left out).
WIRE: dict[str, bool] = {"wire": True}


def _integral(value: object) -> object:
    # JSON has one number type: 5.0 is the integer 5, as JSON Schema says too.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# JSON values: exactly their JSON type (no "10" for 10, no true for 1), numbers finite.
JsonInt = Annotated[int, Strict(), BeforeValidator(_integral)]
JsonFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
JsonBool = Annotated[bool, Strict()]
JsonStr = Annotated[str, Strict()]
Positive = Annotated[JsonFloat, Field(gt=0)]

_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _from_text(parse: Callable[[str], object]) -> BeforeValidator:
    """Environment values are text: parse them; a TOML or Python value must be the type."""

    def before(value: object) -> object:
        if isinstance(value, str):
            try:
                return parse(value.strip())
            except (ValueError, KeyError):
                return value  # refused as the wrong type, naming the setting
        return value

    return BeforeValidator(before)


SettingInt = Annotated[int, Strict(), _from_text(int)]
SettingFloat = Annotated[float, Strict(), Field(allow_inf_nan=False), _from_text(float)]
SettingBool = Annotated[bool, Strict(), _from_text(lambda s: _BOOLS[s.lower()])]
SettingStr = Annotated[str, Strict()]
SettingPath = Annotated[Path, AfterValidator(Path.expanduser)]
# A TCP port; 0 asks the OS for a free one.
Port = Annotated[SettingInt, Field(ge=0, le=65535)]


_TYPES = {
    "int_type": "int",
    "int_parsing": "int",
    "int_from_float": "int",
    "float_type": "float",
    "float_parsing": "float",
    "bool_type": "bool",
    "bool_parsing": "bool",
    "string_type": "str",
    "secret_type": "str",
    "path_type": "a path",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
    "dataclass_type": "a table",
}
_LIMITS = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "finite_number": "must be finite",
    "string_too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "must match {pattern}",
    "too_long": "must have at most {max_length} entries",
    "enum": "must be one of {expected}",
    "literal_error": "must be one of {expected}",
}
# Never echoed: a secret's value (its only possible error is its type).
_HIDDEN = frozenset({"secret_type"})


def _where(loc: tuple[int | str, ...], prefix: str) -> str:
    parts: list[str] = [prefix] if prefix else []
    for i, part in enumerate(loc):
        if isinstance(part, int) or (i + 1 < len(loc) and loc[i + 1] == "[key]"):
            parts.append(f"[{part!r}]")  # a list index, or a mapping's key
        elif part == "[key]":
            parts.append(" (the key)")
        elif i == 0 or part != loc[i - 1]:  # a tagged union's tag repeats the key it names
            parts.append(f".{part}")
    return "".join(parts).lstrip(".")


def _phrase(err: ErrorDetails, where: str, unknown: str) -> str:
    kind, ctx = err["type"], err.get("ctx", {})
    shown = err.get("input")
    got = ""
    if kind not in _HIDDEN and isinstance(shown, int | float | str) and kind != "missing":
        got = f", got {shown!r}"[:80]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{unknown}: {where}"
    if kind == "missing":
        return f"{where} is required"
    if kind in _TYPES:
        return f"{where} must be {_TYPES[kind]}{got}".lstrip()
    if kind == "string_too_short":
        need = ctx.get("min_length", 1)
        least = "not be empty" if need == 1 else f"be at least {need} characters"
        return f"{where} must {least}".lstrip()
    if kind in _LIMITS:
        return f"{where} {_LIMITS[kind].format(**ctx)}{got}".lstrip()
    message = str(ctx["error"]) if kind == "value_error" else err["msg"]
    if message.startswith("must "):
        return f"{where} {message}".lstrip()
    return f"{where}: {message}" if where else message


def explain(exc: ValidationError, *, prefix: str = "", unknown: str = "unknown key") -> str:
    """One line naming every field at fault (``prefix`` names the model's own place)."""
    out = [_phrase(err, _where(err["loc"], prefix), unknown) for err in exc.errors()]
    return "; ".join(dict.fromkeys(out))


class FrozenModel(BaseModel):
    """Immutable, unknown keys refused; a failed validation raises ``error_class``."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())
    error_class: ClassVar[type[CoordinatorError]] = BadRequestError
    # Where this model sits in its document ("http", "dp"): error messages start there.
    where: ClassVar[str] = ""
    unknown_key: ClassVar[str] = "unknown key"

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self.error_from(exc) from None

    # Only maps the error: pydantic may validate nested models without calling it (as for
    # its own RootModel), so a nested model's error keeps its place in the document.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def error_from(cls, exc: ValidationError) -> CoordinatorError:
        return cls.error_class(explain(exc, prefix=cls.where, unknown=cls.unknown_key))


class WireModel(FrozenModel):
    """A JSON document of the API (its OpenAPI schema is generated from the model)."""

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any, info: ValidationInfo) -> Any:
        # No request field is nullable: "unset" is the key left out, as the schema says.
        if info.context == WIRE and isinstance(data, Mapping):
            nulls = sorted(str(k) for k, v in data.items() if v is None)
            if nulls:
                raise ValueError(f"{', '.join(nulls)} must not be null (leave the key out instead)")
        return data

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Strict decoding: unknown keys, nulls and wrong JSON types are errors."""
        try:
            return cls.model_validate(data, context=WIRE)
        except ValidationError as exc:
            raise cls.error_from(exc) from None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class SettingsModel(FrozenModel):
    """A section of the coordinator's configuration."""

    error_class = ConfigError
    unknown_key = "unknown config key"

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        # FEDRT_HTTP_TLS_CA= (or "" in TOML) unsets an optional setting.
        if not isinstance(data, Mapping):
            return data
        fields = cls.model_fields
        return {
            k: None if v == "" and k in fields and NoneType in get_args(fields[k].annotation) else v
            for k, v in data.items()
        }


__all__ = [
    "WIRE", "FrozenModel", "JsonBool", "JsonFloat", "JsonInt", "JsonStr", "Port", "Positive",
    "SettingBool", "SettingFloat", "SettingInt", "SettingPath", "SettingStr", "SettingsModel",
    "WireModel", "explain",
]  # fmt: skip
