"""Online experiment statistics: from the counters of attributed clicks (a click that names
the ``recommendation_id`` of the list it was made in), a model version's hit rate (the
clicked item was in the list) and the MRR of the clicked position (0 when it was not), with
95% confidence intervals. The service (``GET /admin/experiments``) and ``nextclick replay``
report the same numbers through this one function."""

from __future__ import annotations

import math
from typing import Any


def summarize_online(values: dict[str, float]) -> dict[str, Any]:
    """Hit rate and MRR with 95% intervals from summed counters (lists, clicks, hits,
    rr = sum of 1/position over the hits, rr2 = sum of its squares)."""
    lists, clicks, hits = values.get("lists", 0.0), values.get("clicks", 0.0), values.get(
        "hits", 0.0)
    rr, rr2 = values.get("rr", 0.0), values.get("rr2", 0.0)
    z = 1.959964
    summary: dict[str, Any] = {"lists": int(lists), "clicks": int(clicks), "hits": int(hits),
                               "clicks_per_list": round(clicks / lists, 4) if lists else None}
    if clicks:
        rate = hits / clicks
        centre = (rate + z * z / (2 * clicks)) / (1 + z * z / clicks)
        spread = z * math.sqrt(rate * (1 - rate) / clicks + z * z / (4 * clicks * clicks)) \
            / (1 + z * z / clicks)
        mrr = rr / clicks
        variance = max(rr2 / clicks - mrr * mrr, 0.0)
        margin = z * math.sqrt(variance / clicks)
        summary.update({"hit_rate": round(rate, 5),
                        "hit_rate_ci95": [round(centre - spread, 5), round(centre + spread, 5)],
                        "mrr": round(mrr, 5),
                        "mrr_ci95": [round(max(mrr - margin, 0.0), 5), round(mrr + margin, 5)]})
    else:
        summary.update({"hit_rate": None, "hit_rate_ci95": None, "mrr": None,
                        "mrr_ci95": None})
    return summary
