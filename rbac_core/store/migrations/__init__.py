"""Alembic migrations of the schema; applied by `rbac_core.store.migrate`."""
