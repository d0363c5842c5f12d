"""cnamd: a caller-name (CNAM) lookup daemon."""

__version__ = "0.1.0"
