"""MPTCP v1 (RFC 8684) building blocks, sans-IO; see docs/MPTCP-DESIGN.md.

- ``dsn``: 64-bit data-sequence arithmetic, 32-bit expansion (§3.3)
- ``keys``: keys, tokens, nonces, the per-host token registry (§3.1, §3.2)
- ``crypto``: SHA-256 tokens, IDSNs and HMACs (§3.1, §3.2, §3.4.1)
- ``mapping``: DSS mappings and the per-subflow mapping tables (§3.3)
- ``datasend`` / ``datarecv``: the data level, both directions (§3.3)
- ``handshake``: MP_CAPABLE and MP_JOIN negotiation (§3.1, §3.2)
- ``fallback``: fallback / MP_FAIL / reset decisions (§3.7)
- ``pm``: the default path manager (§3.4)
- ``scheduler``: packet schedulers (min-RTT default, round robin, redundant)
- ``coupled``: coupled congestion control (RFC 6356 LIA, ...)

Nothing is imported here, so importing one piece never drags in the others.
"""
