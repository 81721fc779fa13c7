"""The gateway contract: topics, the native payload, the normalised reading, units."""
