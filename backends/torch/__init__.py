"""localnorm.torch: the torch adapter (see its issue; not implemented yet)."""
