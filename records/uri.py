"""The one place records/ turns URIs into (filesystem, path) pairs.

Everything goes through fsspec so ``file://``, plain local paths and ``hdfs://``
behave the same; paths inside a filesystem are POSIX style, so joins use
:mod:`posixpath` on the stripped path, never string concatenation on URIs.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

__all__ = ["resolve", "open_uri", "join", "to_uri", "parent_and_name"]


def resolve(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Returns ``(fs, path)`` for a URI or a plain local path (trailing '/' removed)."""
    if not isinstance(uri, str) or not uri:
        raise TypeError(f"expected a non-empty path or URI string, got {uri!r}")
    if uri.startswith("file:"):
        # RFC 8089: file URIs are percent-encoded (``Path.as_uri()`` writes ``v=1`` as
        # ``v%3D1``); fsspec would take the escapes literally and write a different folder.
        uri = unquote(uri)
    fs, path = url_to_fs(uri)
    return fs, path.rstrip("/") or "/"


def open_uri(uri: str, mode: str = "rb"):
    """Opens a file by URI or plain path (same rules as :func:`resolve`)."""
    fs, path = resolve(uri)
    if "w" in mode:
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    return fs.open(path, mode)


def join(path: str, *parts: str) -> str:
    """Joins path components inside one filesystem."""
    return posixpath.join(path, *parts)


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Turns a stripped path back into a URI that :func:`resolve` maps to ``fs``.

    Local paths stay plain paths, so a ``%`` in a file name is never read as an escape.
    """
    if isinstance(fs, LocalFileSystem):
        return path
    return fs.unstrip_protocol(path)


def parent_and_name(path: str) -> tuple[str, str]:
    """``("/a/b", "c")`` for ``"/a/b/c"``."""
    path = path.rstrip("/")
    return posixpath.dirname(path), posixpath.basename(path)
