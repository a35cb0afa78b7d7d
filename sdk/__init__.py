"""The on-device runtime: eligibility, idle-window training on LiteRT, secure updates over MQTT."""

__all__: list[str] = []
