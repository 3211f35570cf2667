"""Readers: raw click-log formats -> canonical events (DESIGN §2).

Every reader returns a polars DataFrame in file order with the canonical columns

    user_id: Utf8 (nullable)   session_id: Utf8 (nullable)   item_id: Utf8
    timestamp: Float64 (seconds since the epoch)             event_type: Utf8

plus, for the benchmark ``prefix<TAB>label`` test files only, ``target: Boolean`` (the
label click of each line). A null ``session_id`` means "sessionize me by idle gap"
(``training.data.sessionize``); such rows need a ``user_id``.

Large inputs stream: CSV-like files are scanned lazily with every field read as text and
parsed by expressions inside the same streaming query, so a YOOCHOOSE-size file
(33M rows) only ever materialises the final typed columns. Reading every field as text
first is what lets a malformed value be reported with its line number instead of a
polars cast traceback: parsing is non-strict, and a non-null raw value that parses to
null is located afterwards by its row index.

Formats (``FORMATS``): ``csv`` (with a column mapping), ``yoochoose`` / ``session-rec``,
``diginetica``, ``retailrocket``, ``taobao``, ``sessions`` (benchmark convention),
``movielens`` and ``otto``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

_log = logging.getLogger(__name__)

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Utf8(), "session_id": pl.Utf8(), "item_id": pl.Utf8(),
    "timestamp": pl.Float64(), "event_type": pl.Utf8(),
}
FORMATS = ("csv", "yoochoose", "session-rec", "diginetica", "retailrocket", "taobao",
           "sessions", "movielens", "otto", "events")
#: canonical role -> the default raw column name for ``--format csv``
CSV_DEFAULT_COLUMNS = {"item": "item_id", "user": "user_id", "time": "timestamp",
                       "session": "session_id", "type": "event_type"}
TIME_UNITS = ("s", "ms", "iso")
#: files at least this large get a progress spinner while they stream
PROGRESS_MIN_BYTES = 64 << 20
#: a "seconds" value above this is really milliseconds (1e11 s is the year 5138)
_MS_THRESHOLD = 1e11
#: synthetic clock for formats without timestamps (the benchmark convention)
SYNTHETIC_EPOCH = 1_000_000_000.0


@dataclass
class ReaderOptions:
    """Options shared by the readers; each format uses the ones that apply to it.

    ``columns`` maps canonical roles (item, user, time, session, type) to raw column
    names (``csv`` only). ``event_types`` keeps only those raw event types (formats
    with an event column; ``None`` = the format's default). ``time_offset`` shifts the
    synthetic timestamps of the ``sessions`` format, so a test file can start after
    the training file ends.
    """

    columns: dict[str, str] = field(default_factory=dict)
    sep: str | None = None
    time_unit: str | None = None
    event_types: list[str] | None = None
    time_offset: float = 0.0
    progress: bool = True


# ---- small helpers -----------------------------------------------------------------
def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise FileNotFoundError(f"{path}: not readable")


#: leading bytes of the compressed and binary formats people hand to a text reader
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed: decompress it first, e.g. gunzip"),
    (b"PK\x03\x04", "a zip archive: extract the file first"),
    (b"BZh", "bzip2-compressed: decompress it first, e.g. bunzip2"),
    (b"\xfd7zXZ\x00", "xz-compressed: decompress it first, e.g. unxz"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed: decompress it first, e.g. unzstd"),
    (b"PAR1", "a Parquet file: write it as CSV first"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive: extract the file first"),
)


def check_text_file(path: Path) -> None:
    """Raise ``ValueError("PATH: not a text file (why)")`` unless ``path`` is UTF-8 text
    (a UTF-8 byte-order mark is fine): compressed files, archives, binary data and other
    encodings are named instead of being parsed into garbage ids. One streaming pass; the
    incremental decoder never splits a character across read blocks."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    lines = 1
    with path.open("rb") as handle:
        head = handle.read(8)
        for magic, what in _MAGIC:
            if head.startswith(magic):
                raise ValueError(f"{path}: not a text file ({what})")
        handle.seek(0)
        for block in iter(lambda: handle.read(1 << 20), b""):
            nul = block.find(b"\x00")
            if nul >= 0:
                line = lines + block.count(b"\n", 0, nul)
                raise ValueError(f"{path}: not a text file (binary data: a NUL byte at "
                                 f"line {line}, byte {offset + nul})")
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                data = exc.object  # the decoder's carried-over bytes + this block
                line = lines + data.count(b"\n", 0, exc.start)
                raise ValueError(
                    f"{path}: not a text file (not UTF-8: byte 0x{data[exc.start]:02x} at "
                    f"line {line}; convert it, e.g. iconv -f latin1 -t utf-8)") from None
            offset += len(block)
            lines += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a text file (not UTF-8: the file ends inside a "
                             "character)") from None


def _head_lines(path: Path, n: int = 5) -> list[str]:
    """The first ``n`` non-empty lines (decoded leniently: only used for sniffing)."""
    lines: list[str] = []
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as handle:
        for line in handle:
            stripped = line.rstrip("\r\n")
            if stripped:
                lines.append(stripped)
            if len(lines) >= n:
                break
    return lines


def sniff_separator(path: Path) -> str:
    """Comma, tab or semicolon: whichever the first lines contain most consistently."""
    lines = _head_lines(path, 5)
    if not lines:
        raise ValueError(f"{path}: the file is empty")
    best, best_count = ",", 0
    for sep in ("\t", ";", ","):
        counts = [line.count(sep) for line in lines]
        if min(counts) > best_count:
            best, best_count = sep, min(counts)
    return best


@contextmanager
def _spinner(path: Path, enabled: bool) -> Iterator[None]:
    """A tqdm spinner (elapsed time) while polars streams a big file: polars gives no
    row progress for a streaming collect, but a silent minute looks like a hang."""
    if not enabled or path.stat().st_size < PROGRESS_MIN_BYTES:
        yield
        return
    from tqdm.auto import tqdm

    size_mb = path.stat().st_size / (1 << 20)
    bar = tqdm(total=None, desc=f"reading {path.name} ({size_mb:,.0f} MiB)", unit="tick",
               bar_format="{desc}: {elapsed}")
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.5):
            bar.update(1)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()


def _column_count_error(path: Path, sep: str, expected: int, has_header: bool,
                        upto_row: int | None = None) -> str | None:
    """Scan the file with the csv module for the first record whose field count is not
    ``expected``; the message names the file and 1-based line. Only run after polars has
    failed (or found a null where a value is required), so its cost is paid on errors."""
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.reader(handle, delimiter=sep)
        record = -1 if has_header else 0
        for fields in reader:
            line = reader.line_num
            if not fields or fields == [""]:
                continue
            if record >= 0 and len(fields) != expected:
                return (f"{path.name} line {line}: expected {expected} columns, "
                        f"got {len(fields)}")
            record += 1
            if upto_row is not None and record > upto_row + 1:
                break
    return None


def _line_of_row(path: Path, row: int, has_header: bool) -> int:
    """1-based physical line of data row ``row`` (0-based), skipping blank lines as the
    CSV parser does."""
    target = row + (1 if has_header else 0)
    seen = -1
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                seen += 1
                if seen == target:
                    return number
    return -1


def _to_seconds(expr: pl.Expr, unit: str) -> pl.Expr:
    """Raw text -> Float64 seconds; unparseable values become null (checked later)."""
    if unit == "s":
        return expr.str.strip_chars().cast(pl.Float64, strict=False)
    if unit == "ms":
        return expr.str.strip_chars().cast(pl.Float64, strict=False) / 1000.0
    if unit == "iso":
        parsed = expr.str.strip_chars().str.to_datetime(strict=False, time_unit="us",
                                                       time_zone="UTC")
        return parsed.dt.epoch("us").cast(pl.Float64) / 1e6
    raise ValueError(f"unknown time unit {unit!r}; expected one of {', '.join(TIME_UNITS)}")


def _sniff_time_unit(values: list[str], path: Path, column: str) -> str:
    """Seconds, milliseconds or ISO text, decided from the first values of a column."""
    numbers: list[float] = []
    for value in values:
        if value is None or not value.strip():
            continue
        try:
            numbers.append(float(value))
        except ValueError:
            if re.match(r"^\s*\d{4}-\d{2}-\d{2}", value):
                return "iso"
            raise ValueError(
                f"{path.name}: cannot tell the time unit of column {column!r} from value "
                f"{value!r}; pass --time-unit s|ms|iso") from None
    if not numbers:
        raise ValueError(f"{path.name}: column {column!r} has no values to read times from")
    return "ms" if max(numbers) > _MS_THRESHOLD else "s"


@dataclass
class _Delimited:
    """How to parse one delimited file into canonical columns."""

    path: Path
    sep: str
    has_header: bool
    names: list[str]            # raw column names (the header, or given for no header)
    item: str
    time: str | None
    time_unit: str              # s, ms, iso, or "digi" (diginetica eventdate + timeframe)
    user: str | None = None
    session: str | None = None
    event: str | None = None
    event_types: list[str] | None = None
    null_users: tuple[str, ...] = ("",)
    extra_time: str | None = None  # diginetica: the eventdate column
    default_event: str = "click"
    progress: bool = True
    #: further raw columns that must not be empty (fixed-schema formats: the session or
    #: user column; an empty one there is usually a short, ragged record)
    required: tuple[str, ...] = ()


def _scan_delimited(spec: _Delimited) -> pl.DataFrame:
    """Stream ``spec.path`` into canonical events, reporting malformed input by line."""
    path = spec.path
    expected = len(spec.names)
    scan = pl.scan_csv(
        path, separator=spec.sep, has_header=spec.has_header,
        new_columns=None if spec.has_header else spec.names,
        schema={name: pl.Utf8 for name in spec.names}, quote_char='"',
        skip_rows_after_header=0, ignore_errors=False, truncate_ragged_lines=False,
        encoding="utf8-lossy",
    ).with_row_index("_row")

    def text(name: str | None) -> pl.Expr:
        return pl.col(name).str.strip_chars() if name else pl.lit(None, dtype=pl.Utf8)

    if spec.time_unit == "digi":
        assert spec.time is not None and spec.extra_time is not None
        day = (pl.col(spec.extra_time).str.strip_chars()
               .str.to_date("%Y-%m-%d", strict=False))
        timestamp = (day.cast(pl.Datetime("ms")).dt.epoch("ms").cast(pl.Float64)
                     + pl.col(spec.time).str.strip_chars().cast(pl.Float64, strict=False)
                     ) / 1000.0
        time_sources = [spec.time, spec.extra_time]
    elif spec.time is not None:
        timestamp = _to_seconds(pl.col(spec.time), spec.time_unit)
        time_sources = [spec.time]
    else:
        timestamp = pl.col("_row").cast(pl.Float64)
        time_sources = []
    user = text(spec.user)
    if spec.user and spec.null_users:
        user = pl.when(user.is_in(list(spec.null_users))).then(None).otherwise(user)
    event = text(spec.event) if spec.event else pl.lit(spec.default_event, dtype=pl.Utf8)
    session = text(spec.session)
    session = pl.when(session == "").then(None).otherwise(session)
    item = text(spec.item)
    raw_time_missing = pl.any_horizontal(
        [pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in time_sources]
    ) if time_sources else pl.lit(False)
    required_empty = pl.any_horizontal(
        [pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in spec.required]
    ) if spec.required else pl.lit(False)
    frame = scan.select(
        "_row",
        user.alias("user_id"), session.alias("session_id"), item.alias("item_id"),
        timestamp.alias("timestamp"), event.alias("event_type"),
        # problems, located after the collect (cheap: two boolean columns)
        (item.is_null() | (item == "") | raw_time_missing | required_empty).alias("_missing"),
        (timestamp.is_null() & ~raw_time_missing).alias("_badtime"),
    )
    if spec.event_types is not None:
        frame = frame.filter(pl.col("event_type").is_in(spec.event_types))
    try:
        with _spinner(path, spec.progress):
            out = frame.collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        located = _column_count_error(path, spec.sep, expected, spec.has_header)
        if located:
            raise ValueError(located) from None
        raise ValueError(f"{path.name}: cannot parse as {spec.sep!r}-separated text with "
                         f"columns {', '.join(spec.names)}: {str(exc).splitlines()[0]}"
                         ) from None
    bad = out.filter(pl.col("_missing") | pl.col("_badtime"))
    if bad.height and _is_cut_last_row(path, bad, spec, expected):
        # a file cut at a byte limit (common for "head" samples) ends mid-record:
        # drop that one record with a warning instead of refusing the whole file
        last_row = int(bad["_row"][-1])
        _log.warning("%s: the last line is incomplete (no final newline, fewer than %d "
                     "columns); skipped it", path.name, expected)
        out = out.filter(pl.col("_row") != last_row)
        bad = bad.filter(pl.col("_row") != last_row)
    if bad.height:
        first = bad.row(0, named=True)
        row = int(first["_row"])
        located = _column_count_error(path, spec.sep, expected, spec.has_header, row)
        if located:
            raise ValueError(located)
        line = _line_of_row(path, row, spec.has_header)
        if first["_missing"]:
            needed = ", ".join([spec.item, *time_sources, *spec.required])
            raise ValueError(f"{path.name} line {line}: missing value (required: {needed})")
        raw = _raw_field(path, spec, line)
        unit = "eventdate/timeframe" if spec.time_unit == "digi" else spec.time_unit
        raise ValueError(f"{path.name} line {line}: cannot read time {raw!r} "
                         f"(column {spec.time!r}, unit {unit})")
    return out.select(list(EVENT_SCHEMA)).cast(EVENT_SCHEMA)  # type: ignore[arg-type]


def _is_cut_last_row(path: Path, bad: pl.DataFrame, spec: _Delimited, expected: int) -> bool:
    """True when the only problem row is the file's last line, which has no final
    newline and too few fields."""
    if bad.height != 1:
        return False
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 65536))
        tail = handle.read()
    if tail.endswith(b"\n"):
        return False
    last_line = tail.rsplit(b"\n", 1)[-1].decode("utf-8", errors="replace")
    fields = next(csv.reader([last_line], delimiter=spec.sep), [])
    return len(fields) < expected and _line_of_row(path, int(bad["_row"][0]),
                                                   spec.has_header) == _count_lines(path)


def _count_lines(path: Path) -> int:
    """Physical lines, counting a final line without a newline."""
    count = 0
    last = b"\n"
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (0 if last == b"\n" else 1)


def _raw_field(path: Path, spec: _Delimited, line: int) -> str:
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as handle:
        for number, text in enumerate(handle, start=1):
            if number == line:
                fields = next(csv.reader(io.StringIO(text), delimiter=spec.sep), [])
                names = spec.names
                pick = [spec.extra_time, spec.time] if spec.time_unit == "digi" else [spec.time]
                values = [fields[names.index(c)] for c in pick
                          if c in names and names.index(c) < len(fields)]
                return " ".join(values)
    return ""


def _header(path: Path, sep: str) -> list[str]:
    lines = _head_lines(path, 1)
    if not lines:
        raise ValueError(f"{path}: the file is empty")
    return [name.strip().strip('"') for name in next(csv.reader([lines[0]], delimiter=sep))]


# ---- formats -----------------------------------------------------------------------
def read_csv_events(path: Path, options: ReaderOptions) -> pl.DataFrame:
    """Plain CSV/TSV with a header and a role -> column mapping (``--columns``)."""
    sep = options.sep or sniff_separator(path)
    names = _header(path, sep)
    unknown = set(options.columns) - set(CSV_DEFAULT_COLUMNS)
    if unknown:
        raise ValueError(f"unknown column role(s) {', '.join(sorted(unknown))}; "
                         f"expected {', '.join(CSV_DEFAULT_COLUMNS)}")
    mapping: dict[str, str | None] = {}
    for role, default in CSV_DEFAULT_COLUMNS.items():
        if role in options.columns:
            column = options.columns[role]
            if column not in names:
                raise ValueError(f"{path.name} line 1: no column {column!r} for {role} "
                                 f"(header: {', '.join(names)})")
            mapping[role] = column
        else:
            mapping[role] = default if default in names else None
    if mapping["item"] is None:
        raise ValueError(f"{path.name} line 1: no item column (looked for 'item_id'; "
                         f"header: {', '.join(names)}); pass --columns item=NAME")
    if mapping["time"] is None:
        raise ValueError(f"{path.name} line 1: no time column (looked for 'timestamp'; "
                         f"header: {', '.join(names)}); pass --columns time=NAME")
    if mapping["user"] is None and mapping["session"] is None:
        raise ValueError(f"{path.name} line 1: need a user or a session column "
                         f"(header: {', '.join(names)}); pass --columns user=NAME")
    unit = options.time_unit
    if unit is None:
        head = pl.read_csv(path, separator=sep, n_rows=1000, infer_schema=False,
                           columns=[mapping["time"]], encoding="utf8-lossy",
                           truncate_ragged_lines=True)
        unit = _sniff_time_unit(head[mapping["time"]].to_list(), path, str(mapping["time"]))
    return _scan_delimited(_Delimited(
        path=path, sep=sep, has_header=True, names=names, item=str(mapping["item"]),
        time=mapping["time"], time_unit=unit, user=mapping["user"],
        session=mapping["session"], event=mapping["type"], event_types=options.event_types,
        progress=options.progress))


def read_yoochoose(path: Path, options: ReaderOptions) -> pl.DataFrame:
    """Either the session-rec TSV (``SessionId\\tItemId\\tTime`` with a header, seconds)
    or the original ``yoochoose-clicks.dat`` (no header: session, ISO time, item,
    category); decided by the first line."""
    first = _head_lines(path, 1)
    if not first:
        raise ValueError(f"{path}: the file is empty")
    line = first[0]
    if "\t" in line or line.startswith("SessionId"):
        sep = "\t" if "\t" in line else ","
        names = _header(path, sep)
        needed = ("SessionId", "ItemId", "Time")
        missing = [n for n in needed if n not in names]
        if missing:
            raise ValueError(f"{path.name} line 1: expected a SessionId, ItemId, Time header "
                             f"(session-rec TSV), got {', '.join(names)}")
        return _scan_delimited(_Delimited(
            path=path, sep=sep, has_header=True, names=names, item="ItemId", time="Time",
            time_unit=options.time_unit or "s", session="SessionId",
            user="UserId" if "UserId" in names else None, progress=options.progress,
            required=("SessionId",)))
    fields = line.split(",")
    if len(fields) >= 3 and re.match(r"^\d{4}-\d{2}-\d{2}T", fields[1]):
        names = ["session", "time", "item", "category"][: max(4, len(fields))]
        return _scan_delimited(_Delimited(
            path=path, sep=",", has_header=False, names=names, item="item", time="time",
            time_unit="iso", session="session", progress=options.progress,
            required=("session",)))
    raise ValueError(f"{path.name} line 1: not a YOOCHOOSE file: expected a "
                     "'SessionId<TAB>ItemId<TAB>Time' header or 'session,ISO time,item,"
                     f"category' rows, got {line[:80]!r}")


def read_diginetica(path: Path, options: ReaderOptions) -> pl.DataFrame:
    """``session_id;user_id;item_id;timeframe;eventdate`` (the CIKM Cup 2016
    ``train-item-views.csv`` and SR-GNN's sample). Time = eventdate (UTC day) +
    timeframe (ms), which orders clicks within a session as NARM/SR-GNN do."""
    sep = options.sep or sniff_separator(path)
    names = _header(path, sep)
    needed = ["session_id", "user_id", "item_id", "timeframe", "eventdate"]
    missing = [n for n in needed if n not in names]
    if missing:
        raise ValueError(f"{path.name} line 1: expected DIGINETICA columns "
                         f"{';'.join(needed)}, missing {', '.join(missing)}")
    return _scan_delimited(_Delimited(
        path=path, sep=sep, has_header=True, names=names, item="item_id", time="timeframe",
        extra_time="eventdate", time_unit="digi", user="user_id", session="session_id",
        null_users=("", "NA"), progress=options.progress, required=("session_id",)))


def read_retailrocket(path: Path, options: ReaderOptions) -> pl.DataFrame:
    """The HGRU4Rec user-sessionized CSV (``timestamp,visitorid,itemid,session_id``, ms)
    or the original Kaggle ``events.csv`` (``timestamp,visitorid,event,itemid,
    transactionid``; no sessions: sessionized by idle gap later; keeps ``view`` events
    unless ``event_types`` says otherwise)."""
    names = _header(path, ",")
    if {"timestamp", "visitorid", "itemid", "session_id"} <= set(names):
        return _scan_delimited(_Delimited(
            path=path, sep=",", has_header=True, names=names, item="itemid",
            time="timestamp", time_unit=options.time_unit or "ms", user="visitorid",
            session="session_id", progress=options.progress,
            required=("visitorid", "session_id")))
    if {"timestamp", "visitorid", "event", "itemid"} <= set(names):
        return _scan_delimited(_Delimited(
            path=path, sep=",", has_header=True, names=names, item="itemid",
            time="timestamp", time_unit=options.time_unit or "ms", user="visitorid",
            event="event", event_types=options.event_types or ["view"],
            progress=options.progress, required=("visitorid", "event")))
    raise ValueError(f"{path.name} line 1: not a Retailrocket file: expected header "
                     "'timestamp,visitorid,itemid,session_id' or 'timestamp,visitorid,event,"
                     f"itemid,transactionid', got {','.join(names)}")


def read_taobao(path: Path, options: ReaderOptions) -> pl.DataFrame:
    """Taobao ``UserBehavior.csv``: no header; user, item, category, behavior, seconds.
    Keeps ``pv`` (page views) unless ``event_types`` says otherwise."""
    first = _head_lines(path, 1)
    if not first:
        raise ValueError(f"{path}: the file is empty")
    has_header = not first[0].split(",")[0].strip().isdigit()
    names = ["user", "item", "category", "behavior", "timestamp"]
    if has_header and len(first[0].split(",")) != 5:
        raise ValueError(f"{path.name} line 1: expected 5 columns (user,item,category,"
                         f"behavior,timestamp), got {first[0][:80]!r}")
    return _scan_delimited(_Delimited(
        path=path, sep=",", has_header=has_header, names=names, item="item",
        time="timestamp", time_unit=options.time_unit or "s", user="user", event="behavior",
        event_types=options.event_types or ["pv"], progress=options.progress,
        required=("user", "behavior")))


def read_movielens(path: Path, options: ReaderOptions) -> pl.DataFrame:
    """MovieLens ``ratings.csv`` (userId,movieId,rating,timestamp); a rating is one event
    (``event_type`` = "rating"); sessions come from the idle gap."""
    names = _header(path, ",")
    if not {"userId", "movieId", "timestamp"} <= set(names):
        raise ValueError(f"{path.name} line 1: expected header userId,movieId,rating,"
                         f"timestamp, got {','.join(names)}")
    return _scan_delimited(_Delimited(
        path=path, sep=",", has_header=True, names=names, item="movieId", time="timestamp",
        time_unit=options.time_unit or "s", user="userId", default_event="rating",
        progress=options.progress, required=("userId",)))


def read_otto(path: Path, options: ReaderOptions) -> pl.DataFrame:
    """OTTO JSON lines ``{"session": int, "events": [{"aid", "ts" (ms), "type"}]}``.
    Keeps ``clicks`` unless ``event_types`` says otherwise. Parsed line by line so a bad
    line is reported by number (the public files are GBs: use the streaming readers of
    the OTTO repository to cut a sample first)."""
    keep = set(options.event_types or ["clicks"])
    users: list[str | None] = []
    sessions: list[str] = []
    items: list[str] = []
    times: list[float] = []
    types: list[str] = []
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                session = str(record["session"])
                events = record["events"]
                for event in events:
                    if event["type"] in keep:
                        users.append(None)
                        sessions.append(session)
                        items.append(str(event["aid"]))
                        times.append(float(event["ts"]) / 1000.0)
                        types.append(str(event["type"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path.name} line {number}: not an OTTO session record "
                                 f"({type(exc).__name__}: {exc})") from None
    return pl.DataFrame({"user_id": users, "session_id": sessions, "item_id": items,
                         "timestamp": times, "event_type": types}, schema=EVENT_SCHEMA)


def read_event_log(path: Path, options: ReaderOptions) -> pl.DataFrame:
    """The service's exported event log (``nextclick events export``): a folder of
    ``events-*.parquet`` files (or one such file), already canonical. Entries exported
    twice (``--since`` overlapping an earlier export) are kept once."""
    if path.is_dir():
        files = sorted(path.glob("events-*.parquet"))
        if not files:
            raise ValueError(f"{path}: no events-*.parquet files (export the log with "
                             "`nextclick events export --out DIR` first)")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    try:
        frame = pl.concat([pl.read_parquet(file) for file in files], how="diagonal_relaxed")
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ValueError(f"{path}: not an exported event log ({exc})") from None
    missing = [column for column in ("session_id", "item_id", "timestamp")
               if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not an exported event log (no {', '.join(missing)})")
    if "log_id" in frame.columns:
        frame = frame.unique(subset="log_id", keep="first", maintain_order=True)
    if options.event_types:
        frame = frame.filter(pl.col("event_type").is_in(options.event_types))
    for column in EVENT_SCHEMA:
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=EVENT_SCHEMA[column]).alias(column))
    return (frame.sort("timestamp", maintain_order=True)
            .select(list(EVENT_SCHEMA)).cast(EVENT_SCHEMA))  # type: ignore[arg-type]


def _read_text_lines(path: Path) -> pl.DataFrame:
    """One Utf8 column ``line`` with the 1-based line number, via polars (fast on big
    files): a separator that never occurs in text makes each line one field."""
    frame = pl.read_csv(path, has_header=False, separator="\x1f", quote_char=None,
                        new_columns=["line"], schema={"line": pl.Utf8},
                        encoding="utf8-lossy")
    return frame.with_row_index("number", offset=1)


def read_sessions(path: Path, options: ReaderOptions) -> pl.DataFrame:
    """Benchmark training file: one session per line, space-separated item ids in click
    order, no timestamps. Session ``s<line>``, anonymous; the clock is synthetic (one
    second per click, an hour between sessions) so that time order = file order."""
    lines = _read_text_lines(path)
    return _sessions_from_lines(path, lines, prefix="s", label=False,
                                offset=options.time_offset)


def read_prefix_label(path: Path, options: ReaderOptions) -> pl.DataFrame:
    """Benchmark test file: ``prefix<TAB>label`` per line. Each line is its own test
    session (``t<line>``): the prefix clicks then the label, and only the label has
    ``target`` = True."""
    lines = _read_text_lines(path)
    return _sessions_from_lines(path, lines, prefix="t", label=True,
                                offset=options.time_offset)


def _sessions_from_lines(path: Path, lines: pl.DataFrame, *, prefix: str, label: bool,
                         offset: float) -> pl.DataFrame:
    lines = lines.filter(pl.col("line").is_not_null()
                         & (pl.col("line").str.strip_chars() != ""))
    if lines.is_empty():
        raise ValueError(f"{path}: the file has no sessions")
    if label:
        parts = lines.with_columns(pl.col("line").str.split("\t").alias("parts"))
        wrong = parts.filter(pl.col("parts").list.len() != 2)
        if wrong.height:
            number, count = wrong.select("number", pl.col("parts").list.len()).row(0)
            raise ValueError(f"{path.name} line {number}: expected 'prefix<TAB>label' "
                             f"(2 tab-separated fields), got {count}")
        tokens = parts.select(
            "number",
            pl.concat_list(pl.col("parts").list.get(0).str.strip_chars().str.split(" "),
                           pl.col("parts").list.get(1).str.strip_chars().str.split(" "))
            .alias("items"),
            pl.col("parts").list.get(1).str.strip_chars().str.split(" ").list.len()
            .alias("label_len"))
        bad_label = tokens.filter(pl.col("label_len") != 1)
        if bad_label.height:
            raise ValueError(f"{path.name} line {bad_label['number'][0]}: the label must be "
                             "exactly one item id")
    else:
        tokens = lines.select("number", pl.col("line").str.strip_chars().str.split(" ")
                              .alias("items"), pl.lit(0).alias("label_len"))
    events = (tokens.with_row_index("session_order")
              .explode("items")
              .with_columns(pl.int_range(pl.len()).over("number").alias("position"),
                            pl.len().over("number").alias("length")))
    empty = events.filter(pl.col("items").is_null() | (pl.col("items") == ""))
    if empty.height:
        raise ValueError(f"{path.name} line {empty['number'][0]}: empty item id (two spaces "
                         "in a row, or an empty prefix)")
    # one second per click and an hour between sessions (> any idle gap), so re-running
    # the sessionizer would not merge sessions and time order is file order
    clock = (pl.lit(SYNTHETIC_EPOCH + offset)
             + pl.col("session_order").cast(pl.Float64) * 3600.0
             + pl.col("position").cast(pl.Float64))
    out = events.select(
        pl.lit(None, dtype=pl.Utf8).alias("user_id"),
        (pl.lit(prefix) + pl.col("number").cast(pl.Utf8)).alias("session_id"),
        pl.col("items").alias("item_id"),
        clock.alias("timestamp"),
        pl.lit("click").alias("event_type"),
        *([(pl.col("position") == pl.col("length") - 1).alias("target")] if label else []),
    )
    return out


_READERS: dict[str, Any] = {
    "csv": read_csv_events,
    "yoochoose": read_yoochoose,
    "session-rec": read_yoochoose,
    "diginetica": read_diginetica,
    "retailrocket": read_retailrocket,
    "taobao": read_taobao,
    "sessions": read_sessions,
    "movielens": read_movielens,
    "otto": read_otto,
}


def read_events(path: str | Path, fmt: str, options: ReaderOptions | None = None, *,
                test: bool = False) -> pl.DataFrame:
    """Read one file of format ``fmt`` into canonical events (file order).

    ``test=True`` reads the ``--test`` file of a ``given`` split; it only differs for the
    ``sessions`` format, whose test file is ``prefix<TAB>label`` (with a ``target``
    column). Raises ``FileNotFoundError`` for a missing/unreadable path and ``ValueError``
    naming the file and line for malformed content or an unknown format.
    """
    if fmt not in _READERS and fmt != "events":
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    source = Path(path)
    if fmt == "events":
        return read_event_log(source, options or ReaderOptions())
    _check_file(source)
    opts = options or ReaderOptions()
    if opts.time_unit is not None and opts.time_unit not in TIME_UNITS:
        raise ValueError(f"unknown time unit {opts.time_unit!r}; expected "
                         f"{', '.join(TIME_UNITS)}")
    if source.stat().st_size == 0:
        raise ValueError(f"{source}: the file is empty")
    check_text_file(source)
    if fmt == "sessions" and test:
        return read_prefix_label(source, opts)
    frame: pl.DataFrame = _READERS[fmt](source, opts)
    return frame


def parse_column_mapping(text: str | None) -> dict[str, str]:
    """``item=itemid,user=visitorid`` -> {"item": "itemid", "user": "visitorid"}."""
    if not text:
        return {}
    mapping: dict[str, str] = {}
    for part in text.split(","):
        role, sep, column = part.partition("=")
        role, column = role.strip(), column.strip()
        if not sep or not role or not column:
            raise ValueError(f"--columns: expected ROLE=COLUMN pairs, got {part!r}")
        if role not in CSV_DEFAULT_COLUMNS:
            raise ValueError(f"--columns: unknown role {role!r}; expected "
                             f"{', '.join(CSV_DEFAULT_COLUMNS)}")
        mapping[role] = column
    return mapping
