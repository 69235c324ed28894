"""ringcast: a self-hosted voice broadcast service."""

__version__ = "0.1.0"
