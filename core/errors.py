"""Errors every layer above may raise about a run's configuration."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and key."""
