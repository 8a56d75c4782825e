"""Process-independent seeding.

Python's ``hash(str)`` is salted per process (``PYTHONHASHSEED``), so a seed
derived from it changes every run and differs between workers. Everything here
hashes with BLAKE2b instead, so the same ``(seed, key, ...)`` gives the same
random stream in every process, on every machine and Python version.

Keys may be ``str``, ``bytes``, ``int`` or ``None``; other objects (chat
message lists, dicts) are keyed by their canonical JSON text.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

__all__ = ["make_rng", "seed_sequence", "stable_hash64"]

_MASK64 = (1 << 64) - 1


def _key_bytes(key: Any) -> bytes:
    """Canonical bytes of one key, tagged by kind so ``1`` and ``"1"`` differ."""
    if isinstance(key, bytes):
        return b"b" + key
    if isinstance(key, str):
        return b"s" + key.encode("utf-8")
    if isinstance(key, (bool, np.bool_)):
        return b"o" + (b"1" if key else b"0")
    if isinstance(key, (int, np.integer)):
        return b"i" + str(int(key)).encode("ascii")
    if key is None:
        return b"n"
    try:
        text = json.dumps(key, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except TypeError:
        raise TypeError(
            f"cannot derive a stable seed from a {type(key).__name__}; "
            "use a str, int, bytes or a JSON-serializable value"
        ) from None
    return b"j" + text.encode("utf-8")


def stable_hash64(*keys: Any) -> int:
    """A 64-bit hash of ``keys`` that is identical in every process.

    Parameters
    ----------
    *keys : str, bytes, int, None or JSON-serializable
        The parts to hash, in order. Each part is length-prefixed so
        ``("ab", "c")`` and ``("a", "bc")`` hash differently.

    Returns
    -------
    int
        An integer in ``[0, 2**64)``.
    """
    h = hashlib.blake2b(digest_size=8, person=b"mrgrpo-seed")
    for key in keys:
        data = _key_bytes(key)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return int.from_bytes(h.digest(), "little") & _MASK64


def _check_seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be a non-negative int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    return int(seed)


def seed_sequence(seed: int, *keys: Any) -> np.random.SeedSequence:
    """A ``SeedSequence`` for the stream named by ``(seed, *keys)``.

    Parameters
    ----------
    seed : int
        The user-facing seed (non-negative).
    *keys : str, int, ...
        Names of the sub-stream, e.g. ``("rollouts", prompt, seed_idx)``.
    """
    return np.random.SeedSequence([_check_seed(seed), stable_hash64(*keys)])


def make_rng(seed: int, *keys: Any) -> np.random.Generator:
    """A ``numpy.random.Generator`` for the stream named by ``(seed, *keys)``."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, *keys)))
