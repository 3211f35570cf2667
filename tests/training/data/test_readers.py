"""Readers on tiny fixtures written into tmp_path: one per format (both YOOCHOOSE and
both Retailrocket variants), and malformed files reported by file and line."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from training.data.readers import (
    EVENT_SCHEMA,
    ReaderOptions,
    parse_column_mapping,
    read_events,
    sniff_separator,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def check_schema(frame: pl.DataFrame) -> None:
    for name, dtype in EVENT_SCHEMA.items():
        assert frame.schema[name] == dtype, name


def test_csv_default_columns_and_sniffed_separator(tmp_path: Path) -> None:
    path = write(tmp_path / "log.tsv", "user_id\titem_id\ttimestamp\n"
                 "a\tx\t100\nb\ty\t160.5\n")
    assert sniff_separator(path) == "\t"
    frame = read_events(path, "csv")
    check_schema(frame)
    assert frame["item_id"].to_list() == ["x", "y"]
    assert frame["timestamp"].to_list() == [100.0, 160.5]
    assert frame["session_id"].null_count() == 2
    assert frame["event_type"].to_list() == ["click", "click"]


def test_csv_column_mapping_ms_and_event_filter(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "visitor;thing;ts;kind\n"
                 "u1;i1;1500000000000;view\nu1;i2;1500000001000;buy\n"
                 "u2;i3;1500000002500;view\n")
    mapping = parse_column_mapping("user=visitor,item=thing,time=ts,type=kind")
    frame = read_events(path, "csv", ReaderOptions(columns=mapping, event_types=["view"]))
    assert frame["item_id"].to_list() == ["i1", "i3"]
    assert frame["timestamp"].to_list() == [1_500_000_000.0, 1_500_000_002.5]  # ms sniffed
    assert frame["user_id"].to_list() == ["u1", "u2"]


def test_csv_iso_times(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "session_id,item_id,timestamp\n"
                 "s,a,2014-04-07T10:51:09.277Z\ns,b,2014-04-07T10:51:10.277Z\n")
    frame = read_events(path, "csv")
    assert frame["timestamp"][1] - frame["timestamp"][0] == pytest.approx(1.0)
    assert frame["timestamp"][0] == pytest.approx(1396867869.277)


def test_csv_missing_mapped_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp\na,b,1\n")
    with pytest.raises(ValueError, match=r"log.csv line 1: no column 'sku' for item"):
        read_events(path, "csv", ReaderOptions(columns={"item": "sku"}))
    with pytest.raises(ValueError, match="unknown role"):
        parse_column_mapping("thing=sku")


def test_yoochoose_session_rec_tsv(tmp_path: Path) -> None:
    path = write(tmp_path / "yc.txt", "SessionId\tItemId\tTime\n1\t214536502\t1396860669.277\n"
                 "1\t214536506\t1396860886.998\n")
    for fmt in ("yoochoose", "session-rec"):
        frame = read_events(path, fmt)
        check_schema(frame)
        assert frame["session_id"].to_list() == ["1", "1"]
        assert frame["timestamp"][0] == pytest.approx(1396860669.277)
        assert frame["user_id"].null_count() == 2


def test_yoochoose_original_dat(tmp_path: Path) -> None:
    path = write(tmp_path / "yoochoose-clicks.dat",
                 "1,2014-04-07T10:51:09.277Z,214536502,0\n"
                 "1,2014-04-07T10:54:09.868Z,214536500,0\n"
                 "2,2014-04-07T13:56:37.614Z,214662742,S\n")
    frame = read_events(path, "yoochoose")
    assert frame["session_id"].to_list() == ["1", "1", "2"]
    assert frame["item_id"].to_list() == ["214536502", "214536500", "214662742"]
    assert frame["timestamp"][1] - frame["timestamp"][0] == pytest.approx(180.591)


def test_diginetica_day_plus_timeframe_and_na_users(tmp_path: Path) -> None:
    path = write(tmp_path / "train-item-views.csv",
                 "session_id;user_id;item_id;timeframe;eventdate\n"
                 "1;NA;81766;526309;2016-05-09\n1;NA;31331;1031018;2016-05-09\n"
                 "2;278;32118;5000;2016-05-10\n")
    frame = read_events(path, "diginetica")
    assert frame["user_id"].to_list() == [None, None, "278"]
    day = 1462752000.0  # 2016-05-09 UTC
    assert frame["timestamp"].to_list() == pytest.approx(
        [day + 526.309, day + 1031.018, day + 86400 + 5.0])


def test_retailrocket_both_variants(tmp_path: Path) -> None:
    users = write(tmp_path / "retail_rocket_train.csv", "timestamp,visitorid,itemid,session_id\n"
                  "1441864236661,1014,178797,1778\n1441864237111,1014,311775,1778\n")
    frame = read_events(users, "retailrocket")
    assert frame["session_id"].to_list() == ["1778", "1778"]
    assert frame["timestamp"][0] == pytest.approx(1441864236.661)
    events = write(tmp_path / "events.csv", "timestamp,visitorid,event,itemid,transactionid\n"
                   "1433221332117,257597,view,355908,\n1433224214164,992329,addtocart,248676,\n"
                   "1433221999827,111016,view,318965,\n")
    frame = read_events(events, "retailrocket")
    assert frame["item_id"].to_list() == ["355908", "318965"]
    assert frame["session_id"].null_count() == 2  # sessionized later by idle gap
    both = read_events(events, "retailrocket", ReaderOptions(event_types=["view", "addtocart"]))
    assert both.height == 3


def test_taobao_keeps_pv_and_skips_a_cut_last_line(tmp_path: Path) -> None:
    path = write(tmp_path / "UserBehavior.csv", "1,2268318,2520377,pv,1511544070\n"
                 "1,2333346,2520771,buy,1511561733\n1,2576651,149192,pv,1511572885\n"
                 "2,1,2,pv")  # cut mid-record, no final newline
    frame = read_events(path, "taobao")
    assert frame["item_id"].to_list() == ["2268318", "2576651"]
    assert frame["event_type"].unique().to_list() == ["pv"]
    # the same short record in the middle of the file is an error
    bad = write(tmp_path / "bad.csv", "1,2268318,2520377,pv,1511544070\n2,1,2,pv\n"
                "1,2576651,149192,pv,1511572885\n")
    with pytest.raises(ValueError, match=r"bad.csv line 2: expected 5 columns, got 4"):
        read_events(bad, "taobao")


def test_sessions_train_and_prefix_label_test(tmp_path: Path) -> None:
    train = write(tmp_path / "train_sessions.txt", "1 2\n3 4 5\n")
    frame = read_events(train, "sessions")
    assert frame["session_id"].to_list() == ["s1", "s1", "s2", "s2", "s2"]
    assert frame["item_id"].to_list() == ["1", "2", "3", "4", "5"]
    times = frame["timestamp"].to_list()
    assert times == sorted(times)
    test = write(tmp_path / "test.tsv", "1 2 3\t4\n5\t6\n")
    frame = read_events(test, "sessions", test=True)
    assert frame["session_id"].to_list() == ["t1"] * 4 + ["t2"] * 2
    assert frame["item_id"].to_list() == ["1", "2", "3", "4", "5", "6"]
    assert frame["target"].to_list() == [False, False, False, True, False, True]
    bad = write(tmp_path / "bad.tsv", "1 2\t3\n1 2 3\n")
    with pytest.raises(ValueError, match=r"bad.tsv line 2: expected 'prefix<TAB>label'"):
        read_events(bad, "sessions", test=True)


def test_movielens_and_otto(tmp_path: Path) -> None:
    ratings = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n"
                    "1,31,2.5,1260759144\n1,1029,3.0,1260759179\n")
    frame = read_events(ratings, "movielens")
    assert frame["user_id"].to_list() == ["1", "1"]
    assert frame["event_type"].to_list() == ["rating", "rating"]
    otto = write(tmp_path / "train.jsonl",
                 '{"session":0,"events":[{"aid":5,"ts":1659304800025,"type":"clicks"},'
                 '{"aid":6,"ts":1659304900025,"type":"carts"}]}\n'
                 '{"session":1,"events":[{"aid":7,"ts":1659304800000,"type":"clicks"}]}\n')
    frame = read_events(otto, "otto")
    assert frame["item_id"].to_list() == ["5", "7"]
    assert frame["timestamp"][0] == pytest.approx(1659304800.025)
    bad = write(tmp_path / "bad.jsonl", '{"session":0,"events":[]}\n{"session":1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl line 2"):
        read_events(bad, "otto")


@pytest.mark.parametrize("text, line, message", [
    ("timestamp,visitorid,itemid,session_id\n1,2,3,4\n1,2,3,4,5\n", 3,
     "expected 4 columns, got 5"),
    ("timestamp,visitorid,itemid,session_id\n1,2,3,4\n1,2,3,4\n1,2,3\n1,2,3,4\n", 4,
     "expected 4 columns, got 3"),
    ("timestamp,visitorid,itemid,session_id\n1,2,3,4\nsoon,2,3,4\n", 3,
     "cannot read time 'soon'"),
    ("timestamp,visitorid,itemid,session_id\n1,2,3,4\n\n1,2,,4\n", 4,
     "missing value (required: itemid, timestamp, visitorid, session_id)"),
])
def test_malformed_files_name_the_line(tmp_path: Path, text: str, line: int,
                                       message: str) -> None:
    path = write(tmp_path / "retail_rocket_train.csv", text)
    with pytest.raises(ValueError) as info:
        read_events(path, "retailrocket")
    assert f"retail_rocket_train.csv line {line}: " in str(info.value)
    assert message in str(info.value)


def test_wrong_format_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path / "yc.txt", "SessionId\tItemId\tTime\n1\t2\t3\n")
    with pytest.raises(ValueError, match=r"yc.txt line 1: not a Retailrocket file"):
        read_events(path, "retailrocket")
    with pytest.raises(ValueError, match=r"yc.txt line 1: expected DIGINETICA columns"):
        read_events(path, "diginetica")
    with pytest.raises(ValueError, match="unknown format"):
        read_events(path, "parquet")
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        read_events(tmp_path / "nope.csv", "csv")
    empty = write(tmp_path / "empty.csv", "")
    with pytest.raises(ValueError, match="empty"):
        read_events(empty, "csv")


def test_binary_and_non_utf8_files_are_named_not_dumped(tmp_path: Path) -> None:
    import gzip

    text = "user_id,item_id,timestamp\nu1,i1,100\nu1,i2,160\n"
    packed = tmp_path / "clicks.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(ValueError) as info:
        read_events(packed, "csv")
    message = str(info.value)
    assert message == f"{packed}: not a text file (gzip-compressed: decompress it first, e.g. " \
                      "gunzip)"

    latin = tmp_path / "titles.csv"
    latin.write_bytes(("user_id,item_id,timestamp\nu1,i1,100\nu1,caf\u00e9,160\n")
                      .encode("latin-1"))
    with pytest.raises(ValueError) as info:
        read_events(latin, "csv")
    message = str(info.value)
    assert message.startswith(f"{latin}: not a text file (not UTF-8: byte 0xe9 at line 3;")
    assert "\n" not in message and "\ufffd" not in message

    binary = tmp_path / "model.bin"
    binary.write_bytes(b"user_id,item_id\n\x00\x01\x02")
    with pytest.raises(ValueError, match=r"model\.bin: not a text file \(binary data: a NUL "
                                         r"byte at line 2"):
        read_events(binary, "sessions")
    # the same file as UTF-8, with a byte-order mark, reads
    good = tmp_path / "good.csv"
    good.write_bytes(b"\xef\xbb\xbf" + text.replace("i2", "caf\u00e9").encode("utf-8"))
    assert read_events(good, "csv")["item_id"].to_list() == ["i1", "caf\u00e9"]


def test_prepare_reports_a_gzip_file_in_one_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import gzip

    from cli.main import main

    packed = tmp_path / "ratings.csv.gz"
    packed.write_bytes(gzip.compress(b"userId,movieId,rating,timestamp\n1,2,3.0,4\n"))
    code = main(["prepare", "--format", "movielens", "--input", str(packed), "--protocol",
                 "last-session", "--out", str(tmp_path / "out")])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error == f"nextclick prepare: error: {packed}: not a text file (gzip-compressed: " \
                    "decompress it first, e.g. gunzip)"
