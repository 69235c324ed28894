"""The HTTP API: app factory, routes, schemas and the error envelope."""

from ringcast.api.app import create_app

__all__ = ["create_app"]
