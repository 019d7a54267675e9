"""The access review's data: findings built in the database, read back in pages and as CSV."""
