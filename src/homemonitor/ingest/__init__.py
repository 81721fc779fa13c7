"""Ingest: the MQTT transport, the worker, and validation."""
