"""The application side of an MPTCP connection: the same calls and state as
a ``TcpConnection`` (docs/INTERFACES.md "stack/mptcp"), on the data level
(RFC 8684 §3.3: DATA_FIN, MP_FASTCLOSE), plus ``mptcp_info()``.

A mixin of ``MptcpConnection`` (which holds ``ds``, ``dr``, ``subflows``,
``peer``, ``km``, ...); kept apart so each module has one job.
"""

from __future__ import annotations

import errno
from typing import Any

from stack.tcp.state import TcpState
from stack.wire.mptcp import MpFastclose, MpTcpRst

__all__ = ["AppApi"]


class AppApi:
    """``send``/``recv``/``shutdown_write``/``close``/``abort`` and state."""

    ds: Any
    dr: Any
    subflows: list[Any]
    peer: Any
    km: Any
    error: int | None
    closed: bool
    established: bool
    fallen_back: bool
    fallback_reason: str | None
    server: bool
    csum: bool
    stats: Any
    _app_closed: bool
    alive: Any  # the connection's live subflows (a property there)

    # ============================================================ application
    def send(self, data: bytes | bytearray | memoryview, now: float) -> int:
        if self.error is not None:
            raise OSError(self.error, errno.errorcode.get(self.error, "error"))
        if self.ds.fin_dsn is not None or self.closed:
            raise OSError(errno.EPIPE, "connection is closing for sending")
        return self.ds.write(data)

    def recv(self, max_bytes: int) -> bytes:
        if self.dr is None:
            return b""
        before = self.dr.window()
        data = self.dr.read(max_bytes)
        if data:
            self._after_read(before)
        return data

    def recv_into(self, buf: bytearray | memoryview) -> int:
        data = self.recv(len(buf))
        buf[: len(data)] = data
        return len(data)

    def _after_read(self, before: int) -> None:
        """A window update when the window at least doubled (as TCP)."""
        assert self.dr is not None
        after = self.dr.window()
        if after >= 2 * before and after - before >= 65536 // 2:
            for sf in self.alive:
                if sf.established:
                    sf.conn.request_ack()
                    break

    def shutdown_write(self, now: float) -> None:
        self.ds.shutdown()

    def close(self, now: float) -> None:
        """Close: unread data makes it MP_FASTCLOSE (reference §2.4), else
        DATA_FIN after the queued data."""
        if self.dr is not None and self.dr.readable:
            self.abort(now)
            return
        self._app_closed = True
        self.ds.shutdown()
        if not self.established:
            for sf in self.alive:
                sf.conn.close(now)

    def abort(self, now: float) -> None:
        """MP_FASTCLOSE on a RST on every subflow (§3.5)."""
        opts: tuple[bytes, ...] = ()
        if not self.fallen_back and self.peer is not None:
            opts = (MpFastclose(self.peer.key).emit(), MpTcpRst(0, 0).emit())
        for sf in self.alive:
            sf.close_reason = sf.close_reason or "fastclose"
            sf.conn.abort(now, opts)
        self._app_closed = True
        self.closed = True

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> TcpState:
        if self.closed and not self.alive:
            return TcpState.CLOSED
        if self.error is not None:
            return TcpState.CLOSED
        if not self.established:
            return TcpState.SYN_RECEIVED if self.server else TcpState.SYN_SENT
        if self.fallen_back:
            live = self.alive
            return live[0].conn.state if live else TcpState.CLOSED
        assert self.dr is not None
        ours, theirs = self.ds.fin_dsn is not None, self.dr.fin_received
        if not ours:
            return TcpState.CLOSE_WAIT if theirs else TcpState.ESTABLISHED
        if not theirs:
            return TcpState.FIN_WAIT_2 if self.ds.fin_acked else TcpState.FIN_WAIT_1
        if not self.ds.fin_acked:
            return TcpState.LAST_ACK
        return TcpState.TIME_WAIT if self.alive else TcpState.CLOSED

    @property
    def readable(self) -> int:
        return self.dr.readable if self.dr is not None else 0

    @property
    def eof_received(self) -> bool:
        return self.dr is not None and self.dr.fin_received

    @property
    def send_space(self) -> int:
        if self.ds.fin_dsn is not None or self.closed or self.error is not None:
            return 0
        return self.ds.send_space

    @property
    def all_acked(self) -> bool:
        if self.fallen_back:
            # the TCP ACK is the DATA_ACK: all handed to the subflow and acked
            return self.ds.pending == 0 and all(
                sf.conn.all_acked for sf in self.subflows if sf.alive) and self.error is None
        return self.ds.all_acked

    @property
    def fin_acked(self) -> bool:
        if self.fallen_back:
            return any(sf.conn.fin_acked for sf in self.subflows)
        return self.ds.fin_acked

    @property
    def local(self) -> Any:
        return self.subflows[0].conn.local if self.subflows else None

    @property
    def remote(self) -> Any:
        return self.subflows[0].conn.remote if self.subflows else None

    @property
    def token(self) -> int:
        return self.km.token

    def mptcp_info(self) -> dict[str, Any]:
        """What ``mpstack nc --stats`` reports (issue 4): token, fallback,
        and every subflow that ever existed."""
        return {
            "mptcp": not self.fallen_back,
            "fallback": self.fallen_back,
            "fallback_reason": self.fallback_reason,
            "token": f"{self.km.token:08x}",
            "remote_token": f"{self.peer.token:08x}" if self.peer else None,
            "checksum": self.csum,
            "subflows": [sf.record() for sf in self.subflows if sf.established or sf.join],
            "bytes_acked": self.ds.bytes_acked,
            "bytes_received": self.dr.bytes_received if self.dr else 0,
            "reinjected": self.ds.bytes_reinjected,
            "dup_bytes": self.dr.dup_bytes if self.dr else 0,
            "stats": dict(self.stats),
        }

