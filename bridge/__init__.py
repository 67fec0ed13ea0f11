"""Ownerlink: owner-authorised, local-first access to a connected car over MQTT and OAuth 2.0."""

__version__ = "0.1.0"
