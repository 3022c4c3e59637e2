"""Run a block of code in another network namespace (this thread only).

`setns(2)` with CLONE_NEWNET changes the namespace of the calling thread; a
file descriptor opened meanwhile (a TUN queue, a socket, a netlink socket)
stays bound to that namespace after the thread returns. Namespaces are named
as `ip netns` names them (/run/netns/NAME) or given as a path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc: ctypes.CDLL | None = None


def _setns(fd: int, nstype: int) -> None:
    native = getattr(os, "setns", None)  # Python >= 3.12
    if native is not None:
        native(fd, nstype)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_path(name: str) -> str:
    return name if "/" in name else os.path.join(NETNS_RUN_DIR, name)


@contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Switch this thread into namespace `name` for the block (no-op for None)."""
    if name is None:
        yield
        return
    target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        home = os.open(f"/proc/self/task/{_gettid()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(target)
        raise
    try:
        _setns(target, CLONE_NEWNET)
        try:
            yield
        finally:
            _setns(home, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


def _gettid() -> int:
    gettid = getattr(os, "gettid", None)
    if gettid is not None:
        return gettid()
    return ctypes.CDLL(None).syscall(186)  # x86-64 SYS_gettid
