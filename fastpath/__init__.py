"""Cython hot path: checksums, segment parsing, reassembly, DSS mapping.

This package knows bytes, not protocol objects, and imports nothing from the
rest of the project. Every compiled function has a plain-Python twin in
`fastpath.reference`, and the tests check that the two always agree.
"""
