"""localnorm.flax: the flax adapter (see its issue; not implemented yet)."""
