"""Item catalogues: titles and categories for people to read, found next to a click log
and kept in the prepared dataset folder as ``catalog.csv`` (``item_id,title,category``) so
that ``nextclick export`` can put them in the bundle (``bundle.catalog``).

Where a catalogue comes from (``find_catalog``), unless ``--catalog FILE`` names one:

* ``nextclick synth``'s sidecar ``<log stem>.items.csv`` next to a ``--format csv`` log
  (``item_id,cluster,title,category,popularity``);
* MovieLens ``movies.csv`` next to ``ratings.csv`` (``movieId,title,genres``; genres
  ``Adventure|Comedy`` become the category ``Adventure, Comedy``);
* any CSV with an item id column (``item_id``, ``itemId``, ``movieId``, ``item``, ``id``)
  and a title column (``title``, ``name``), optionally a category column (``category``,
  ``genres``, ``genre``, ``cluster``).

Titles never reach training: the catalogue is not part of the dataset fingerprint.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

CATALOG_CSV = "catalog.csv"
_ID_COLUMNS = ("item_id", "itemId", "movieId", "item", "id")
_TITLE_COLUMNS = ("title", "name")
_CATEGORY_COLUMNS = ("category", "genres", "genre", "cluster")


def find_catalog(input_path: Path, fmt: str) -> Path | None:
    """The catalogue that sits next to a click log of format ``fmt``, or None."""
    candidates = [input_path.with_name(f"{input_path.stem}.items.csv")]
    if fmt == "movielens":
        candidates.insert(0, input_path.with_name("movies.csv"))
    return next((path for path in candidates if path.is_file()), None)


def _pick(names: list[str], wanted: tuple[str, ...]) -> str | None:
    return next((name for name in wanted if name in names), None)


def read_catalog_file(path: Path) -> pl.DataFrame:
    """``item_id, title, category`` (Utf8; category may be null) from a catalogue CSV.
    Raises ``ValueError`` naming the file when it lacks an id or a title column."""
    from training.data.readers import check_text_file, sniff_separator

    check_text_file(path)
    sep = sniff_separator(path)
    try:
        frame = pl.read_csv(path, separator=sep, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"{path}: cannot read the catalogue: "
                         f"{str(exc).splitlines()[0]}") from None
    names = frame.columns
    item, title = _pick(names, _ID_COLUMNS), _pick(names, _TITLE_COLUMNS)
    if item is None or title is None:
        raise ValueError(f"{path} line 1: a catalogue needs an item id column "
                         f"({', '.join(_ID_COLUMNS)}) and a title column "
                         f"({', '.join(_TITLE_COLUMNS)}); header: {', '.join(names)}")
    category = _pick(names, _CATEGORY_COLUMNS)
    category_expr = (pl.col(category).str.strip_chars().str.replace_all("|", ", ",
                                                                         literal=True)
                     if category else pl.lit(None, dtype=pl.Utf8))
    if category == "cluster":
        category_expr = pl.lit("cluster ") + pl.col("cluster").str.strip_chars()
    out = frame.select(pl.col(item).str.strip_chars().alias("item_id"),
                       pl.col(title).str.strip_chars().alias("title"),
                       category_expr.alias("category"))
    out = out.with_columns(
        pl.when(pl.col("category").is_in(["", "(no genres listed)"]))
        .then(None).otherwise(pl.col("category")).alias("category"))
    return (out.filter(pl.col("item_id").is_not_null() & (pl.col("item_id") != "")
                       & pl.col("title").is_not_null() & (pl.col("title") != ""))
            .unique("item_id", keep="first", maintain_order=True))


def restrict_catalog(catalog: pl.DataFrame, items: list[str]) -> pl.DataFrame:
    """The catalogue rows of the dataset's items (filters may have dropped many)."""
    return catalog.filter(pl.col("item_id").is_in(items))


def save_catalog(catalog: pl.DataFrame | None, folder: Path) -> None:
    """Write ``folder/catalog.csv``, or remove a stale one when there is no catalogue."""
    path = Path(folder) / CATALOG_CSV
    if catalog is None or catalog.is_empty():
        path.unlink(missing_ok=True)
        return
    catalog.write_csv(path, quote_style="necessary")


def load_catalog(folder: Path) -> pl.DataFrame | None:
    """The dataset folder's ``catalog.csv``, or None."""
    path = Path(folder) / CATALOG_CSV
    if not path.is_file():
        return None
    return pl.read_csv(path, infer_schema=False)
