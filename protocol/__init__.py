"""Sans-I/O protocol core shared by devices and the coordinator: no sockets, clock or global RNG."""

__all__: list[str] = []
