"""Checks meant to run ON a device (a Raspberry Pi, a phone, any Linux box)."""
