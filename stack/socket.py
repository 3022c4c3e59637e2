"""`stack.socket`: the userspace stack's counterpart of the standard `socket` module.

Sockets are made by a running host (`host.socket(AF_INET, SOCK_STREAM)`, see
`stack.Host.tun`); this module gives the class, the constants and the errors
with the same names and values as the standard library, so code written for
`socket` reads the same::

    from stack import socket as ssock
    s = host.socket(ssock.AF_INET6, ssock.SOCK_STREAM)
    s.setsockopt(ssock.IPPROTO_TCP, ssock.TCP_NODELAY, 1)
"""

from __future__ import annotations

import socket as _std

from stack.api.multipath import (
    TCP_MULTIPATH_ADD,
    TCP_MULTIPATH_CONNID,
    TCP_MULTIPATH_ENABLE,
    TCP_MULTIPATH_REMOVE,
    TCP_MULTIPATH_SUBFLOWS,
    decode_addresses,
    decode_pairs,
    encode_addresses,
    encode_pairs,
)
from stack.api.socket import IPPROTO_MPTCP, Socket

AF_INET = _std.AF_INET
AF_INET6 = _std.AF_INET6
SOCK_STREAM = _std.SOCK_STREAM
SOCK_NONBLOCK = getattr(_std, "SOCK_NONBLOCK", 0)
IPPROTO_TCP = _std.IPPROTO_TCP
SOL_SOCKET = _std.SOL_SOCKET
TCP_NODELAY = _std.TCP_NODELAY
SO_SNDBUF = _std.SO_SNDBUF
SO_RCVBUF = _std.SO_RCVBUF
SO_KEEPALIVE = _std.SO_KEEPALIVE
SO_REUSEADDR = _std.SO_REUSEADDR
SO_ERROR = _std.SO_ERROR
SO_TYPE = _std.SO_TYPE
SHUT_RD = _std.SHUT_RD
SHUT_WR = _std.SHUT_WR
SHUT_RDWR = _std.SHUT_RDWR
MSG_OOB = _std.MSG_OOB

# Errors: the same classes the standard library raises.
error = OSError
timeout = TimeoutError
herror = _std.herror
gaierror = _std.gaierror

socket = Socket  # the class (instances come from Host.socket)
SocketType = Socket

__all__ = [
    "AF_INET", "AF_INET6", "SOCK_STREAM", "SOCK_NONBLOCK", "IPPROTO_TCP", "IPPROTO_MPTCP",
    "SOL_SOCKET",
    "TCP_NODELAY", "SO_SNDBUF", "SO_RCVBUF", "SO_KEEPALIVE", "SO_REUSEADDR", "SO_ERROR",
    "SO_TYPE", "SHUT_RD", "SHUT_WR", "SHUT_RDWR", "error", "timeout", "herror", "gaierror",
    "socket", "SocketType", "Socket",
    # RFC 6897 basic API (stack/api/multipath.py)
    "TCP_MULTIPATH_ENABLE", "TCP_MULTIPATH_ADD", "TCP_MULTIPATH_REMOVE",
    "TCP_MULTIPATH_SUBFLOWS", "TCP_MULTIPATH_CONNID", "encode_addresses", "decode_addresses",
    "encode_pairs", "decode_pairs", "MSG_OOB",
]
