"""The files a new user brings (issue 14 section 2): headerless TSV, ISO dates, ignoring the
timestamp, the delimiter hint, the `user item timestamp` hint, and the file's ids kept for
recommending. Every file is written by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from virtualmle.data import load_dataset
from virtualmle.data.readers import detect_format
from virtualmle.errors import DataError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIRTUALMLE_CACHE_DIR", str(tmp_path / "cache"))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def seqs(data) -> list[list[str]]:
    """Sequences in the file's own item ids."""
    return [[str(data.item_ids[i - 1]) for i in s] for s in data.sequences]


def test_headerless_tsv_like_movielens_100k_u_data(tmp_path):
    # u.data: user, item, rating, timestamp; tab-separated, no header; rows not in time order.
    rows = [(196, 242, 3, 881250949), (196, 302, 3, 881250940), (186, 302, 3, 891717742),
            (196, 51, 2, 881250950), (186, 242, 5, 891717740), (186, 377, 1, 891717745)]
    f = write(tmp_path / "u.data", "".join("\t".join(map(str, r)) + "\n" for r in rows))
    assert detect_format(f) == "tsv"
    d = load_dataset(str(f))
    assert list(d.user_ids) == ["196", "186"]  # first appearance
    assert seqs(d) == [["302", "242", "51"], ["242", "302", "377"]]  # sorted by column 4
    assert d.meta["header"] is False
    assert [list(t) for t in d.timestamps] == [[881250940, 881250949, 881250950], [891717740, 891717742, 891717745]]


def test_columns_by_position_and_ignoring_the_timestamp(tmp_path):
    f = write(tmp_path / "log.tsv", "1\t10\t30\n1\t11\t20\n1\t12\t10\n2\t10\t5\n2\t12\t4\n2\t13\t3\n")
    by_time = load_dataset(str(f))
    assert seqs(by_time) == [["12", "11", "10"], ["13", "12", "10"]]
    as_written = load_dataset(str(f), columns={"timestamp": None})
    assert seqs(as_written) == [["10", "11", "12"], ["10", "12", "13"]] and as_written.timestamps is None
    explicit = load_dataset(str(f), columns={"user": "1", "item": "2", "timestamp": "3"})
    assert seqs(explicit) == seqs(by_time)
    with pytest.raises(DataError, match=r"log.tsv:1: missing item column '7'; 3 columns \(no header row\)"):
        load_dataset(str(f), columns={"item": "7"})


def test_iso_8601_dates_order_the_rows(tmp_path):
    f = write(tmp_path / "log.csv",
              "user_id,item_id,date\n"
              "a,x,2021-03-01T10:00:00Z\na,y,2021-02-01\na,z,2021-02-01 12:30:00\n"
              "b,z,2020-01-01T00:00:00+02:00\nb,x,2020-01-01T00:00:00Z\nb,y,2019-12-31\n")
    d = load_dataset(str(f))
    assert seqs(d) == [["y", "z", "x"], ["y", "z", "x"]]
    assert int(d.timestamps[0][0]) == 1612137600  # 2021-02-01 00:00 UTC (naive dates are UTC)
    assert int(d.timestamps[1][1]) == 1577829600  # 2020-01-01 00:00 at +02:00


def test_custom_column_names_and_a_bad_date(tmp_path):
    good = write(tmp_path / "good.csv", "Customer,Product,When\n" + "".join(
        f"c{u},p{k},{2000 + k}-01-01\n" for u in range(2) for k in range(3)))
    d = load_dataset(str(good), columns={"user": "Customer", "item": "Product", "timestamp": "When"})
    assert seqs(d) == [["p0", "p1", "p2"]] * 2
    bad = write(tmp_path / "bad.csv", "u,i,t\n1,2,2020-01-01\n1,3,yesterday\n1,4,2020-01-03\n")
    with pytest.raises(DataError, match=r"bad.csv:3: timestamp 'yesterday' is neither a number nor an ISO-8601"):
        load_dataset(str(bad), columns={"user": "u", "item": "i", "timestamp": "t"})


def test_wrong_delimiter_is_named(tmp_path):
    tab = write(tmp_path / "log.txt", "user_id\titem_id\n1\t2\n1\t3\n1\t4\n")
    with pytest.raises(DataError, match=r"log.txt:1: no comma on the first line but tabs.*--format tsv"):
        load_dataset(str(tab), fmt="csv")
    comma = write(tmp_path / "log2.txt", "user_id,item_id\n1,2\n1,3\n1,4\n")
    with pytest.raises(DataError, match=r"looks comma-separated; use --format csv"):
        load_dataset(str(comma), fmt="tsv")


def test_user_item_timestamp_txt_gets_a_hint_and_reads_as_tsv(tmp_path):
    f = write(tmp_path / "triples.txt", "1 5 100\n1 6 90\n1 7 80\n2 5 10\n2 6 20\n2 8 30\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(f))
    msg = str(e.value)
    assert "\n" not in msg and "user item timestamp" in msg and "--format tsv" in msg
    d = load_dataset(str(f), fmt="tsv")  # whitespace-separated, no header
    assert seqs(d) == [["7", "6", "5"], ["5", "6", "8"]]


def test_file_ids_survive_the_cache_and_slicing(tmp_path):
    f = write(tmp_path / "log.csv", "user,item\n" + "".join(
        f"user{u},item{(u * 3 + k) % 5}\n" for u in range(4) for k in range(3)))
    first = load_dataset(str(f))
    again = load_dataset(str(f))
    assert (first.meta["cache"], again.meta["cache"]) == ("miss", "hit")
    assert list(again.user_ids) == ["user0", "user1", "user2", "user3"]
    assert seqs(again) == seqs(first)
    part = load_dataset(str(f), slice_users=2)
    assert list(part.user_ids) == ["user0", "user1"]
    assert seqs(part) == seqs(first)[:2] and part.num_items == len(part.item_ids)


def test_sequence_file_ids_are_the_files(tmp_path):
    f = write(tmp_path / "seq.txt", "7 10 30 20\n9 30 40 10\n")
    d = load_dataset(str(f))
    assert list(d.user_ids) == ["7", "9"]
    assert seqs(d) == [["10", "30", "20"], ["30", "40", "10"]]
    assert np.array_equal(np.concatenate(d.sequences), [1, 3, 2, 3, 4, 1])  # numeric order kept
