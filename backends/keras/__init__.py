"""localnorm.keras: the keras adapter (see its issue; not implemented yet)."""
