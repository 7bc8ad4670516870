"""What ``/proc`` says about processes: alive, process groups, who works in a folder, listening ports.

Linux only, standard library only (no psutil): the Spark standalone cluster of
:mod:`shardforge.spark_cluster` is started, watched and stopped with these. Processes of
other users are skipped where ``/proc`` hides their details.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["alive", "group_alive", "group_members", "listening_ports", "processes_in", "read_pid",
           "works_in"]


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, or None when the file is missing or not a number."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, …; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def alive(pid: int | None) -> bool:
    """The process runs (a zombie, which only waits for its parent to reap it, does not)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's, and alive
    fields = _stat_fields(pid)
    return fields is None or fields[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return sorted(members)


def group_alive(pgid: int) -> bool:
    """Some process of group ``pgid`` still runs."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(group_members(pgid))


def works_in(pid: int | None, folder: Path) -> bool:
    """The process runs with its working directory inside ``folder`` (a pid file's pid may
    have been reused by an unrelated process since: this tells them apart)."""
    if not alive(pid):
        return False
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    folder = folder.resolve()
    return cwd == folder or folder in cwd.parents


def processes_in(folder: Path) -> list[int]:
    """Live processes (but this one) working inside ``folder`` or naming it on their command line."""
    folder = folder.resolve()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone, or another user's
        if (cwd == folder or folder in cwd.parents or str(folder) in cmdline) and alive(pid):
            found.append(pid)
    return sorted(found)


def listening_ports(pid: int | None) -> set[int]:
    """TCP ports the process listens on: its sockets' inodes looked up in /proc/net/tcp{,6}."""
    if pid is None:
        return set()
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # st 0A: LISTEN
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports
