"""MP_CAPABLE (v1) and MP_JOIN handshakes as small state holders (RFC 8684
§3.1, §3.2), with the acceptance rules of Linux (linux-mptcp-v1.md §1.1, §2.1).

Each class is fed the MPTCP options of the handshake segments (raw kind-30
bytes as ``TcpSegment.mptcp`` holds them, or parsed objects) and returns the
option objects to put on the segments it must send; it decides nothing about
TCP itself. A malformed option is "not there" (the kernel ignores options
with a wrong length), and an MP_CAPABLE only counts when it is the first
MPTCP option of the segment (7.2 ``mptcp_parse_option``).

* ``MpcClient``: SYN option (4 bytes); SYN/ACK validation (version 1, flags
  & 0x1F == 0x01, B clear, 12 bytes); third ACK with both keys; MP_CAPABLE
  with data (22/24) on the first data until a DSS DATA_ACK (or ADD_ADDR)
  arrives; fallback if the first in-sequence segment has neither.
* ``MpcServer``: SYN validation (any version >= 1 on a SYN, v0 ignored);
  SYN/ACK with our key; the segment completing the handshake must carry
  MP_CAPABLE with both keys, our key echoed, the peer's non-zero.
* Checksums are on when either side asks (A flag) -- §3.1, and the kernel
  server also learns A from the third ACK (linux-mptcp-v1.md §2.8).
* ``JoinInitiator``/``JoinResponder``: MP_JOIN SYN (token, nonce), SYN/ACK
  (64-bit truncated HMAC, nonce), ACK (160-bit HMAC), fourth ACK; HMACs via
  ``stack.mptcp.crypto``. The joiner sends no data before the fourth ACK.
* ``JoinHold``: MP_JOIN SYNs that arrive before the connection they name is
  fully established on our (server) side, held briefly instead of refused.
"""

from __future__ import annotations

import hmac as _hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from stack.mptcp.crypto import join_ack_hmac, join_synack_hmac, key_token_v1
from stack.mptcp.fallback import Situation
from stack.mptcp.keys import KeyMaterial, RandomSource, draw_nonce, key_material
from stack.mptcp.mapping import Mapping
from stack.wire.errors import WireError
from stack.wire.mptcp import (
    CAP_A,
    CAP_B,
    CAP_C,
    CAP_H,
    AddAddr,
    Dss,
    MpCapable,
    MpJoin,
    MptcpSuboption,
    parse_mptcp,
)

__all__ = [
    "HandshakeError",
    "JoinHold",
    "JoinInitiator",
    "JoinResponder",
    "MpcClient",
    "MpcServer",
    "parse_options",
    "valid_mpc_flags",
]

OptionsIn = Iterable[bytes | bytearray | memoryview | MptcpSuboption]
JOIN_ACK_RTX_MIN = 0.2  # s; kernel retransmits the MPJ ACK after ~2*SRTT (>= TCP_RTO_MIN)
JOIN_ACK_RTX_DEFAULT = 1.0  # s; TCP_TIMEOUT_INIT when no RTT sample yet


class HandshakeError(Exception):
    """A handshake step was asked out of order (a programming error)."""


def parse_options(opts: OptionsIn) -> list[MptcpSuboption]:
    """Parse raw kind-30 options; malformed ones are dropped as the kernel
    ignores them (the option is "not there")."""
    out: list[MptcpSuboption] = []
    for o in opts:
        if isinstance(o, bytes | bytearray | memoryview):
            try:
                out.append(parse_mptcp(bytes(o)))
            except WireError:
                continue
        else:
            out.append(o)
    return out


def valid_mpc_flags(flags: int) -> bool:
    """Kernel ``mptcp_cap_flag_sha256`` rule: H set, D..G clear, B clear."""
    return (flags & 0x1F) == CAP_H and not flags & CAP_B


def _first_mpc(opts: list[MptcpSuboption]) -> MpCapable | None:
    """MP_CAPABLE only counts as the first MPTCP option of the segment."""
    return opts[0] if opts and isinstance(opts[0], MpCapable) else None


def _find(opts: list[MptcpSuboption], kind: type) -> list:
    return [o for o in opts if isinstance(o, kind)]


# ------------------------------------------------------------------ MP_CAPABLE


@dataclass(slots=True)
class MpcClient:
    """Active opener's MP_CAPABLE v1 negotiation (§3.1)."""

    local: KeyMaterial
    want_csum: bool = False
    deny_join_id0: bool = False  # C flag: "do not join my initial address"
    remote: KeyMaterial | None = None
    csum: bool = False
    peer_deny_join_id0: bool = False
    fully_established: bool = False
    fallback: Situation | None = None  # why we fell back to TCP, else None
    syn_retransmits: int = 0
    syn_retrans_limit: int = 2  # net.mptcp.syn_retrans_before_tcp_fallback

    @property
    def mptcp(self) -> bool:
        return self.fallback is None

    def _flags(self, csum: bool) -> int:
        return CAP_H | (CAP_A if csum else 0) | (CAP_C if self.deny_join_id0 else 0)

    def syn_option(self) -> MpCapable | None:
        """The SYN's MP_CAPABLE (4 bytes, no key in v1); None once we gave up
        on MPTCP after repeated SYN timeouts (ctrl.c blackhole logic)."""
        if self.fallback is not None:
            return None
        return MpCapable(1, self._flags(self.want_csum))

    def on_syn_timeout(self) -> None:
        """An MP_CAPABLE SYN went unanswered: after ``syn_retrans_limit`` of
        them the next SYN is sent without MP_CAPABLE (MPCapableSYNTXDrop)."""
        self.syn_retransmits += 1
        if self.syn_retransmits > self.syn_retrans_limit and self.fallback is None:
            self.fallback = Situation.MPC_SYN_TIMEOUT

    def on_synack(self, opts: OptionsIn) -> bool:
        """Validate the SYN/ACK; True when MPTCP goes on, False on fallback."""
        if self.fallback is not None:
            return False
        mpc = _first_mpc(parse_options(opts))
        if (mpc is None or mpc.version != 1 or mpc.length != 12 or mpc.sender_key is None
                or not valid_mpc_flags(mpc.flags)):
            self.fallback = Situation.SYNACK_WITHOUT_MPC
            return False
        self.remote = key_material(mpc.sender_key)
        self.csum = self.want_csum or mpc.checksum_required
        self.peer_deny_join_id0 = bool(mpc.flags & CAP_C)
        return True

    def _keys(self) -> tuple[int, int]:
        if self.remote is None:
            raise HandshakeError("no SYN/ACK key yet")
        return self.local.key, self.remote.key

    def third_ack_option(self) -> MpCapable:
        """The third ACK: both keys, sender's first (20 bytes)."""
        mine, theirs = self._keys()
        return MpCapable(1, self._flags(self.csum), mine, theirs)

    def data_option(self, m: Mapping) -> MpCapable | None:
        """MP_CAPABLE with data for a segment of the first mapping while not
        fully established (22 bytes, 24 with checksum); None when a DSS must
        be used instead (the kernel's ``mptcp_established_options_mp``)."""
        if self.fully_established or self.fallback is not None or m.ssn != 1:
            return None
        mine, theirs = self._keys()
        return MpCapable(1, self._flags(self.csum), mine, theirs, m.dll,
                         m.checksum if self.csum else None)

    def option_for(self, seg_rel: int, m: Mapping | None) -> MpCapable | None:
        """The MP_CAPABLE for an outgoing segment, or None (send a DSS). As
        the kernel (options.c ``mptcp_established_options_mp``), until fully
        established every segment starting at our ISN + 1 (``seg_rel == 1``)
        carries MP_CAPABLE: 20 bytes on a pure ACK (the third ACK and its
        repeats), 22/24 with the first mapping's data."""
        if self.fully_established or self.fallback is not None or seg_rel != 1:
            return None
        return self.third_ack_option() if m is None else self.data_option(m)

    def on_segment(self, opts: OptionsIn, at_first_byte: bool) -> bool:
        """A segment from the server after the handshake (options.c
        ``check_fully_established``). ``at_first_byte``: the segment starts at
        the server's ISN + 1 (only those decide). Returns False on fallback."""
        if self.fallback is not None:
            return False
        if self.fully_established or not at_first_byte:
            return True
        parsed = parse_options(opts)
        if any(o.data_ack_len for o in _find(parsed, Dss)) or any(
                not a.echo for a in _find(parsed, AddAddr)):
            self.fully_established = True  # "any additional ack, including ADD_ADDR"
            return True
        if _first_mpc(parsed) is not None:
            self.fully_established = True
            return True
        self.fallback = Situation.FIRST_SEGMENT_WITHOUT_DSS  # MPCapableDataFallback
        return False


@dataclass(slots=True)
class MpcServer:
    """Passive opener's MP_CAPABLE v1 negotiation (§3.1)."""

    local: KeyMaterial
    want_csum: bool = False
    deny_join_id0: bool = False
    peer_csum: bool = False  # the SYN (or third ACK) asked for checksums
    peer_deny_join_id0: bool = False
    remote: KeyMaterial | None = None
    fully_established: bool = False
    fallback: Situation | None = None

    @staticmethod
    def syn_acceptable(opts: OptionsIn) -> MpCapable | None:
        """The SYN's MP_CAPABLE if we should answer with MPTCP, else None
        (plain SYN/ACK). Any version >= 1 is accepted on a SYN (we answer
        v1); v0 and bad flags are ignored (linux-mptcp-v1.md §1.1 [probe])."""
        mpc = _first_mpc(parse_options(opts))
        if mpc is None or mpc.version < 1 or mpc.length != 4 or not valid_mpc_flags(mpc.flags):
            return None
        return mpc

    @classmethod
    def from_syn(cls, local: KeyMaterial, opts: OptionsIn, *, want_csum: bool = False,
                 deny_join_id0: bool = False) -> MpcServer | None:
        """Start the server side for a SYN, or None to answer as plain TCP."""
        mpc = cls.syn_acceptable(opts)
        if mpc is None:
            return None
        return cls(local, want_csum, deny_join_id0, mpc.checksum_required,
                   bool(mpc.flags & CAP_C))

    @property
    def csum(self) -> bool:
        return self.want_csum or self.peer_csum

    @property
    def mptcp(self) -> bool:
        return self.fallback is None

    def synack_option(self) -> MpCapable:
        """The SYN/ACK: our key (12 bytes). As the kernel, A only when we
        want checksums ourselves (a peer asking already enables them)."""
        flags = CAP_H | (CAP_A if self.want_csum else 0) | (CAP_C if self.deny_join_id0 else 0)
        return MpCapable(1, flags, self.local.key)

    def on_third_ack(self, opts: OptionsIn, payload_len: int = 0) -> Mapping | None | bool:
        """The segment completing the handshake. Returns False on fallback,
        else the implicit mapping when it carried data (MP_CAPABLE 22/24),
        else None. The kernel falls back when this segment lacks a valid
        MP_CAPABLE with both keys (MPCapableFallbackACK) -- 20 bytes on a
        pure ACK, 22/24 on a segment with data (options.c strict size
        check) --, and we also refuse our key not echoed or a zero peer key
        (syncookie check, subflow.c)."""
        if self.fallback is not None:
            return False
        mpc = _first_mpc(parse_options(opts))
        if (mpc is None or mpc.version != 1 or mpc.receiver_key is None
                or (mpc.data_len is not None) != (payload_len > 0)
                or not valid_mpc_flags(mpc.flags) or mpc.receiver_key != self.local.key
                or not mpc.sender_key):
            self.fallback = Situation.THIRD_ACK_WITHOUT_MPC
            return False
        self.remote = key_material(mpc.sender_key)
        self.peer_csum = self.peer_csum or mpc.checksum_required
        self.fully_established = True
        if mpc.data_len is None:
            return None
        return Mapping.from_mpc(mpc, self.remote.idsn)


# --------------------------------------------------------------------- MP_JOIN


@dataclass(slots=True)
class JoinInitiator:
    """The side opening an additional subflow (host A of §3.2)."""

    local_key: int
    remote_key: int
    nonce: int
    addr_id: int = 0
    backup: bool = False
    peer_nonce: int | None = None
    peer_addr_id: int | None = None
    peer_backup: bool = False
    established: bool = False  # fourth ACK seen: data may flow
    failed: Situation | None = None

    @classmethod
    def start(cls, local_key: int, remote_key: int, rng: RandomSource, *, addr_id: int = 0,
              backup: bool = False) -> JoinInitiator:
        return cls(local_key, remote_key, draw_nonce(rng), addr_id, backup)

    def syn_option(self) -> MpJoin:
        """SYN: the peer's token and our nonce (12 bytes)."""
        return MpJoin("syn", self.backup, self.addr_id, token=key_token_v1(self.remote_key),
                      nonce=self.nonce)

    def on_synack(self, opts: OptionsIn) -> bool:
        """Check the SYN/ACK's truncated HMAC(Key_B‖Key_A, R_B‖R_A); False → reset
        the subflow (MP_JOIN never falls back, §3.2)."""
        joins = [o for o in parse_options(opts) if isinstance(o, MpJoin)]
        j = joins[0] if joins else None
        if j is None or j.variant != "synack" or j.nonce is None or j.hmac is None:
            self.failed = Situation.JOIN_FAILURE
            return False
        want = join_synack_hmac(self.remote_key, self.local_key, j.nonce, self.nonce)
        if not _hmac.compare_digest(want, j.hmac):
            self.failed = Situation.JOIN_FAILURE
            return False
        self.peer_nonce, self.peer_addr_id, self.peer_backup = j.nonce, j.addr_id, j.backup
        return True

    def ack_option(self) -> MpJoin:
        """Third ACK: HMAC(Key_A‖Key_B, R_A‖R_B), 160 bits; retransmitted
        until the fourth ACK arrives (``ack_retransmit_timeout``)."""
        if self.peer_nonce is None:
            raise HandshakeError("no valid SYN/ACK yet")
        return MpJoin("ack", hmac=join_ack_hmac(self.local_key, self.remote_key, self.nonce,
                                                self.peer_nonce))

    def on_segment(self, opts: OptionsIn, at_first_byte: bool = True) -> bool:
        """A segment from the listener after our ACK (options.c
        ``check_fully_established``): a DSS DATA_ACK is the fourth ACK (§3.2)
        and makes the subflow established. Before it, a segment not at the
        listener's ISN + 1, or one without a DATA_ACK, is a protocol violation:
        returns False (reset the subflow; never fall back)."""
        if self.failed is not None:
            return False
        if self.established:
            return True
        if not at_first_byte:
            self.failed = Situation.FIRST_SEGMENT_WITHOUT_DSS
            return False
        if any(o.data_ack_len for o in parse_options(opts) if isinstance(o, Dss)):
            self.established = True
            return True
        self.failed = Situation.FIRST_SEGMENT_WITHOUT_DSS
        return False

    @staticmethod
    def ack_retransmit_timeout(srtt: float | None) -> float:
        """When to resend the MPJ ACK without a fourth ACK (protocol.c
        ``schedule_3rdack_retransmission``: twice the SRTT, else 1 s)."""
        if not srtt:
            return JOIN_ACK_RTX_DEFAULT
        return max(2 * srtt, JOIN_ACK_RTX_MIN)


@dataclass(slots=True)
class JoinResponder:
    """The side accepting an additional subflow (host B of §3.2)."""

    local_key: int
    remote_key: int
    peer_nonce: int
    peer_addr_id: int
    peer_backup: bool
    nonce: int
    addr_id: int = 0
    backup: bool = False
    established: bool = False
    failed: Situation | None = None

    @staticmethod
    def syn_join(opts: OptionsIn) -> MpJoin | None:
        """The MP_JOIN of a SYN, if any (12 bytes: token and nonce)."""
        for o in parse_options(opts):
            if isinstance(o, MpJoin) and o.variant == "syn":
                return o
        return None

    @classmethod
    def from_syn(cls, syn: MpJoin, local_key: int, remote_key: int, rng: RandomSource, *,
                 addr_id: int = 0, backup: bool = False) -> JoinResponder:
        """Answer a SYN whose token named our connection. ``addr_id`` is our
        id of the address the SYN reached (0 for the initial address)."""
        assert syn.nonce is not None
        return cls(local_key, remote_key, syn.nonce, syn.addr_id, syn.backup,
                   draw_nonce(rng), addr_id, backup)

    def synack_option(self) -> MpJoin:
        """SYN/ACK: leftmost 64 bits of HMAC(Key_B‖Key_A, R_B‖R_A) and our nonce."""
        thmac = join_synack_hmac(self.local_key, self.remote_key, self.nonce, self.peer_nonce)
        return MpJoin("synack", self.backup, self.addr_id, hmac=thmac, nonce=self.nonce)

    def on_ack(self, opts: OptionsIn) -> bool:
        """Check the third ACK's 160-bit HMAC; False → RST with MP_TCPRST."""
        joins = [o for o in parse_options(opts) if isinstance(o, MpJoin)]
        j = joins[0] if joins else None
        if j is None or j.variant != "ack" or j.hmac is None:
            self.failed = Situation.THIRD_ACK_WITHOUT_MPC
            return False
        want = join_ack_hmac(self.remote_key, self.local_key, self.peer_nonce, self.nonce)
        if not _hmac.compare_digest(want, j.hmac):
            self.failed = Situation.JOIN_FAILURE
            return False
        self.established = True
        return True

    @staticmethod
    def fourth_ack(dss_ack: Dss) -> Dss:
        """The fourth ACK the listener sends at once: a DSS with only the
        DATA_ACK (``1e08 2001 ...`` on the wire)."""
        if not dss_ack.data_ack_len or dss_ack.dsn_len:
            raise HandshakeError("the fourth ACK carries a DATA_ACK and no mapping")
        return dss_ack


# ------------------------------------------------------------ held MP_JOIN SYNs


@dataclass(slots=True)
class _Held:
    token: int
    syn: object
    deadline: float


@dataclass(slots=True)
class JoinHold:
    """MP_JOIN SYNs for a token whose connection is not fully established
    yet (its third ACK travels on another path), held for ``hold_time``
    instead of refused as Linux does. Bounded: at most ``per_token`` SYNs per
    token and ``capacity`` in all; more are refused (the caller RSTs them).
    Only tokens the host has allocated may be held, so a flood of SYNs with
    random tokens leaves no state."""

    hold_time: float = 1.0
    per_token: int = 4
    capacity: int = 64
    _held: list[_Held] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, token: int, syn: object, now: float) -> bool:
        """Keep ``syn`` (whatever the caller needs to answer it later)."""
        if len(self._held) >= self.capacity:
            return False
        if sum(1 for h in self._held if h.token == token) >= self.per_token:
            return False
        self._held.append(_Held(token, syn, now + self.hold_time))
        return True

    def release(self, token: int) -> list[object]:
        """The connection of ``token`` is established: its held SYNs, in order."""
        out = [h.syn for h in self._held if h.token == token]
        self._held = [h for h in self._held if h.token != token]
        return out

    def expire(self, now: float) -> list[object]:
        """SYNs held past their deadline (to be refused)."""
        out = [h.syn for h in self._held if h.deadline <= now]
        self._held = [h for h in self._held if h.deadline > now]
        return out

    def next_deadline(self) -> float | None:
        return min((h.deadline for h in self._held), default=None)

    def discard(self, token: int) -> None:
        self._held = [h for h in self._held if h.token != token]


def options_bytes(opts: Sequence[MptcpSuboption]) -> tuple[bytes, ...]:
    """Emit option objects for ``upper.write_options``."""
    return tuple(o.emit() for o in opts)
