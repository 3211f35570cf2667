"""A synthetic click log where user history matters (``nextclick synth``).

This is the embedded default dataset (``make run``) and the data on which the project
shows HRNN's claim: a user-aware model beats a session-only one, most of all early in a
session, because a user's past sessions say what they will click next.

Generative story (deterministic for a seed, numpy ``Generator``):

* **Items** belong to topic clusters (``clusters``, sizes varying) and have a Zipf-like
  global popularity (``popularity_exponent``). Each item has a few likely successors in
  its cluster (Markov-like browsing).
* **Users** have sparse long-term interests: a handful of clusters with Dirichlet
  weights, a few *favourite* items in each (chosen uniformly, i.e. independently of
  global popularity), and a latent *taste* vector; items have a latent *style* vector,
  and a user picks inside a cluster with probability ~ pop(i) * exp(strength *
  <taste_u, style_i>). Interests and taste drift slowly: before each session, with
  probability ``drift``, one interest cluster is replaced and the taste moves a little.
* **Sessions** have one to three intents (clusters), drawn from the user's interests
  (``interest_focus``) or else from cluster popularity, and switch intent occasionally.
  A session *resumes* the previous one with probability ``p_resume`` (unfinished
  shopping): it reopens on one of the last items of the previous session and revisits
  that session's recent items with probability ``p_revisit`` per click. Otherwise an
  intent opens on a favourite (``favourite_first``) or a taste-weighted item of its
  cluster; later clicks follow a successor, revisit a favourite, or pick by taste. Only
  the user's history reveals the favourites, the taste, the interests and what a resumed
  session returns to.
* **Routine sessions** (off by default, ``p_routine``): a session is, with this
  probability, a routine visit where every click is one of the user's favourites of any
  interest cluster (re-consumption, as in the XING and video logs of the HRNN paper).
  ``docs/hrnn-synthetic.md`` measures what HRNN-Init makes of them.
* **Lengths and times**: session length 2 + geometric (mean ~6.5), clicks 10 s - 5 min
  apart, sessions hours to days apart (always more than 30 min, so idle-gap
  sessionization reproduces them), in seconds since the epoch.

Default size: 1,500 users x 2,500 items (50 clusters) x 8 sessions per user on average
-> ~79k events (``make run`` trains on it in minutes on 2 CPU cores). The defaults were
chosen so that, after ``prepare --protocol last-session``, a count-based predictor that
also scores the user's past clicks in the current cluster clearly beats one that only
knows the session's item transitions (``tests/training/data/test_synth.py`` checks that
user history is predictive); see the README for what the neural models make of it.

Output: CSV ``user_id,session_id,item_id,timestamp`` (read by ``nextclick prepare
--format csv`` with the default column mapping) and, unless ``--no-items``, an
``items.csv`` sidecar (``item_id,cluster,title,category,popularity``) with readable titles
such as "Jazz album #12" (category "Jazz album") for the demo page; ``nextclick prepare``
keeps it in the dataset folder and ``nextclick export`` in the bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

#: readable cluster themes for the demo titles (cycled with a suffix beyond this list)
THEMES = (
    "Jazz album", "Trail running shoe", "Sci-fi novel", "Espresso machine", "Board game",
    "Yoga mat", "Mystery novel", "Mechanical keyboard", "Indie film", "Hiking backpack",
    "Cookbook", "Vinyl record", "Road bike part", "Houseplant", "Wireless headphone",
    "Watercolor set", "Tea blend", "Camping tent", "Strategy video game", "Kids' picture book",
    "Classical recording", "Winter jacket", "Smart watch", "Poetry collection", "Skateboard",
    "Craft beer", "Chess set", "Documentary", "Perfume", "Desk lamp", "Travel guide",
    "Fishing rod", "Hip-hop album", "Running watch", "History book", "Ceramic mug",
    "Science kit", "Sneaker", "Fantasy novel", "Drone", "Guitar pedal", "Swimwear",
    "Anime series", "Kitchen knife", "Comic book", "Olive oil", "Puzzle", "Sunglasses",
    "Podcast mic", "Rain boot",
)


@dataclass
class SynthConfig:
    """Knobs of the generator; defaults give the ``make run`` dataset."""

    users: int = 1500
    items: int = 2500
    clusters: int = 50
    sessions_per_user: float = 8.0      # mean; at least 2 per user (last-session needs 2)
    mean_session_length: float = 6.5    # 2 + geometric
    max_session_length: int = 50
    popularity_exponent: float = 0.8    # Zipf exponent of global item popularity
    interests_per_user: int = 3         # clusters a user cares about
    favourites_per_cluster: int = 3     # per user and interest cluster
    successors_per_item: int = 5
    interest_focus: float = 0.85        # P(intent drawn from the user's interests)
    favourite_first: float = 0.3        # P(an intent opens on a favourite item)
    p_successor: float = 0.2            # next click: a successor of the current item
    p_favourite: float = 0.15           # ... a favourite of the user in this cluster
    taste_dim: int = 8                  # latent style dimensions of items and users
    taste_strength: float = 2.0         # how strongly a user's taste steers their choices
    p_resume: float = 0.35              # P(a session resumes the previous one: same topic,
    p_revisit: float = 0.5              # ... revisiting its items with this P per click)
    p_switch: float = 0.2               # P(switch to the next intent) per click
    p_routine: float = 0.0              # P(a session is a routine visit to the user's
                                        # favourites of all their interests)
    drift: float = 0.05                 # P(one interest cluster replaced) per session
    start_time: float = 1_700_000_000.0
    seed: int = 0

    def validate(self) -> None:
        if self.users < 1 or self.items < 10 or self.clusters < 1:
            raise ValueError("synth: need at least 1 user, 10 items and 1 cluster")
        if self.clusters * 2 > self.items:
            raise ValueError(f"synth: {self.clusters} clusters need at least "
                             f"{self.clusters * 2} items, got {self.items}")
        if self.interests_per_user > self.clusters:
            raise ValueError("synth: --interests cannot exceed --clusters")
        if self.sessions_per_user < 2 or self.mean_session_length < 2:
            raise ValueError("synth: sessions per user and mean session length must be >= 2")
        for name in ("interest_focus", "favourite_first", "p_successor", "p_favourite",
                     "p_switch", "drift", "p_resume", "p_revisit", "p_routine"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"synth: {name} must be a probability, got {value}")
        if self.p_successor + self.p_favourite > 1.0:
            raise ValueError("synth: p_successor + p_favourite must be <= 1")


@dataclass
class Catalog:
    """Items: cluster, popularity and successors; per-cluster popularity samplers."""

    cluster_of: np.ndarray          # (items,) cluster index
    popularity: np.ndarray          # (items,) global probability
    members: list[np.ndarray]       # cluster -> item indices
    member_weights: list[np.ndarray]  # cluster -> popularity within the cluster
    successors: np.ndarray          # (items, k) likely next items (same cluster)
    cluster_popularity: np.ndarray  # (clusters,) probability
    style: np.ndarray               # (items, taste_dim) latent style of each item


def build_catalog(cfg: SynthConfig, rng: np.random.Generator) -> Catalog:
    ranks = rng.permutation(cfg.items) + 1
    weight = 1.0 / ranks.astype(np.float64) ** cfg.popularity_exponent
    popularity = weight / weight.sum()
    # cluster sizes vary (Dirichlet), every cluster has at least 2 items
    shares = rng.dirichlet(np.full(cfg.clusters, 2.0))
    sizes = 2 + np.floor(shares * (cfg.items - 2 * cfg.clusters)).astype(int)
    sizes[: cfg.items - sizes.sum()] += 1
    cluster_of = np.repeat(np.arange(cfg.clusters), sizes)
    rng.shuffle(cluster_of)
    members = [np.flatnonzero(cluster_of == c) for c in range(cfg.clusters)]
    member_weights = [popularity[m] / popularity[m].sum() for m in members]
    successors = np.empty((cfg.items, cfg.successors_per_item), dtype=np.int64)
    for c, items in enumerate(members):
        for item in items:
            others = items[items != item]
            p = member_weights[c][items != item]
            take = rng.choice(others, size=cfg.successors_per_item,
                              replace=len(others) < cfg.successors_per_item, p=p / p.sum())
            successors[item] = take
    cluster_popularity = np.array([popularity[m].sum() for m in members])
    style = rng.standard_normal((cfg.items, cfg.taste_dim))
    return Catalog(cluster_of, popularity, members, member_weights, successors,
                   cluster_popularity / cluster_popularity.sum(), style)


def generate(cfg: SynthConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(events, items) frames; events have ``user_id, session_id, item_id, timestamp``
    sorted by user then time, items have ``item_id, cluster, title, popularity``."""
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    cat = build_catalog(cfg, rng)
    users: list[int] = []
    sessions: list[int] = []
    items: list[int] = []
    times: list[float] = []
    session_counter = 0
    extra_sessions = cfg.sessions_per_user - 2
    for user in range(cfg.users):
        interests = rng.choice(cfg.clusters, size=cfg.interests_per_user, replace=False,
                               p=cat.cluster_popularity)
        interest_weights = rng.dirichlet(np.full(cfg.interests_per_user, 0.7))
        favourites = {int(c): _favourites(cat, int(c), cfg, rng) for c in interests}
        taste = _unit(rng.standard_normal(cfg.taste_dim))
        previous: list[int] = []
        n_sessions = 2 + (rng.poisson(extra_sessions) if extra_sessions > 0 else 0)
        clock = cfg.start_time + rng.uniform(0, 30 * 86400)
        for _ in range(n_sessions):
            if rng.random() < cfg.drift:  # slow drift: one interest replaced
                slot = int(rng.integers(cfg.interests_per_user))
                new = int(rng.choice(cfg.clusters, p=cat.cluster_popularity))
                if new not in favourites:
                    favourites.pop(int(interests[slot]), None)
                    interests[slot] = new
                    favourites[new] = _favourites(cat, new, cfg, rng)
                taste = _unit(taste + 0.3 * rng.standard_normal(cfg.taste_dim))
            # no draw at p_routine = 0, so the default log stays what it was before the knob
            if cfg.p_routine > 0 and rng.random() < cfg.p_routine:
                clicks = _routine_session(cfg, rng, interests, interest_weights, favourites)
            else:
                resumed = previous if previous and rng.random() < cfg.p_resume else None
                clicks = _session(cfg, cat, rng, interests, interest_weights, favourites,
                                  taste, resumed)
            previous = clicks
            for item in clicks:
                users.append(user)
                sessions.append(session_counter)
                items.append(item)
                times.append(clock)
                clock += min(300.0, max(10.0, float(rng.lognormal(np.log(60.0), 0.8))))
            session_counter += 1
            # hours to days between sessions, always above the 30 min idle gap
            clock += float(3600.0 + rng.lognormal(np.log(86400.0), 1.0))
    width_u, width_i = len(str(cfg.users)), len(str(cfg.items))
    events = pl.DataFrame({
        "user_id": [f"u{u + 1:0{width_u}d}" for u in users],
        "session_id": [f"s{s + 1}" for s in sessions],
        "item_id": [f"i{i + 1:0{width_i}d}" for i in items],
        "timestamp": np.round(np.asarray(times), 3),
    })
    titles, categories = _titles(cat, cfg)
    catalog = pl.DataFrame({
        "item_id": [f"i{i + 1:0{width_i}d}" for i in range(cfg.items)],
        "cluster": cat.cluster_of.astype(np.int64),
        "title": titles,
        "category": categories,
        "popularity": np.round(cat.popularity, 8),
    })
    return events, catalog


def _favourites(cat: Catalog, cluster: int, cfg: SynthConfig,
                rng: np.random.Generator) -> np.ndarray:
    """A user's favourite items in a cluster: uniform, so they are not just the popular
    ones (history is informative beyond popularity)."""
    pool = cat.members[cluster]
    return rng.choice(pool, size=min(cfg.favourites_per_cluster, len(pool)), replace=False)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _tasteful(cfg: SynthConfig, cat: Catalog, rng: np.random.Generator, cluster: int,
              taste: np.ndarray) -> int:
    """An item of ``cluster`` chosen by popularity times the user's taste for its style:
    p(i) ~ pop(i) * exp(strength * <taste_u, style_i>)."""
    items = cat.members[cluster]
    logits = cfg.taste_strength * (cat.style[items] @ taste)
    weights = cat.member_weights[cluster] * np.exp(logits - logits.max())
    return int(rng.choice(items, p=weights / weights.sum()))


def _session_length(cfg: SynthConfig, rng: np.random.Generator) -> int:
    """2 + geometric clicks (mean ``mean_session_length``), capped."""
    p_geometric = 1.0 / (cfg.mean_session_length - 1.0)
    return min(cfg.max_session_length, 1 + int(rng.geometric(p_geometric)))


def _session(cfg: SynthConfig, cat: Catalog, rng: np.random.Generator, interests: np.ndarray,
             interest_weights: np.ndarray, favourites: dict[int, np.ndarray],
             taste: np.ndarray, resumed: list[int] | None = None) -> list[int]:
    length = _session_length(cfg, rng)
    n_intents = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    intents = [
        int(rng.choice(interests, p=interest_weights)) if rng.random() < cfg.interest_focus
        else int(rng.choice(len(cat.members), p=cat.cluster_popularity))
        for _ in range(n_intents)
    ]
    current_intent = 0
    clicks: list[int] = []
    # A resumed session (unfinished shopping) returns to the topic where the previous
    # session ended and revisits its items: only the user's history can tell.
    recent = resumed[-5:] if resumed else []
    if recent:
        intents[0] = int(cat.cluster_of[recent[-1]])
        item = int(rng.choice(recent[-3:]))
    else:
        item = _open_intent(cfg, cat, rng, intents[0], favourites, taste)
    clicks.append(item)
    while len(clicks) < length:
        cluster = intents[current_intent]
        if recent and current_intent == 0 and rng.random() < cfg.p_revisit:
            item = int(rng.choice(recent))
        elif current_intent + 1 < len(intents) and rng.random() < cfg.p_switch:
            current_intent += 1
            item = _open_intent(cfg, cat, rng, intents[current_intent], favourites, taste)
        else:
            draw = rng.random()
            if draw < cfg.p_successor:
                item = int(rng.choice(cat.successors[item], p=_successor_weights(cfg)))
            elif draw < cfg.p_successor + cfg.p_favourite and cluster in favourites:
                item = int(rng.choice(favourites[cluster]))
            else:
                item = _tasteful(cfg, cat, rng, cluster, taste)
        clicks.append(item)
    return clicks


def _routine_session(cfg: SynthConfig, rng: np.random.Generator, interests: np.ndarray,
                     interest_weights: np.ndarray,
                     favourites: dict[int, np.ndarray]) -> list[int]:
    """A routine visit: every click is one of the user's favourites, from any interest
    (weighted like the interests), so only the user's history tells which items come."""
    length = _session_length(cfg, rng)
    clusters = rng.choice(interests, size=length, p=interest_weights)
    return [int(rng.choice(favourites[int(c)])) for c in clusters]


def _open_intent(cfg: SynthConfig, cat: Catalog, rng: np.random.Generator, cluster: int,
                 favourites: dict[int, np.ndarray], taste: np.ndarray) -> int:
    if cluster in favourites and rng.random() < cfg.favourite_first:
        return int(rng.choice(favourites[cluster]))
    return _tasteful(cfg, cat, rng, cluster, taste)


_SUCCESSOR_WEIGHT_CACHE: dict[int, np.ndarray] = {}


def _successor_weights(cfg: SynthConfig) -> np.ndarray:
    """Decreasing weights over an item's successors (1/2, 1/3, ... normalised)."""
    k = cfg.successors_per_item
    if k not in _SUCCESSOR_WEIGHT_CACHE:
        w = 1.0 / np.arange(2, k + 2, dtype=np.float64)
        _SUCCESSOR_WEIGHT_CACHE[k] = w / w.sum()
    return _SUCCESSOR_WEIGHT_CACHE[k]


def _titles(cat: Catalog, cfg: SynthConfig) -> tuple[list[str], list[str]]:
    """(title, category) per item: the category is the cluster's theme."""
    counters = [0] * cfg.clusters
    titles: list[str] = []
    categories: list[str] = []
    for item in range(cfg.items):
        cluster = int(cat.cluster_of[item])
        counters[cluster] += 1
        theme = THEMES[cluster % len(THEMES)]
        if cluster >= len(THEMES):
            theme = f"{theme} ({cluster // len(THEMES) + 1})"
        titles.append(f"{theme} #{counters[cluster]}")
        categories.append(theme)
    return titles, categories


def write(events: pl.DataFrame, catalog: pl.DataFrame | None, out: Path) -> Path | None:
    """Write the events CSV to ``out`` and the catalog to ``<out stem>.items.csv`` next to
    it; returns the catalog path (or None)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    events.write_csv(out)
    if catalog is None:
        return None
    items_path = out.with_name(f"{out.stem}.items.csv")
    catalog.write_csv(items_path, quote_style="necessary")
    return items_path
