"""Optional engines: import them with an error that says which extra installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingEngineError", "require"]

# module -> the setup.cfg extra that installs it
_EXTRAS = {
    "pyspark": "spark",
    "apache_beam": "beam",
    "imagehash": "beam",  # the image pipeline's perceptual hash
    "tensorflow": "tf",
    "great_expectations": "quality",
    "airflow": "airflow",
}


class MissingEngineError(ImportError):
    """An engine a command needs is not installed."""


def require(module: str, *, for_what: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingEngineError` naming the extra to install.

    Args:
        module: top-level module name, e.g. ``"pyspark"``.
        for_what: what needs it, for the message (e.g. ``"shardforge ingest"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = _EXTRAS.get(module, "all")
        raise MissingEngineError(
            f"{for_what}: needs {module}, which is not installed: pip install 'shardforge[{extra}]'"
        ) from None
