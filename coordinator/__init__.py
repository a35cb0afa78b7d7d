"""The coordinator service: rounds, selection, secure aggregation relay, model versions."""

__all__: list[str] = []
