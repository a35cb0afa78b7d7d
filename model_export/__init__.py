"""Keras models to LiteRT models with on-device training signatures (builtin ops only)."""

__all__: list[str] = []
