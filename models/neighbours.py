"""Neighbourhood fitting shared by the kNN baselines (``iknn``, ``sknn``): distinct
session-item pairs, sparse item co-occurrence counts, and "top-N per row" of a sparse
matrix as dense index/value buffers (what the ONNX score graphs gather from).

Tensors only; everything here runs once at fit time on the CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Upper bound of item pairs generated at once when counting co-occurrences.
PAIR_CHUNK = 20_000_000


def session_item_pairs(sessions: list[list[int]], n_items: int, model: str
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct (session, item) pairs, sessions in list order, items in order of their
    first click in the session.

    Returns ``session`` [P] (0-based list position), ``item`` [P] and ``offsets`` [S+1]
    (the pairs of session s are ``offsets[s]:offsets[s+1]``). Items must lie in
    ``1..n_items``."""
    lengths = torch.tensor([len(s) for s in sessions], dtype=torch.int64)        # [S]
    flat = torch.tensor([i for s in sessions for i in s], dtype=torch.int64)      # [C]
    if flat.numel() and (int(flat.min()) < 1 or int(flat.max()) > n_items):
        raise ValueError(f"{model}: a training session has an item outside 1..{n_items}")
    n_sessions = lengths.numel()
    sid = torch.repeat_interleave(torch.arange(n_sessions), lengths)              # [C]
    key = sid * (n_items + 1) + flat
    unique, inverse = torch.unique(key, return_inverse=True)                      # [P], [C]
    first = torch.full((unique.numel(),), flat.numel(), dtype=torch.int64)
    first = first.scatter_reduce(0, inverse, torch.arange(flat.numel()), "amin")
    unique = unique[torch.argsort(first)]         # session order, then first-click order
    session, item = unique // (n_items + 1), unique % (n_items + 1)
    offsets = torch.zeros(n_sessions + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.bincount(session, minlength=n_sessions), 0)
    return session, item, offsets


def cooccurrence(item: Tensor, offsets: Tensor, n_items: int) -> tuple[Tensor, Tensor, Tensor]:
    """Number of sessions in which items i != j both occur: sparse (row i, column j,
    count) triples sorted by (i, j), from the distinct pairs of ``session_item_pairs``."""
    n = offsets[1:] - offsets[:-1]                                                # [S]
    squares = n * n
    cumulative = torch.cumsum(squares, 0)
    keys: list[Tensor] = []
    counts: list[Tensor] = []
    begin = 0
    while begin < n.numel():
        limit = (int(cumulative[begin - 1]) if begin else 0) + PAIR_CHUNK
        end = max(begin + 1, int(torch.searchsorted(cumulative, limit, right=True)))
        size, start = n[begin:end], offsets[begin:end]
        rep = torch.repeat_interleave(torch.arange(end - begin), squares[begin:end])
        base = torch.repeat_interleave(torch.cumsum(squares[begin:end], 0)
                                       - squares[begin:end], squares[begin:end])
        within = torch.arange(rep.numel()) - base
        x = start[rep] + within // size[rep]
        y = start[rep] + within % size[rep]
        keep = x != y
        pair_key = item[x[keep]] * (n_items + 1) + item[y[keep]]
        unique, count = torch.unique(pair_key, return_counts=True)
        keys.append(unique)
        counts.append(count)
        begin = end
    if not keys:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty, empty
    merged, inverse = torch.unique(torch.cat(keys), return_inverse=True)
    total = torch.zeros(merged.numel(), dtype=torch.int64).scatter_add(0, inverse,
                                                                       torch.cat(counts))
    return merged // (n_items + 1), merged % (n_items + 1), total


def top_per_row(rows: Tensor, columns: Tensor, values: Tensor, n_rows: int,
                width: int) -> tuple[Tensor, Tensor]:
    """Dense ``[n_rows, width]`` (column index, value) of the ``width`` largest values
    per row of a sparse matrix given as triples; ties by lower column index; unused
    slots hold column 0 / value 0. Values must be > 0."""
    order = torch.argsort(columns, stable=True)
    order = order[torch.argsort(-values[order], stable=True)]
    order = order[torch.argsort(rows[order], stable=True)]
    r, c, v = rows[order], columns[order], values[order]
    rank = torch.arange(r.numel()) - torch.searchsorted(r, r)                     # in-row rank
    keep = rank < width
    index = torch.zeros((n_rows, width), dtype=torch.int64)
    value = torch.zeros((n_rows, width), dtype=torch.float64)
    index[r[keep], rank[keep]] = c[keep]
    value[r[keep], rank[keep]] = v[keep].to(torch.float64)
    return index, value
