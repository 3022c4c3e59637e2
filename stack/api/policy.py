"""Local multipath policies of a host (RFC 6897 §4.2.1, §4.2.2, §4.4.3, §4.5).

RFC 6897 leaves several choices to "a local policy"; this module is where a
host keeps them. One `MultipathPolicy` per host (`policy_for(host)`,
`set_policy(host, policy)`; the facade `Host` also exposes it as
`host.multipath_policy` once wired), read when a socket connects or listens:

* `enable_on_wildcard` = True (L2, L10; §4.2.1, §4.5): a socket left unbound
  or bound to INADDR_ANY / in6addr_any uses MPTCP and may open subflows from
  every local address;
* `enable_on_specific` = False (L1; §4.2.1): a socket bound to one address
  uses plain TCP unless the application sets TCP_MULTIPATH_ENABLE;
* `fate_sharing` = False (L4; §4.2.2): closing the initial subflow leaves the
  connection up on the others;
* `min_buffer` = 16384 bytes (L8; §4.4.3): SO_SNDBUF or SO_RCVBUF set below
  it means "do not use MPTCP";
* `scheduler` = "minrtt" (A11), `pm_mode` = "immediate" (A10).

The socket-level settings (TCP_MULTIPATH_ENABLE, `multipath_set_fate_sharing`,
...) override the host policy for that socket.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["MultipathPolicy", "DEFAULT_POLICY", "policy_for", "set_policy", "mptcp_wanted"]

PM_MODES = ("immediate", "after", "never")


@dataclass(frozen=True)
class MultipathPolicy:
    """The host's defaults for MPTCP on its sockets (see the module docstring)."""

    enable_on_wildcard: bool = True
    enable_on_specific: bool = False
    fate_sharing: bool = False
    min_buffer: int = 16384
    scheduler: str = "minrtt"
    pm_mode: str = "immediate"
    pm_after_bytes: int = 0  # with pm_mode "after"

    def __post_init__(self) -> None:
        if self.min_buffer < 0:
            raise ValueError("min_buffer must be >= 0")
        if self.pm_mode not in PM_MODES:
            raise ValueError(f"pm_mode must be one of {PM_MODES}")

    def with_(self, **changes: Any) -> MultipathPolicy:
        return replace(self, **changes)


DEFAULT_POLICY = MultipathPolicy()

_POLICIES: weakref.WeakKeyDictionary[Any, MultipathPolicy] = weakref.WeakKeyDictionary()


def policy_for(host: Any) -> MultipathPolicy:
    """The policy of a facade host (the documented defaults unless set)."""
    own = getattr(host, "multipath_policy", None)
    if isinstance(own, MultipathPolicy):
        return own
    try:
        return _POLICIES.get(host, DEFAULT_POLICY)
    except TypeError:  # not weak-referenceable
        return DEFAULT_POLICY


def set_policy(host: Any, policy: MultipathPolicy | None = None, **changes: Any) -> \
        MultipathPolicy:
    """Set a host's policy (a whole policy, or changes to the current one)."""
    new = policy if policy is not None else policy_for(host)
    if changes:
        new = replace(new, **changes)
    if hasattr(host, "multipath_policy"):
        host.multipath_policy = new
    else:
        _POLICIES[host] = new
    return new


def mptcp_wanted(policy: MultipathPolicy, *, enable: bool | None, wildcard: bool,
                 sndbuf: int | None, rcvbuf: int | None) -> bool:
    """Whether a socket's connection tries MPTCP.

    `enable`: TCP_MULTIPATH_ENABLE as the application set it (None: never set;
    RFC 6897 §5.3.2 B1: true tries MPTCP, false MUST NOT use it). Otherwise
    the policy: wildcard-bound sockets per `enable_on_wildcard`, sockets bound
    to one address per `enable_on_specific` (§4.2.1); a buffer the
    application set below `min_buffer` turns MPTCP off (§4.4.3)."""
    if enable is not None:
        return enable
    for size in (sndbuf, rcvbuf):
        if size is not None and size < policy.min_buffer:
            return False
    return policy.enable_on_wildcard if wildcard else policy.enable_on_specific
