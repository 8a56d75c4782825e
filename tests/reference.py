"""Plain-loop references for the estimators: slow, obvious, independent.

They follow DESIGN.md section 3 literally, one group and one number at a time,
with no shared code with the vectorized implementation.
"""

from __future__ import annotations

import math


def _mean(values):
    return sum(values) / len(values)


def _std(values, ddof):
    if len(values) - ddof <= 0:
        return 0.0
    mu = _mean(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - ddof))


def _is_constant(values):
    return all(v == values[0] for v in values)


def zscores(values, *, ddof=0, eps=1e-8, scale_by_std=True):
    """z of one list; exactly 0 for a constant list or too few values."""
    m = len(values)
    if m == 0:
        return []
    if m - ddof <= 0 or _is_constant(values):
        return [0.0] * m
    mu = _mean(values)
    if not scale_by_std:
        return [v - mu for v in values]
    sd = _std(values, ddof)
    return [(v - mu) / (sd + eps) for v in values]


def group_na(group, w, **opts):
    m, n_channels = len(group), len(w)
    out = [0.0] * m
    for ch in range(n_channels):
        z = zscores([row[ch] for row in group], **opts)
        for j in range(m):
            out[j] += w[ch] * z[j]
    return out


def group_an(group, w, **opts):
    scalar = [sum(wc * rc for wc, rc in zip(w, row)) for row in group]
    return zscores(scalar, **opts)


def group_single(group, w, **opts):
    return zscores([row[0] for row in group], **opts)


GROUP_REFS = {"na": group_na, "an": group_an, "single": group_single}


def batch_reference(rewards, w, mode, **opts):
    """rewards: nested lists (P, m, R) -> nested lists (P, m)."""
    if mode == "gdpo":
        na = [group_na(g, w, **opts) for g in rewards]
        flat = [a for row in na for a in row]
        white = zscores(flat, **opts)
        it = iter(white)
        return [[next(it) for _ in row] for row in na]
    return [GROUP_REFS[mode](g, w, **opts) for g in rewards]


def conditioned_group(group, gate, target, *, method="zero_fill", gamma=0.0, threshold=0.5):
    """One group (m, R) as lists, with channel ``target`` gated by ``gate``."""
    out = [list(row) for row in group]
    passes = [row[gate] >= threshold for row in group]
    if method == "zero_fill":
        for j, row in enumerate(out):
            row[target] = row[target] * (1.0 if passes[j] else gamma)
        return out
    members = [row[target] for row, p in zip(group, passes) if p]
    if len(members) < 2:
        for row in out:
            row[target] = 0.0
        return out
    mu = members[0] if _is_constant(members) else _mean(members)
    for j, row in enumerate(out):
        row[target] = (row[target] - mu) if passes[j] else 0.0
    return out
