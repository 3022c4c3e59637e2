"""When to fall back to plain TCP, send MP_FAIL, or reset a subflow.

One pure function, ``decide(situation, ctx)``, holding the rules of RFC 8684
§3.7 as Linux applies them (linux-mptcp-v1.md §2.2; net/mptcp/subflow.c
``subflow_check_data_avail``, ``subflow_can_fallback``; protocol.c
``__mptcp_try_fallback``; options.c ``check_fully_established``; pm.c
``mptcp_pm_mp_fail_received``; ctrl.c ``mptcp_active_should_disable``).

The infinite-mapping fallback of an established connection is only possible
while ``allow_infinite_fallback`` holds: a single subflow, no MP_JOIN ever
accepted or started, no data-level retransmission yet, and an empty
data-level out-of-order queue (RFC 8684 §3.7: "fall back only if there is a
single subflow and all data up to this point is in order"). Otherwise the
subflow is reset with MP_TCPRST. MP_JOIN subflows never fall back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from stack.mptcp.datarecv import MapError
from stack.wire.mptcp import MpFail, MpFastclose, MpTcpRst, MptcpSuboption

__all__ = [
    "Action",
    "Context",
    "Decision",
    "Situation",
    "RST_UNSPECIFIED",
    "RST_EMPTCP",
    "RST_ERESOURCE",
    "RST_EPROHIBIT",
    "RST_EMIDDLEBOX",
    "MP_FAIL_TIMEOUT",
    "allow_infinite_fallback",
    "subflow_can_fallback",
    "decide",
    "fastclose_valid",
    "rst_options",
]

# MP_TCPRST reason codes (RFC 8684 §3.6)
RST_UNSPECIFIED = 0
RST_EMPTCP = 1  # MPTCP-specific error
RST_ERESOURCE = 2  # lack of resources
RST_EPROHIBIT = 3  # administratively prohibited
RST_EMIDDLEBOX = 6  # middlebox interference

MP_FAIL_TIMEOUT = 120.0  # kernel: TCP_RTO_MAX waiting for the infinite mapping


class Situation(enum.Enum):
    SYNACK_WITHOUT_MPC = "synack_without_mpc"  # client: no valid MP_CAPABLE on SYN/ACK
    SYN_BAD_MPC = "syn_bad_mpc"  # server: SYN with unusable MP_CAPABLE (flags, version)
    MPC_SYN_TIMEOUT = "mpc_syn_timeout"  # client: an MP_CAPABLE SYN timed out
    THIRD_ACK_WITHOUT_MPC = "third_ack_without_mpc"  # server: handshake-completing seg
    FIRST_SEGMENT_WITHOUT_DSS = "first_segment_without_dss"  # client, not fully established
    MAPPING_ERROR = "mapping_error"  # a datarecv.MapError on a subflow
    JOIN_FAILURE = "join_failure"  # bad HMAC, missing MPJ ACK, data before the 4th ACK
    JOIN_OVER_LIMIT = "join_over_limit"  # PM refuses another subflow
    JOIN_UNKNOWN_TOKEN = "join_unknown_token"  # MP_JOIN SYN with a token not in use
    MP_FAIL_RECEIVED = "mp_fail_received"
    MP_FAIL_TIMEOUT = "mp_fail_timeout"  # no infinite mapping after our MP_FAIL


class Action(enum.Enum):
    CONTINUE = "continue"  # stay MPTCP, nothing to do
    FALLBACK = "fallback"  # plain TCP from now on, no MPTCP options
    RETRY_SYN_WITHOUT_MPC = "retry_syn_without_mpc"
    SEND_MP_FAIL = "send_mp_fail"  # MP_FAIL(dsn), deliver the data, await the infinite map
    MP_FAIL_AND_FALLBACK = "mp_fail_and_fallback"  # answer MP_FAIL + infinite mapping
    STOP_FAIL_TIMER = "stop_fail_timer"  # the peer answered our MP_FAIL
    RESET = "reset"  # RST this subflow with MP_TCPRST(rst_reason)


@dataclass(frozen=True, slots=True)
class Context:
    """What the decision depends on. Defaults describe a fresh single-subflow
    MP_CAPABLE connection."""

    mp_join: bool = False  # the subflow concerned is an MP_JOIN subflow
    csum_enabled: bool = False
    valid_csum_seen: bool = False  # a checksum on this subflow verified before
    fully_established: bool = False  # this subflow is fully established
    subflows: int = 1  # subflows of the connection (alive or starting)
    join_seen: bool = False  # an MP_JOIN was ever started or accepted
    data_retransmitted: bool = False  # a data-level retransmission/re-injection happened
    ooo_empty: bool = True  # data-level out-of-order queue empty
    map_data_len: int = 1  # length of the mapping at fault (0: infinite/none)
    map_error: MapError | None = None
    syn_retransmits: int = 0  # MP_CAPABLE SYN retransmissions so far
    syn_retransmits_limit: int = 2  # net.mptcp.syn_retrans_before_tcp_fallback
    mp_fail_sent: bool = False  # we sent MP_FAIL and wait for the answer


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    rst_reason: int | None = None
    deliver: bool = False  # deliver the data at fault anyway (MP_FAIL path)
    mib: str = ""  # the kernel counter for the same event


def allow_infinite_fallback(ctx: Context) -> bool:
    """Kernel ``msk->allow_infinite_fallback`` (RFC 8684 §3.7)."""
    return (ctx.subflows <= 1 and not ctx.join_seen and not ctx.data_retransmitted
            and ctx.ooo_empty)


def subflow_can_fallback(ctx: Context) -> bool:
    """Kernel ``subflow_can_fallback``: never on a join subflow; with
    checksums only before a checksum verified; else before the subflow is
    fully established."""
    if ctx.mp_join:
        return False
    if ctx.csum_enabled:
        return not ctx.valid_csum_seen
    return not ctx.fully_established


def _join_reset(mib: str, reason: int = RST_EMPTCP) -> Decision:
    return Decision(Action.RESET, reason, mib=mib)


def decide(situation: Situation, ctx: Context | None = None) -> Decision:
    """The action for ``situation`` (table in linux-mptcp-v1.md §2.2)."""
    if ctx is None:
        ctx = Context()
    s = situation
    if s is Situation.SYNACK_WITHOUT_MPC:
        return Decision(Action.FALLBACK, mib="MPCapableFallbackSYNACK")
    if s is Situation.SYN_BAD_MPC:
        return Decision(Action.FALLBACK, mib="MPCapableSYNRX-ignored")
    if s is Situation.MPC_SYN_TIMEOUT:
        if ctx.syn_retransmits >= ctx.syn_retransmits_limit:
            return Decision(Action.RETRY_SYN_WITHOUT_MPC, mib="MPCapableSYNTXDrop")
        return Decision(Action.CONTINUE)
    if s is Situation.THIRD_ACK_WITHOUT_MPC:
        if ctx.mp_join:
            return _join_reset("JoinAckMissing")
        return Decision(Action.FALLBACK, mib="MPCapableFallbackACK")
    if s is Situation.FIRST_SEGMENT_WITHOUT_DSS:
        if ctx.mp_join:
            return _join_reset("JoinNotEstablished")
        return Decision(Action.FALLBACK, mib="MPCapableDataFallback")
    if s is Situation.JOIN_FAILURE:
        return _join_reset("JoinAckHMacFailure")
    if s is Situation.JOIN_OVER_LIMIT:
        return _join_reset("MPJoinRejected", RST_EPROHIBIT)
    if s is Situation.JOIN_UNKNOWN_TOKEN:
        return _join_reset("MPJoinNoTokenFound")
    if s is Situation.MP_FAIL_RECEIVED:
        if not allow_infinite_fallback(ctx):
            return Decision(Action.CONTINUE, mib="MPFailRx")
        if ctx.mp_fail_sent:
            return Decision(Action.STOP_FAIL_TIMER, mib="MPFailRx")
        return Decision(Action.MP_FAIL_AND_FALLBACK, mib="MPFailRx")
    if s is Situation.MP_FAIL_TIMEOUT:
        return Decision(Action.RESET, RST_EMIDDLEBOX, mib="MPFailNoResponse")
    if s is Situation.MAPPING_ERROR:
        return _mapping_error(ctx)
    raise ValueError(f"unknown situation {situation!r}")


def _mapping_error(ctx: Context) -> Decision:
    """subflow.c ``subflow_check_data_avail`` after a bad mapping status."""
    err = ctx.map_error
    allowed = allow_infinite_fallback(ctx)
    if err is MapError.BAD_CSUM and (ctx.mp_join or ctx.valid_csum_seen):
        # RFC 8684 §3.7: checksum failure after checksums worked → MP_FAIL
        if not allowed:
            return Decision(Action.RESET, RST_EMIDDLEBOX, mib="DataCsumErr")
        return Decision(Action.SEND_MP_FAIL, deliver=True, mib="MPFailTx")
    map_len = 0 if err is MapError.INFINITE else ctx.map_data_len
    if not subflow_can_fallback(ctx) and map_len:
        return Decision(Action.RESET, RST_EMPTCP, mib="DssCorruptionReset")
    if not allowed:
        return Decision(Action.RESET, RST_EMPTCP, mib="DssCorruptionReset")
    return Decision(Action.FALLBACK, deliver=True, mib="DssFallback")


def rst_options(d: Decision, *, fail_dsn: int | None = None,
                transient: bool = False) -> list[MptcpSuboption]:
    """MPTCP options for the RST of a RESET decision: MP_FAIL first when a
    checksum failure caused it (they may share a RST, options.c), then
    MP_TCPRST with the reason (§3.6; T flag for transient errors)."""
    if d.action is not Action.RESET:
        raise ValueError(f"not a reset: {d.action}")
    out: list[MptcpSuboption] = []
    if fail_dsn is not None:
        out.append(MpFail(fail_dsn))
    out.append(MpTcpRst(1 if transient else 0, d.rst_reason or RST_UNSPECIFIED))
    return out


def fastclose_valid(opt: MpFastclose, local_key: int) -> bool:
    """An MP_FASTCLOSE is honoured only when it carries our own key (§3.5;
    protocol.c checks ``msk->local_key == mp_opt.rcvr_key``)."""
    return opt.receiver_key == local_key
