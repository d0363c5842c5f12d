"""The HTTP front: lookups, the management and vendor APIs, health and metrics."""
