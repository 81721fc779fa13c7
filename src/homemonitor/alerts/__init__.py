"""Alerts: episodes and their transitions."""
