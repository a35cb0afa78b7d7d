"""MQTT: the coordinator's connection (``link``, run by ``paho_asyncio``), the embedded amqtt
broker (``embedded``), a managed Mosquitto (``mosquitto``) and its password/ACL-file
``BrokerAuth`` (``mosquitto_auth``), a managed NATS cluster (``nats``) and its per-device
users and permissions (``nats_auth``), and the ``[broker]`` settings (``settings``).

May import: the floor, ``security`` (TLS files), ``devices`` (the ``BrokerAuth`` port) and
``fedrt.protocol``; never ``rounds`` or ``api`` (the service wires them together).
"""
