"""Storage: pool, storage mode, migrations and the batch transaction."""
