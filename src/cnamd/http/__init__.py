"""The HTTP front: lookups, health and metrics (management API to come)."""
