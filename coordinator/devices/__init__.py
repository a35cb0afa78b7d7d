"""Devices: one-time enrollment tokens, device credentials, revocation, and the
``BrokerAuth`` port through which the allowed devices reach the broker (``enrollment``).

May import: the floor, ``store`` and ``security`` (credential hashing). Broker-specific
``BrokerAuth`` implementations live with the broker (``broker``), never here.
"""
