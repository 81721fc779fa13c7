"""Ingest: the MQTT transport, the worker, the pure pipeline (decode, validate, resolve)
and validation.
"""
