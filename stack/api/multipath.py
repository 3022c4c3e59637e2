"""The RFC 6897 socket API for MPTCP on the facade sockets.

Basic API (RFC 6897 §5.3, Table 1): socket options at level IPPROTO_TCP.

* `TCP_MULTIPATH_ENABLE` (int 0/1): set before connect (B1); read after
  setup: 1 = MPTCP in use, 0 = not (B2);
* `TCP_MULTIPATH_ADD` (address list, write-only): before connect it restricts
  the local addresses (B4), during the connection it adds some (B5);
* `TCP_MULTIPATH_REMOVE` (address list, write-only): closes the subflows of
  the address and sends REMOVE_ADDR (B7);
* `TCP_MULTIPATH_SUBFLOWS` (pair list, read-only): established subflows (B9);
* `TCP_MULTIPATH_CONNID` (int, read-only): the connection's local token (B10).

Byte encoding of an address list (`encode_addresses`/`decode_addresses`):
a sequence of records, each `family` u16, `port` u16 (both network byte
order; family 2 = AF_INET with 4 address bytes, 10 = AF_INET6 with 16), then
the address. Port 0 means "any port". IPv4 and IPv6 records mix freely (B8).
TCP_MULTIPATH_SUBFLOWS is a sequence of (local record, remote record) pairs.
`getsockopt(IPPROTO_TCP, TCP_MULTIPATH_SUBFLOWS[, buflen])` returns the
bytes (EINVAL when `buflen` is too small for them).

Errors (`OSError`): ENOTCONN reading SUBFLOWS/CONNID before the connection
is set up; EISCONN setting ENABLE after connect (EINVAL on a listener);
EADDRNOTAVAIL adding an address that is not the host's (B11, RFC 6897 §7);
EINVAL a malformed value; EOPNOTSUPP setting a read-only option or sending
urgent data (§4.4.4, L9); ENOPROTOOPT CONNID of a connection without MPTCP.

Typed methods (`MultipathSocketMixin`): `multipath_add`, `multipath_remove`,
`multipath_subflows`, `multipath_connid`, `multipath_enabled`, and the
advanced API of Appendix A: `multipath_info` (A6), `multipath_open_subflow`
/ `multipath_close_subflow` / `multipath_set_subflow_count` (A7),
`multipath_set_profile` (A8), `multipath_set_hints` (A9),
`multipath_set_pm_mode` (A10), `multipath_set_scheduler` /
`multipath_set_backup` (A11, A12), `multipath_set_fate_sharing` (A13),
`multipath_on_event` / `multipath_events` / `multipath_next_event` /
`multipath_event_fileno` / `multipath_wait_event` (A14).

Multiaddressed MPTCP is not combined with SHIM6, HIP or Mobile IPv6 (RFC
6897 §6.3, C3): this stack implements none of them, and MPTCP only ever uses
the addresses of the host's own interfaces.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket as _std
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace as _replace
from typing import Any

from stack.api.mpcontrol import (
    PROFILES,
    SCHEDULER_NAMES,
    MultipathControl,
    MultipathEvent,
    MultipathSettings,
    apply_hints,
    connection_info,
    make_sched,
)
from stack.api.policy import MultipathPolicy, mptcp_wanted, policy_for
from stack.tcp.state import TcpState

__all__ = [
    "TCP_MULTIPATH_ENABLE", "TCP_MULTIPATH_ADD", "TCP_MULTIPATH_REMOVE",
    "TCP_MULTIPATH_SUBFLOWS", "TCP_MULTIPATH_CONNID", "MULTIPATH_OPTIONS",
    "encode_addresses", "decode_addresses", "encode_pairs", "decode_pairs",
    "MultipathSocketMixin", "MultipathEvent", "MultipathPolicy", "PROFILES",
    "SCHEDULER_NAMES", "multipath_socket",
]

# RFC 6897 names the options but assigns no numbers (no registry exists); ours
# are the RFC's number followed by the row of Table 1, far from Linux's TCP_*.
TCP_MULTIPATH_ENABLE = 68971
TCP_MULTIPATH_ADD = 68972
TCP_MULTIPATH_REMOVE = 68973
TCP_MULTIPATH_SUBFLOWS = 68974
TCP_MULTIPATH_CONNID = 68975
MULTIPATH_OPTIONS = frozenset({TCP_MULTIPATH_ENABLE, TCP_MULTIPATH_ADD, TCP_MULTIPATH_REMOVE,
                               TCP_MULTIPATH_SUBFLOWS, TCP_MULTIPATH_CONNID})

_FAMILY_LEN = {int(_std.AF_INET): 4, int(_std.AF_INET6): 16}
_HDR = struct.Struct("!HH")
IpAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
_HANDSHAKE = frozenset({TcpState.SYN_SENT, TcpState.SYN_RECEIVED})


def _einval(msg: str) -> OSError:
    return OSError(errno.EINVAL, f"Invalid argument ({msg})")


# ------------------------------------------------------------------- encoding
def encode_addresses(addrs: Iterable[tuple[Any, int]]) -> bytes:
    """(address, port) pairs -> records `family u16, port u16, address`."""
    out = bytearray()
    for addr, port in addrs:
        ip = ipaddress.ip_address(addr)
        fam = _std.AF_INET if ip.version == 4 else _std.AF_INET6
        out += _HDR.pack(int(fam), port) + ip.packed
    return bytes(out)


def decode_addresses(data: bytes | bytearray | memoryview) -> list[tuple[str, int]]:
    """Records -> [(address string, port)]; EINVAL on anything malformed."""
    buf = bytes(data)
    out: list[tuple[str, int]] = []
    off = 0
    while off < len(buf):
        if len(buf) - off < _HDR.size:
            raise _einval("truncated address record")
        fam, port = _HDR.unpack_from(buf, off)
        n = _FAMILY_LEN.get(fam)
        if n is None:
            raise _einval(f"address family {fam}")
        off += _HDR.size
        if len(buf) - off < n:
            raise _einval("truncated address")
        out.append((str(ipaddress.ip_address(buf[off:off + n])), port))
        off += n
    return out


def encode_pairs(pairs: Iterable[tuple[tuple[Any, int], tuple[Any, int]]]) -> bytes:
    """Subflows [((laddr, lport), (raddr, rport))] -> local record, remote record, ..."""
    return b"".join(encode_addresses([loc, rem]) for loc, rem in pairs)


def decode_pairs(data: bytes) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    recs = decode_addresses(data)
    if len(recs) % 2:
        raise _einval("odd number of records")
    return [(recs[i], recs[i + 1]) for i in range(0, len(recs), 2)]


def _check_int(name: str, v: Any) -> int:
    """A plain int argument (bool excluded), else EINVAL."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise _einval(f"{name} must be an int, not {type(v).__name__}")
    return v


def _check_flag(name: str, v: Any) -> bool:
    """A boolean argument: bool or int 0/1, else EINVAL."""
    if isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)):
        return bool(v)
    raise _einval(f"{name} takes True/False or 0/1, not {v!r}")


def _norm_addresses(addrs: Any) -> list[tuple[IpAddr, int]]:
    """Typed-method input: [(addr, port) | addr | sockaddr tuple, ...]."""
    if isinstance(addrs, str | bytes) or not isinstance(addrs, Iterable):
        raise _einval("expected a list of (address, port)")
    out = []
    for item in addrs:
        if isinstance(item, str):
            host, port = item, 0
        elif isinstance(item, tuple) and len(item) >= 2:
            host, port = item[0], item[1]
        else:
            raise _einval(f"bad address entry {item!r}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise _einval(f"bad port {port!r}")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise _einval(f"not an IP address: {host!r}") from None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        out.append((ip, port))
    if not out:
        raise _einval("empty address list")
    return out


# ---------------------------------------------------------------------- mixin
class MultipathSocketMixin:
    """RFC 6897 on a facade `Socket` (listed first in its bases). Uses the
    Socket's `_host`, `_lock`, `_conn`, `_listener`, `_bound`, `_wait`, `_now`
    and hooks `_mptcp_kw`, `_refresh`, `setsockopt`/`getsockopt`, `send`,
    `accept`."""

    _host: Any
    _lock: Any
    _listener: Any
    _bound: Any
    _closed: bool
    proto: int

    # ------------------------------------------------------------- state
    def _mp(self) -> MultipathSettings:
        st = self.__dict__.get("_mp_settings")
        if st is None:
            st = self.__dict__["_mp_settings"] = MultipathSettings()
        return st

    def _mpctl(self) -> MultipathControl | None:
        return self.__dict__.get("_mp_control")

    @property
    def _conn(self) -> Any:
        return self.__dict__.get("_mp_conn")

    @_conn.setter
    def _conn(self, conn: Any) -> None:
        # The facade assigns the core's connection right after core.connect()
        # (or in accept), under the host lock and before the loop runs again:
        # the control is in place before the SYN/ACK or third ACK is processed.
        self.__dict__["_mp_conn"] = conn
        if conn is not None and hasattr(conn, "subflows") and self._mpctl() is None:
            self.__dict__["_mp_control"] = MultipathControl(self._host.core, conn, self._mp())

    @property
    def multipath_policy(self) -> MultipathPolicy:
        return policy_for(self._host)

    def _mp_wildcard(self) -> bool:
        if self.__dict__.get("_mp_source_picked"):
            return True  # bound by us to an allowed source, not by the application
        b = self._bound
        return b is None or ipaddress.ip_address(b[0]).is_unspecified

    def _mp_wanted(self) -> bool:
        st = self._mp()
        enable = st.enable
        if enable is None and self.proto == getattr(_std, "IPPROTO_MPTCP", 262):
            enable = True
        return mptcp_wanted(self.multipath_policy, enable=enable,
                            wildcard=self._mp_wildcard(), sndbuf=st.sndbuf, rcvbuf=st.rcvbuf)

    def _mptcp_kw(self) -> dict[str, Any]:
        host = self._host
        if not host.mptcp_capable:
            return {}
        want = self._mp_wanted()
        if not want or not self.__dict__.get("_mp_connecting"):
            return {"mptcp": want}
        return {"mptcp": True, "mptcp_config": self._mp_config()}

    def _mp_config(self) -> Any:
        """The connection's MptcpConfig: host defaults + this socket's asks."""
        st, pol = self._mp(), self.multipath_policy
        cfg = _replace(self._host.core.mptcp_config)
        if not self._mp_wildcard():
            # B3 / L1: bound to one address: that address (and those added) only
            if st.allowed is None:
                st.allowed = {}
            bip = ipaddress.ip_address(self._bound[0])
            st.allowed.setdefault(bip, self._bound[1])
        if st.rcvbuf is not None:
            cfg.rcvbuf = max(st.rcvbuf, pol.min_buffer)  # §4.4.3: connection-level buffers
        if st.sndbuf is not None:
            cfg.sndbuf = max(st.sndbuf, pol.min_buffer)
        limits = cfg.limits
        mode = st.pm_mode or pol.pm_mode
        if st.pm_mode is None and pol.pm_mode == "after":
            st.pm_mode, st.pm_after_bytes = "after", pol.pm_after_bytes
        extra = st.max_subflows if st.max_subflows is not None else limits.subflows
        if mode in ("never", "after"):
            extra = 0  # "after": the control opens them once N bytes went by
        cfg.limits = _replace(limits, subflows=extra,
                              add_addr_accepted=min(limits.add_addr_accepted, extra)
                              if mode == "immediate" else 0)
        cfg.scheduler = "default"
        if st.scheduler is None:
            st.scheduler = pol.scheduler
        return cfg

    # ----------------------------------------------------- facade overrides
    def _connect(self, address: Any, *, raise_errors: bool) -> int:
        with self._lock:
            st = self._mp()
            if (self._conn is None and self._bound is None and st.allowed is not None
                    and self._mp_wanted()):
                # B4: the initial subflow too leaves from an allowed address
                ip, _ = self._resolve(address)  # type: ignore[attr-defined]
                src = self._mp_pick_source(ip)
                self.__dict__["_mp_source_picked"] = True
                self._bound = (str(src), 0)
        self.__dict__["_mp_connecting"] = True
        try:
            return super()._connect(address, raise_errors=raise_errors)  # type: ignore[misc]
        finally:
            self.__dict__["_mp_connecting"] = False

    def _mp_pick_source(self, dst: Any) -> Any:
        core, st = self._host.core, self._mp()
        try:
            src = core.select_source(dst)
        except OSError:
            src = None
        if src is not None and st.local_allowed(src):
            return src
        for a in core.local_addresses():
            if a.version == dst.version and st.local_allowed(a):
                return a
        raise OSError(errno.EADDRNOTAVAIL, "no allowed local address for this destination")

    def _refresh(self) -> None:
        super()._refresh()  # type: ignore[misc]
        ctl = self._mpctl()
        if ctl is None:
            return
        evs = ctl.poll(self._host.clock(), fate_default=self.multipath_policy.fate_sharing)
        if evs:
            self._mp_deliver(evs)
        if ctl.acted:
            ctl.acted = False
            super()._refresh()  # type: ignore[misc]
            self._host.loop.wake()  # send what the control queued

    def accept(self) -> tuple[Any, Any]:
        sock, addr = super().accept()  # type: ignore[misc]
        if not isinstance(sock, MultipathSocketMixin):
            sock.__class__ = multipath_class(type(sock))
        sock.__dict__["_mp_settings"] = self._mp().copy()
        conn = sock.__dict__.get("_mp_conn", sock.__dict__.pop("_conn", None))
        sock.__dict__.pop("_mp_control", None)
        with self._lock:
            sock._conn = conn  # installs the control with the listener's settings
        return sock, addr

    def _real_close(self) -> None:
        super()._real_close()  # type: ignore[misc]
        ready = self.__dict__.pop("_mp_ready", None)
        if ready is not None:
            ready.close()
        self.__dict__["_mp_callbacks"] = []

    def send(self, data: Any, flags: int = 0) -> int:
        self._mp_check_flags(flags)
        return super().send(data)  # type: ignore[misc]

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._mp_check_flags(flags)
        super().sendall(data)  # type: ignore[misc]

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._mp_check_flags(flags)
        return super().recv(bufsize)  # type: ignore[misc]

    @staticmethod
    def _mp_check_flags(flags: int) -> None:
        if flags & _std.MSG_OOB:
            # RFC 6897 §4.4.4: urgent data is not used with MPTCP (nor here).
            raise OSError(errno.EOPNOTSUPP, "urgent data (MSG_OOB) is not supported")

    # ------------------------------------------------------------- options
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        if level == _std.IPPROTO_TCP and optname in MULTIPATH_OPTIONS:
            self._mp_setopt(optname, value)
            return
        super().setsockopt(level, optname, value, optlen)  # type: ignore[misc]
        with self._lock:
            st = self._mp()
            v = self.options.get((level, optname)) if hasattr(self, "options") else None
            if (level, optname) == (_std.SOL_SOCKET, _std.SO_SNDBUF):
                st.sndbuf = v
            elif (level, optname) == (_std.SOL_SOCKET, _std.SO_RCVBUF):
                st.rcvbuf = v
            self._mp_apply_options()

    def _mp_apply_options(self) -> None:
        """L6/L7: socket options reach every subflow, present and future (new
        subflows copy the initial subflow's TcpConfig). Subflows never use
        Nagle: the MPTCP scheduler hands them whole chunks."""
        conn = self._conn
        if conn is None or not hasattr(conn, "subflows"):
            return
        opts = self.options
        keep = bool(opts.get((_std.SOL_SOCKET, _std.SO_KEEPALIVE)))
        for sf in conn.subflows:
            if sf.conn is not None:
                sf.conn.config.keepalive = keep
                sf.conn.config.nodelay = True
        now = self._now()
        self._host.core.wake(conn, now)
        self._host.loop.kick()

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        if level != _std.IPPROTO_TCP or optname not in MULTIPATH_OPTIONS:
            return super().getsockopt(level, optname, buflen)  # type: ignore[misc]
        if optname in (TCP_MULTIPATH_ADD, TCP_MULTIPATH_REMOVE):
            raise OSError(errno.EOPNOTSUPP, "write-only option")
        if optname == TCP_MULTIPATH_ENABLE:
            value: Any = int(self.multipath_enabled())
        elif optname == TCP_MULTIPATH_CONNID:
            value = self.multipath_connid()
            if buflen is not None and 0 < buflen < 4:  # the 32-bit token, never cut
                raise _einval(f"CONNID needs 4 bytes, buffer of {buflen}")
        else:
            data = encode_pairs(self.multipath_subflows())
            if buflen is not None and buflen < len(data):
                raise _einval(f"buffer of {buflen} bytes, {len(data)} needed")
            return data
        if buflen:
            return int(value).to_bytes(4, "little")[:buflen]
        return value

    def _mp_setopt(self, optname: int, value: Any) -> None:
        if optname in (TCP_MULTIPATH_SUBFLOWS, TCP_MULTIPATH_CONNID):
            raise OSError(errno.EOPNOTSUPP, "read-only option")
        if optname == TCP_MULTIPATH_ENABLE:
            if isinstance(value, bytes | bytearray | memoryview):
                if len(value) not in (1, 2, 4):
                    raise _einval("ENABLE takes an int")
                value = int.from_bytes(bytes(value), "little")
            if not isinstance(value, int) or value not in (0, 1):
                raise _einval("ENABLE takes 0 or 1")
            with self._lock:
                self._check_open()  # type: ignore[attr-defined]
                if self._conn is not None:
                    raise OSError(errno.EISCONN, "TCP_MULTIPATH_ENABLE after connect")
                if self._listener is not None:
                    raise _einval("TCP_MULTIPATH_ENABLE after listen")
                self._mp().enable = bool(value)
            return
        if not isinstance(value, bytes | bytearray | memoryview):
            raise _einval("address list must be bytes (see encode_addresses)")
        addrs = decode_addresses(value)
        if optname == TCP_MULTIPATH_ADD:
            self.multipath_add(addrs)
        else:
            self.multipath_remove(addrs)

    # ------------------------------------------------------------ basic API
    def multipath_enabled(self) -> bool:
        """B2: after setup, whether MPTCP is in use; before, whether it will be tried."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return self._mp_wanted()
            return hasattr(conn, "subflows") and not conn.fallen_back

    def multipath_add(self, addrs: Any) -> None:
        """TCP_MULTIPATH_ADD (B4, B5, B6, B8, B11): [(addr, port), ...], port 0 = any."""
        items = _norm_addresses(addrs)
        with self._lock:
            self._check_open()  # type: ignore[attr-defined]
            core = self._host.core
            for ip, _ in items:
                if core.owner(ip) is None:
                    raise OSError(errno.EADDRNOTAVAIL, f"{ip} is not an address of this host")
            st = self._mp()
            ctl = self._mpctl()
            if ctl is None:
                if st.allowed is None:
                    st.allowed = {}
                    if not self._mp_wildcard():  # the bound address stays allowed (B3)
                        st.allowed[ipaddress.ip_address(self._bound[0])] = self._bound[1]
                for ip, port in items:
                    st.allowed[ip] = port
                    st.removed.discard(ip)
                return
            ctl.add_addresses(items, self._now())
            self._host.loop.kick()

    def multipath_remove(self, addrs: Any) -> None:
        """TCP_MULTIPATH_REMOVE (B7, B8): never use these addresses again
        (unless added back); during a connection close their subflows (after
        a replacement is up) and send REMOVE_ADDR."""
        items = _norm_addresses(addrs)
        with self._lock:
            self._check_open()  # type: ignore[attr-defined]
            st = self._mp()
            ctl = self._mpctl()
            if ctl is None:
                for ip, _ in items:
                    st.removed.add(ip)
                    if st.allowed is not None:
                        st.allowed.pop(ip, None)
                return
            ctl.remove_addresses([ip for ip, _ in items], self._now())
            self._host.loop.kick()

    def _mp_setup(self) -> Any:
        conn = self._conn
        self._check_open()  # type: ignore[attr-defined]
        if conn is None or conn.state in _HANDSHAKE:
            raise OSError(errno.ENOTCONN, "connection not set up")
        return conn

    def multipath_subflows(self) -> list[tuple[tuple[str, int], tuple[str, int]]]:
        """TCP_MULTIPATH_SUBFLOWS (B9): established subflows only."""
        with self._lock:
            conn = self._mp_setup()
            if not hasattr(conn, "subflows"):
                return [((str(conn.local[0]), conn.local[1]), (str(conn.remote[0]),
                                                               conn.remote[1]))]
            out = []
            for sf in conn.subflows:
                c = sf.conn
                if c is None or not sf.alive or not sf.established or sf.closing:
                    continue
                if c.state not in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
                    continue
                out.append(((str(c.local[0]), c.local[1]), (str(c.remote[0]), c.remote[1])))
            return out

    def multipath_connid(self) -> int:
        """TCP_MULTIPATH_CONNID (B10): the local token, unique on this host."""
        with self._lock:
            conn = self._mp_setup()
            if not hasattr(conn, "token") or conn.fallen_back:
                raise OSError(errno.ENOPROTOOPT, "the connection does not use MPTCP")
            return int(conn.token)

    # --------------------------------------------------------- advanced API
    def _mp_ctl_required(self) -> MultipathControl:
        self._mp_setup()
        ctl = self._mpctl()
        if ctl is None or ctl.mp.fallen_back:
            raise OSError(errno.ENOPROTOOPT, "the connection does not use MPTCP")
        return ctl

    def multipath_info(self) -> dict[str, Any]:
        """A6: per-subflow statistics and connection totals."""
        with self._lock:
            conn = self._mp_setup()
            ctl = self._mpctl()
            if ctl is not None:
                return ctl.info()
            return connection_info(conn)

    def multipath_open_subflow(self, local: Any, remote: Any, *, backup: bool = False) -> int:
        """A7: open a subflow from `local` ((addr, port) or addr) to `remote`
        ((addr, port); port 0 = the connection's). Returns its id."""
        (lip, lport), = _norm_addresses([local])
        (rip, rport), = _norm_addresses([remote])
        with self._lock:
            ctl = self._mp_ctl_required()
            sid = ctl.open_path((lip, lport), (rip, rport), self._now(), backup=backup)
            self._host.loop.kick()
            return sid

    def multipath_close_subflow(self, subflow: int) -> None:
        """A7: close one subflow (by the id `multipath_info` shows)."""
        _check_int("subflow", subflow)
        with self._lock:
            ctl = self._mp_ctl_required()
            ctl.close_subflow(subflow, self._now())
            self._host.loop.kick()

    def multipath_set_subflow_count(self, n: int) -> int:
        """A7: ask for `n` subflows in all (opens on unused paths / closes extras)."""
        _check_int("n", n)
        with self._lock:
            ctl = self._mp_ctl_required()
            got = ctl.set_count(n, self._now())
            self._host.loop.kick()
            return got

    def multipath_set_scheduler(self, name: str) -> None:
        """A11: "minrtt" (default), "roundrobin", "redundant", "backup" (hot
        standby), "lowrtt"; before connect or at any time during it."""
        make_sched(name)  # EINVAL for an unknown name
        with self._lock:
            self._mp().scheduler = name
            ctl = self._mpctl()
            if ctl is not None:
                ctl.set_scheduler(name)
                self._host.core.wake(ctl.mp, self._now())
                self._host.loop.kick()

    def multipath_set_backup(self, subflow: int, backup: bool = True) -> None:
        """A11: mark a subflow backup (sends MP_PRIO to the peer)."""
        _check_int("subflow", subflow)
        backup = _check_flag("backup", backup)
        with self._lock:
            ctl = self._mp_ctl_required()
            ctl.set_backup(subflow, backup, self._now())
            self._host.loop.kick()

    def multipath_set_pm_mode(self, mode: str, after_bytes: int = 0) -> None:
        """A10: "immediate" (extra subflows at once), "after" (once
        `after_bytes` bytes went either way), "never" (one subflow). Before
        connect; "after"/"immediate" may also be set later (it opens the
        subflows when due)."""
        if mode not in ("immediate", "after", "never"):
            raise _einval(f"pm mode {mode!r}")
        if not isinstance(after_bytes, int) or after_bytes < 0:
            raise _einval("after_bytes")
        with self._lock:
            st = self._mp()
            st.pm_mode, st.pm_after_bytes = mode, after_bytes
            ctl = self._mpctl()
            if ctl is not None and mode != "never":
                ctl.after_done = False
                ctl.pending_open = mode == "immediate"
                self._host.core.wake(ctl.mp, self._now())
                self._refresh()
                self._host.loop.kick()

    def multipath_set_profile(self, profile: str) -> None:
        """A8: "bulk", "interactive" or "reliable" (see PROFILES / docs/api.md)."""
        if profile not in PROFILES:
            raise _einval(f"profile {profile!r} (have {sorted(PROFILES)})")
        p = PROFILES[profile]
        with self._lock:
            st = self._mp()
            st.profile = profile
            st.max_subflows = p["max_subflows"]
            if self._conn is None:
                st.pm_mode = p["pm_mode"]
        if profile == "interactive":
            self.setsockopt(_std.IPPROTO_TCP, _std.TCP_NODELAY, 1)
        self.multipath_set_scheduler(p["scheduler"])

    def multipath_set_hints(self, *, size: int | None = None, duration: float | None = None,
                            rate: float | None = None) -> None:
        """A9: expected transfer size (bytes), duration (s), rate (bit/s);
        before connect (see `apply_hints`)."""
        with self._lock:
            st = self._mp()
            apply_hints(st, size=size, duration=duration, rate=rate)
            ctl = self._mpctl()
            if ctl is not None and st.scheduler:
                ctl.set_scheduler(st.scheduler)

    def multipath_set_fate_sharing(self, on: bool) -> None:
        """A13: True: the connection closes when its initial subflow does."""
        on = _check_flag("fate sharing", on)
        with self._lock:
            self._mp().fate_sharing = on
            ctl = self._mpctl()
            if ctl is not None:
                self._refresh()
                self._host.loop.kick()

    # --------------------------------------------------------------- events
    def _mp_queue(self) -> deque[MultipathEvent]:
        q = self.__dict__.get("_mp_events")
        if q is None:
            q = self.__dict__["_mp_events"] = deque(maxlen=4096)
        return q

    def _mp_deliver(self, evs: list[MultipathEvent]) -> None:
        q = self._mp_queue()
        q.extend(evs)
        ready = self.__dict__.get("_mp_ready")
        if ready is not None:
            ready.set(True)
        for cb in list(self.__dict__.get("_mp_callbacks", ())):
            for ev in evs:
                try:
                    cb(self, ev)
                except Exception:  # noqa: BLE001 - an app callback must not stop the stack
                    self.__dict__["_mp_callback_errors"] = \
                        self.__dict__.get("_mp_callback_errors", 0) + 1

    def multipath_on_event(self, callback: Callable[[Any, MultipathEvent], None] | None,
                           ) -> None:
        """A14: call `callback(sock, event)` for every event, on the stack's
        thread with the host lock held: keep it short and never block in it
        (hand work to your own thread or loop, e.g. `loop.call_soon_threadsafe`).
        None removes every callback."""
        if callback is not None and not callable(callback):
            raise _einval(f"callback must be callable, not {type(callback).__name__}")
        with self._lock:
            if callback is None:
                self.__dict__["_mp_callbacks"] = []
            else:
                self.__dict__.setdefault("_mp_callbacks", []).append(callback)

    def multipath_events(self) -> list[MultipathEvent]:
        """A14: drain the socket's event queue (never blocks)."""
        with self._lock:
            q = self._mp_queue()
            out = list(q)
            q.clear()
            ready = self.__dict__.get("_mp_ready")
            if ready is not None:
                ready.set(False)
            return out

    def multipath_next_event(self, timeout: float | None = None) -> MultipathEvent:
        """A14 (threads): wait for the next event; TimeoutError after `timeout`."""
        with self._lock:
            q = self._mp_queue()
            self._wait(lambda: bool(q) or self._closed, timeout)  # type: ignore[attr-defined]
            if not q:
                raise OSError(errno.EBADF, "socket closed")
            ev = q.popleft()
            ready = self.__dict__.get("_mp_ready")
            if ready is not None and not q:
                ready.set(False)
            return ev

    def multipath_event_fileno(self) -> int:
        """A14 (selectors/asyncio): an eventfd readable while events are queued."""
        from stack.api.socket import _Ready

        with self._lock:
            ready = self.__dict__.get("_mp_ready")
            if ready is None:
                ready = self.__dict__["_mp_ready"] = _Ready()
                ready.set(bool(self._mp_queue()))
            return ready.fd

    async def multipath_wait_event(self) -> MultipathEvent:
        """A14 (asyncio): await the next event (uses `multipath_event_fileno`)."""
        loop = asyncio.get_running_loop()
        fd = self.multipath_event_fileno()
        while True:
            with self._lock:
                q = self._mp_queue()
                if q:
                    ev = q.popleft()
                    ready = self.__dict__.get("_mp_ready")
                    if not q and ready is not None:
                        ready.set(False)
                    return ev
                if self._closed:
                    raise OSError(errno.EBADF, "socket closed")
            fut: asyncio.Future[None] = loop.create_future()

            def _ready(f: asyncio.Future[None] = fut) -> None:
                if not f.done():
                    f.set_result(None)

            loop.add_reader(fd, _ready)
            try:
                await fut
            finally:
                loop.remove_reader(fd)


_CLASSES: dict[type, type] = {}


def multipath_class(base: type) -> type:
    """`base` (a facade Socket class) with the RFC 6897 API."""
    if issubclass(base, MultipathSocketMixin):
        return base
    cls = _CLASSES.get(base)
    if cls is None:
        cls = _CLASSES[base] = type(f"Multipath{base.__name__}", (MultipathSocketMixin, base),
                                    {"__module__": __name__})
    return cls


def multipath_socket(host: Any, family: int = _std.AF_INET, type: int = _std.SOCK_STREAM,
                     proto: int = 0) -> Any:
    """A facade socket with the RFC 6897 API (`host.socket()` gives the same
    once `stack.api.socket.Socket` inherits `MultipathSocketMixin`)."""
    from stack.api.socket import Socket

    host._check_running()
    return multipath_class(Socket)(host, family, type, proto)


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, step: float = 0.01) -> bool:
    """Poll `pred` until true (tests and examples)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()
