"""Integer helpers for the launchers' host code.

``triton.cdiv`` and ``triton.next_power_of_2`` are constexpr functions in Triton 3.6: called from
Python they unwrap their arguments first and cost about 3 us each, against 0.01 us for the
arithmetic itself, and one decode call made up to a dozen of them. Device code keeps Triton's.
"""

from __future__ import annotations

# SMs of an H100 SXM and of an H200: the count the decode GEMVs' split rules size their waves by.
SM90_SMS = 132


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for integers, ``b > 0``."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two ``>= n`` for ``n >= 1``; 0 for 0, as Triton's."""
    return n if n <= 1 else 1 << (n - 1).bit_length()
