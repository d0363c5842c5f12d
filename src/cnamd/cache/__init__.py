"""The in-memory name cache: a static, shared, mmap-able base plus a per-process overlay."""
