"""A prepared dataset: the folder ``nextclick prepare`` writes and everything else reads.

Layout of ``DIR/``::

    train.parquet   user:int32 session:int64 item:int32 timestamp:float64 valid:bool
    test.parquet    user:int32 session:int64 item:int32 timestamp:float64 target:bool
    items.txt       raw item id of index i on line i (1-based; index 0 = padding, no line)
    users.txt       raw user id of index i on line i (1-based; index 0 = anonymous)
    stats.json      format, protocol, options, counts, fingerprint, created
    catalog.csv     optional: item_id,title,category for display (``training.data.catalog``)

Rows are ordered by user, then session start time, then click order within a session;
``session`` is a dense index unique across both files. ``valid`` marks training sessions
held out for early stopping (carved from train with the same protocol as the test set);
training fits on ``valid == False`` rows. ``target`` marks test events to be predicted
from the clicks before them in the same session (every click after the first under the
``time`` and ``last-session`` protocols; only the label under the benchmark convention).
A user's history for the HRNN protocol is their training sessions (all of them when
evaluating on test; the non-valid ones when validating).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

TRAIN_SCHEMA = {"user": pl.Int32, "session": pl.Int64, "item": pl.Int32,
                "timestamp": pl.Float64, "valid": pl.Boolean}
TEST_SCHEMA = {"user": pl.Int32, "session": pl.Int64, "item": pl.Int32,
               "timestamp": pl.Float64, "target": pl.Boolean}


def _read_vocab(path: Path) -> list[str]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def _write_vocab(path: Path, ids: list[str]) -> None:
    for raw in ids:
        if "\n" in raw or "\r" in raw:
            raise ValueError(f"id {raw!r} contains a line break")
    path.write_text("".join(f"{raw}\n" for raw in ids), encoding="utf-8")


def file_fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


@dataclass
class PreparedDataset:
    train: pl.DataFrame
    test: pl.DataFrame
    items: list[str]  # items[i - 1] is the raw id of item index i
    users: list[str]  # users[u - 1] is the raw id of user index u
    stats: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def fingerprint(self) -> str:
        return str(self.stats.get("fingerprint", ""))

    @classmethod
    def load(cls, path: str | Path) -> PreparedDataset:
        root = Path(path)
        if not (root / "train.parquet").exists():
            raise FileNotFoundError(
                f"{root} is not a prepared dataset (no train.parquet); run `nextclick prepare`")
        train = pl.read_parquet(root / "train.parquet").cast(TRAIN_SCHEMA)  # type: ignore[arg-type]
        test_path = root / "test.parquet"
        test = (pl.read_parquet(test_path).cast(TEST_SCHEMA)  # type: ignore[arg-type]
                if test_path.exists() else pl.DataFrame(schema=TEST_SCHEMA))
        stats_path = root / "stats.json"
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        return cls(train, test, _read_vocab(root / "items.txt"), _read_vocab(root / "users.txt"),
                   stats, root)

    def save(self, path: str | Path) -> Path:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.train.select(list(TRAIN_SCHEMA)).cast(TRAIN_SCHEMA).write_parquet(  # type: ignore[arg-type]
            root / "train.parquet")
        self.test.select(list(TEST_SCHEMA)).cast(TEST_SCHEMA).write_parquet(  # type: ignore[arg-type]
            root / "test.parquet")
        _write_vocab(root / "items.txt", self.items)
        _write_vocab(root / "users.txt", self.users)
        self.stats["fingerprint"] = file_fingerprint(
            [root / "train.parquet", root / "test.parquet", root / "items.txt"])
        (root / "stats.json").write_text(json.dumps(self.stats, indent=2, sort_keys=True) + "\n")
        self.path = root
        return root

    # ---- views used by training and evaluation --------------------------------------
    def sessions(self, frame: pl.DataFrame) -> list[tuple[int, int, list[int]]]:
        """(user, session, items) per session, in file order."""
        grouped = (frame.with_row_index("_order")
                   .group_by("session", maintain_order=True)
                   .agg(pl.col("user").first(), pl.col("item")))
        return [(int(u), int(s), list(items)) for s, u, items in grouped.iter_rows()]
