"""Keys and credentials: the private CA and certificates (``tls``), the model-signing key
(``signing``), password hashes and ``Secret`` (``credentials``), the operator's token
(``admin_token``).

Pure functions over ``cryptography`` and files; no store, no network. May import: the floor
(``errors``). Import its modules by path (``fedrt.coordinator.security.tls``).
"""
