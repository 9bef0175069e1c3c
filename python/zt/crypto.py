"""ZeroTier's cryptographic primitives, for tools and tests.

Nodes use these internally; they are exposed so that other implementations can be checked
against them (and them against others).
"""

from __future__ import annotations

from ._native import identity_hash, poly1305, salsa20, sha512

__all__ = ["identity_hash", "poly1305", "salsa20", "sha512"]
