"""A bulk-transfer application for virtual-time runs: a client connects,
sends a byte string and closes; the server accepts, reads everything (it can
be told to stop reading for a while, to close the window) and closes after
the client's FIN. Used by the simulation tests and congestion-control
experiments.

    xfer = BulkTransfer(net, client, server, data, server_addr="10.0.0.2")
    assert net.run_until(xfer.done, timeout=60, on_step=xfer.step)
    assert xfer.received == data
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stack.host.core import HostCore
from stack.tcp.config import TcpConfig
from stack.tcp.state import TcpState

from .network import Network

__all__ = ["BulkTransfer"]



class BulkTransfer:
    def __init__(
        self,
        net: Network,
        client: HostCore,
        server: HostCore,
        data: bytes,
        *,
        server_addr: str,
        port: int = 5001,
        client_config: TcpConfig | None = None,
        server_config: TcpConfig | None = None,
        reading: Callable[[float], bool] | None = None,
    ) -> None:
        self.net = net
        self.client = client
        self.server = server
        self.data = memoryview(data)
        self.reading = reading  # reading(now) False: the server app does not read
        self.listener = server.listen(None, port, config=server_config)
        self.conn: Any = client.connect(server_addr, port, net.now, config=client_config)
        self.peer: Any = None
        self.sent = 0
        self._rx: list[bytes] = []
        self.received_len = 0
        self.client_closed = False
        self.server_closed = False
        self.finished_at: float | None = None

    @property
    def received(self) -> bytes:
        return b"".join(self._rx)

    def step(self, now: float) -> None:
        """Run both applications once (Network.run's on_step)."""
        c = self.conn
        woke = False
        if c.state is TcpState.SYN_SENT:
            return  # like a blocking connect(): act once it is established
        if self.sent < len(self.data) and c.send_space > 0:
            n = c.send(self.data[self.sent : self.sent + c.send_space], now)
            if n:
                self.sent += n
                woke = True
        if self.sent == len(self.data) and not self.client_closed and c.error is None:
            c.close(now)  # FIN after the last byte (RFC 9293 §3.10.4)
            self.client_closed = True
            woke = True
        if woke:
            self.client.wake(c, now)
        s = self.peer
        if s is None:
            s = self.peer = self.listener.accept()
            if s is None:
                return
        if (self.reading is None or self.reading(now)) and s.readable:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                self._rx.append(chunk)
                self.received_len += len(chunk)
            self.server.wake(s, now)
        if s.eof_received and not s.readable and not self.server_closed:
            s.close(now)
            self.server_closed = True
            self.server.wake(s, now)
        if self.finished_at is None and self.done():
            self.finished_at = now

    def done(self) -> bool:
        """Everything arrived, both FINs were sent and acknowledged."""
        s = self.peer
        return (
            s is not None
            and self.received_len == len(self.data)
            and s.eof_received
            and self.server_closed
            and s.all_acked
            and self.conn.all_acked
        )

    def failed(self) -> int | None:
        """An errno if either end failed."""
        return self.conn.error or (self.peer.error if self.peer is not None else None)
