"""Helpers shared by the test suite: real brokers, managed processes, MQTT clients."""
