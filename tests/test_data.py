"""virtualmle.data: every reader on good and malformed files, names, slicing, cache, profile.

Small files are written into tmp_path; the real files come from $VIRTUALMLE_DATA_DIR (the
Makefile points it at ../shared/data). The parse cache is pointed at tmp_path in every test.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from virtualmle.data import cache as data_cache
from virtualmle.data import data_dir, describe_profile, load_dataset, profile_dataset
from virtualmle.data.readers import detect_format
from virtualmle.errors import DataError


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIRTUALMLE_CACHE_DIR", str(tmp_path / "cache"))


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def seqs(data) -> list[list[int]]:
    return [s.tolist() for s in data.sequences]


def assert_one_line_error(exc_info, path: Path, line: int | None, *words: str) -> None:
    msg = str(exc_info.value)
    assert "\n" not in msg
    prefix = f"{path}:{line}:" if line is not None else f"{path}:"
    assert msg.startswith(prefix), msg
    for w in words:
        assert w in msg, msg


def real_file(name: str) -> Path:
    path = data_dir() / name
    if not path.is_file():
        pytest.skip(f"{name} not in VIRTUALMLE_DATA_DIR ({data_dir()})")
    return path


# ------------------------------------------------------------------ sequence files


def test_sequence_file_keeps_contiguous_ids(tmp_path):
    f = write(tmp_path / "s.txt", "1 1 2 3\n2 2 3 4 1\n\n3 4 3 2\n")
    d = load_dataset(str(f))
    assert seqs(d) == [[1, 2, 3], [2, 3, 4, 1], [4, 3, 2]]
    assert d.num_items == 4 and d.num_users == 3 and d.num_interactions == 10
    assert d.meta["format"] == "sequence" and d.meta["reindexed"] is False
    assert d.timestamps is None and d.name == "s"
    assert all(s.dtype == np.int64 for s in d.sequences)


def test_sequence_file_with_gaps_is_reindexed_in_numeric_order(tmp_path):
    f = write(tmp_path / "s.txt", "7 50 10 30\n8 30 99 10\n")
    d = load_dataset(str(f))
    # 10 -> 1, 30 -> 2, 50 -> 3, 99 -> 4
    assert seqs(d) == [[3, 1, 2], [2, 4, 1]]
    assert d.num_items == 4 and d.meta["reindexed"] is True


@pytest.mark.parametrize(
    "content, line, words",
    [
        ("1 1 2 3\n2 4 x 5\n", 2, ["non-integer", "'x'"]),
        ("u1 1 2 3\n", 1, ["non-integer", "'u1'"]),
        ("1 1 2 3\n2 1 2\n", 2, ["2 item(s)", "at least 3"]),
        ("1 1 2 3\n1 4 5 6\n", 2, ["appears again", "line 1"]),
    ],
)
def test_sequence_file_malformed(tmp_path, content, line, words):
    f = write(tmp_path / "bad.txt", content)
    with pytest.raises(DataError) as e:
        load_dataset(str(f))
    assert_one_line_error(e, f, line, *words)


def test_empty_file(tmp_path):
    f = write(tmp_path / "empty.txt", "\n  \n")
    with pytest.raises(DataError) as e:
        load_dataset(str(f))
    assert_one_line_error(e, f, None, "empty file")


def test_undecodable_bytes_name_the_line(tmp_path):
    f = write(tmp_path / "latin.txt", b"1 1 2 3\n2 1 2 3\n3 \xff\xfe 2 3\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(f))
    assert_one_line_error(e, f, 3, "undecodable", "UTF-8")


# ------------------------------------------------------------------ SASRec pairs


def test_sasrec_pairs(tmp_path):
    f = write(tmp_path / "pairs.txt", "1 1\n2 3\n1 2\n2 1\n1 3\n2 2\n")
    assert detect_format(f) == "sasrec"
    d = load_dataset(str(f))
    assert d.meta["format"] == "sasrec"
    assert seqs(d) == [[1, 2, 3], [3, 1, 2]]
    assert d.num_items == 3


def test_sasrec_pairs_explicit_format_and_errors(tmp_path):
    # A pairs file with a non-standard name needs format=.
    f = write(tmp_path / "pairs.log", "5 10\n5 20\n5 30\n6 20\n6 30\n6 40\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(f))
    assert "format" in str(e.value) and "\n" not in str(e.value)
    d = load_dataset(str(f), fmt="sasrec")
    assert seqs(d) == [[1, 2, 3], [2, 3, 4]]

    bad = write(tmp_path / "bad_pairs.txt", "1 1\n1 2\n1 3 4\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(bad), fmt="sasrec")
    assert_one_line_error(e, bad, 3, "expected 2 fields")

    short = write(tmp_path / "short_pairs.txt", "1 1\n2 1\n1 2\n2 2\n1 3\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(short))
    assert_one_line_error(e, short, 2, "user '2'", "2 interaction(s)")


# ------------------------------------------------------------------ Amazon review dumps


def review(user: str, asin: str, t: int, **extra) -> str:
    return json.dumps({"reviewerID": user, "asin": asin, "unixReviewTime": t, "overall": 5.0, **extra})


def amazon_lines() -> list[str]:
    return [
        review("A", "p1", 300),
        review("B", "p9", 10),
        review("A", "p2", 100),
        review("A", "p3", 100),  # tie with p2: file order keeps p2 first
        review("C", "p1", 5),  # C has 4 reviews: dropped
        review("A", "p4", 200),
        review("B", "p2", 20),
        review("A", "p5", 400),
        review("B", "p1", 30),
        review("C", "p2", 6),
        review("B", "p6", 40),
        review("C", "p3", 7),
        review("B", "p7", 50),
        review("C", "p4", 8),
    ]


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_dump(tmp_path, gz):
    text = "\n".join(amazon_lines()) + "\n"
    if gz:
        f = tmp_path / "reviews_Test_5.json.gz"
        with gzip.open(f, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        f = write(tmp_path / "reviews_Test_5.json", text)
    assert detect_format(f) == "amazon"
    d = load_dataset(str(f))
    assert d.name == "reviews_Test_5"
    # A sorted: p2(100) p3(100) p4(200) p1(300) p5(400); B: p9 p2 p1 p6 p7.
    # Items numbered by first appearance walking A then B: p2=1 p3=2 p4=3 p1=4 p5=5 p9=6 p6=7 p7=8.
    assert seqs(d) == [[1, 2, 3, 4, 5], [6, 1, 4, 7, 8]]
    assert [t.tolist() for t in d.timestamps] == [[100, 100, 200, 300, 400], [10, 20, 30, 40, 50]]
    assert d.num_items == 8
    assert d.meta["dropped_users"] == 1 and d.meta["dropped_interactions"] == 4
    assert profile_dataset(d)["has_timestamps"] is True


@pytest.mark.parametrize(
    "bad_line, words",
    [
        ('{"reviewerID": "A", "asin": ', ["not valid JSON"]),
        (json.dumps({"reviewerID": "A", "unixReviewTime": 1}), ["missing field 'asin'"]),
        (json.dumps({"reviewerID": "A", "asin": "p", "unixReviewTime": "soon"}), ["unixReviewTime", "not an integer"]),
        ("[1, 2]", ["expected a JSON object"]),
    ],
)
def test_amazon_malformed(tmp_path, bad_line, words):
    lines = amazon_lines()
    lines.insert(3, bad_line)
    f = write(tmp_path / "reviews_Bad_5.json", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(f))
    assert_one_line_error(e, f, 4, *words)


def test_amazon_everyone_too_short(tmp_path):
    f = write(tmp_path / "reviews_Tiny_5.json", "\n".join(review("A", f"p{i}", i) for i in range(4)) + "\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(f))
    assert_one_line_error(e, f, None, "no user has at least 5")


def test_corrupt_gzip(tmp_path):
    f = write(tmp_path / "reviews_X_5.json.gz", b"\x1f\x8b\x08\x00garbage-not-deflate")
    with pytest.raises(DataError) as e:
        load_dataset(str(f))
    assert_one_line_error(e, f, None, "gzip")


# ------------------------------------------------------------------ CSV / TSV / RecBole .inter


def test_recbole_inter_headers(tmp_path):
    f = write(
        tmp_path / "ml-tiny.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u1\tm3\t4\t30.0\n"
        "u2\tm1\t3\t5.0\n"
        "u1\tm1\t5\t10.0\n"
        "u2\tm2\t1\t6.0\n"
        "u1\tm2\t2\t20.0\n"
        "u2\tm3\t2\t7.0\n",
    )
    assert detect_format(f) == "tsv"
    d = load_dataset(str(f))
    # u1 sorted: m1 m2 m3 -> 1 2 3; u2: m1 m2 m3 -> 1 2 3.
    assert seqs(d) == [[1, 2, 3], [1, 2, 3]]
    assert [t.tolist() for t in d.timestamps] == [[10, 20, 30], [5, 6, 7]]
    assert d.meta["format"] == "tsv"


def test_recbole_dataset_directory(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    write(folder / "tiny.inter", "user_id:token\titem_id:token\nA\tx\nA\ty\nA\tz\n")
    d = load_dataset(str(folder))
    assert seqs(d) == [[1, 2, 3]] and d.timestamps is None


def test_csv_custom_columns_and_stable_ties(tmp_path):
    f = write(
        tmp_path / "log.csv",
        "when,who,what\n"
        "5,bob,b\n"
        "5,bob,a\n"  # tie: file order keeps b before a
        "1,bob,c\n"
        "2,ann,a\n"
        "3,ann,b\n"
        "1,ann,c\n",
    )
    with pytest.raises(DataError) as e:
        load_dataset(str(f))  # no user/item column under the usual names
    assert_one_line_error(e, f, 1, "missing user column")
    d = load_dataset(str(f), columns={"user": "who", "item": "what", "timestamp": "when"})
    # bob: c(1) b(5) a(5) -> c=1 b=2 a=3; ann: c(1) a(2) b(3) -> 1 3 2
    assert seqs(d) == [[1, 2, 3], [1, 3, 2]]
    assert [t.tolist() for t in d.timestamps] == [[1, 5, 5], [1, 2, 3]]
    # A differently named cache entry: the same file read with other options.
    assert d.meta["cache"] == "miss"


def test_csv_quoted_fields_and_bom(tmp_path):
    f = write(tmp_path / "q.csv", '\ufeffuser,item,timestamp\n"a,1",x,1\n"a,1",y,2\n"a,1",z,3\n')
    d = load_dataset(str(f))
    assert seqs(d) == [[1, 2, 3]]


@pytest.mark.parametrize(
    "content, line, words, columns",
    [
        ("user,item,timestamp\n1,2,3\n1,3\n", 3, ["expected 3 fields, got 2"], None),
        ("user,item,timestamp\n1,2,3\n1,3,noon\n", 3, ["timestamp 'noon' is neither a number nor an ISO-8601 date"], None),
        ("user,item,timestamp\n1,2,3\n1,3,4\n1,4,5\n2,1,1\n", 5, ["user '2'", "1 interaction(s)"], None),
        ("user,item\n1,2\n1,3\n1,4\n", 1, ["missing timestamp column 'ts'"], {"timestamp": "ts"}),
        ("user,product,timestamp\n1,2,3\n", 1, ["missing item column"], None),
        ("user,item,timestamp\n", None, ["no interactions"], None),
        ("user,item,timestamp\n1,,3\n", 2, ["empty item field"], None),
    ],
)
def test_csv_malformed(tmp_path, content, line, words, columns):
    f = write(tmp_path / "bad.csv", content)
    with pytest.raises(DataError) as e:
        load_dataset(str(f), columns=columns)
    assert_one_line_error(e, f, line, *words)


# ------------------------------------------------------------------ MovieLens


def test_movielens_ratings_dat(tmp_path):
    f = write(
        tmp_path / "ratings.dat",
        "1::1193::5::978300760\n1::661::3::978302109\n1::914::3::978301968\n"
        "2::1357::5::978298709\n2::661::3::978299000\n2::3068::4::978299000\n",
    )
    d = load_dataset(str(f))
    assert d.meta["format"] == "movielens"
    # user 1 sorted: 1193 914 661 -> 1 2 3; user 2: 1357 661 3068 -> 4 3 5
    assert seqs(d) == [[1, 2, 3], [4, 3, 5]]
    assert d.timestamps[1].tolist() == [978298709, 978299000, 978299000]


@pytest.mark.parametrize(
    "bad, words",
    [("2::5::3", ["expected 4 fields"]), ("2::x::3::1", ["non-integer", "'x'"]), ("2::5::3::later", ["timestamp"])],
)
def test_movielens_malformed(tmp_path, bad, words):
    f = write(tmp_path / "ratings.dat", f"1::1::5::1\n1::2::5::2\n{bad}\n1::3::5::3\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(f))
    assert_one_line_error(e, f, 3, *words)


def test_unknown_format_name(tmp_path):
    f = write(tmp_path / "s.txt", "1 1 2 3\n")
    with pytest.raises(DataError, match="unknown data format 'parquet'"):
        load_dataset(str(f), fmt="parquet")


# ------------------------------------------------------------------ names and the data directory


def test_missing_named_dataset_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("VIRTUALMLE_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as e:
        load_dataset("Toys")
    msg = str(e.value)
    assert "\n" not in msg
    assert "Toys_and_Games.txt" in msg and str(tmp_path / "nowhere") in msg and "VIRTUALMLE_DATA_DIR" in msg


def test_names_case_and_stem(tmp_path):
    write(tmp_path / "Sports_and_Outdoors.txt", "1 1 2 3\n2 3 2 1\n")
    for spec in ("sports", "SPORTS", "Sports_and_Outdoors", "sports_and_outdoors.txt"):
        d = load_dataset(spec, data_dir=tmp_path)
        assert d.name == "sports" and d.source == tmp_path / "Sports_and_Outdoors.txt"
        assert d.num_users == 2


def test_unknown_spec(tmp_path):
    with pytest.raises(DataError, match="neither a known name"):
        load_dataset(str(tmp_path / "nothing.txt"))


# ------------------------------------------------------------------ real data


@pytest.mark.parametrize(
    "name, file, users, items, interactions, test_only",
    [
        ("beauty", "Beauty.txt", 22363, 12101, 198502, 52),
        ("sports", "Sports_and_Outdoors.txt", 35598, 18357, 296337, 59),
        ("toys", "Toys_and_Games.txt", 19412, 11924, 167597, 47),
    ],
)
def test_real_files_match_the_data_readme(name, file, users, items, interactions, test_only):
    real_file(file)
    d = load_dataset(name)
    assert (d.num_users, d.num_items, d.num_interactions) == (users, items, interactions)
    p = profile_dataset(d)
    assert p["test_only_items"] == test_only
    assert p["repeat_interactions"] == 0 and p["seq_len"]["min"] >= 5
    json.dumps(p)  # JSON-ready


def test_beauty_profile_lengths():
    real_file("Beauty.txt")
    p = profile_dataset(load_dataset("beauty"), max_len=50)
    # ../shared/data/README.md: mean 8.88, median 6, p90 14, max 204, under 1% truncated at 50.
    assert round(p["seq_len"]["mean"], 2) == 8.88
    assert (p["seq_len"]["p50"], p["seq_len"]["p90"], p["seq_len"]["max"]) == (6, 14, 204)
    assert 0.99 < p["share_within_max_len"] < 1.0
    assert p["has_timestamps"] is False
    text = describe_profile(p)
    assert "22,363 users" in text and "52 test targets" in text


def test_slice_users_on_real_data():
    real_file("Beauty.txt")
    full = load_dataset("beauty")
    part = load_dataset("beauty", slice_users=1000)
    assert part.num_users == 1000
    flat_full = np.concatenate(full.sequences[:1000])
    flat_part = np.concatenate(part.sequences)
    uniq = np.unique(flat_full)
    assert part.num_items == uniq.size and set(np.unique(flat_part)) == set(range(1, uniq.size + 1))
    # Re-indexing is monotone, so the slice is the same sequences under a renaming.
    assert np.array_equal(uniq[flat_part - 1], flat_full)
    assert part.meta["slice_users"] == 1000
    assert load_dataset("beauty", slice_users=10**9).num_users == full.num_users


def test_slice_keeps_timestamps(tmp_path):
    f = write(tmp_path / "reviews_T_5.json", "\n".join(amazon_lines()) + "\n")
    d = load_dataset(str(f), slice_users=1)
    assert seqs(d) == [[1, 2, 3, 4, 5]] and d.timestamps[0].tolist() == [100, 100, 200, 300, 400]
    with pytest.raises(DataError, match="slice_users"):
        load_dataset(str(f), slice_users=0)


# ------------------------------------------------------------------ parse cache


def test_cache_hit_serves_the_stored_arrays(tmp_path):
    f = write(tmp_path / "s.txt", "1 1 2 3\n2 3 2 1\n")
    first = load_dataset(str(f))
    assert first.meta["cache"] == "miss"
    entries = list((tmp_path / "cache").glob("*.npz"))
    assert len(entries) == 1
    second = load_dataset(str(f))
    assert second.meta["cache"] == "hit" and seqs(second) == seqs(first)

    # Prove the hit path reads the entry and not the source: overwrite the entry (same key)
    # with different valid arrays; the next load must return exactly those.
    key = entries[0].stem
    other = data_cache.Parsed(np.array([3, 2, 1, 1, 2, 3]), np.array([0, 3, 6]), 3, None, {"format": "sequence"})
    data_cache.store(key, other)
    assert seqs(load_dataset(str(f))) == [[3, 2, 1], [1, 2, 3]]

    # Changing the file changes the key: a miss, then the new content.
    write(f, "1 1 2 3 4\n2 3 2 1\n")
    third = load_dataset(str(f))
    assert third.meta["cache"] == "miss" and seqs(third)[0] == [1, 2, 3, 4]
    assert load_dataset(str(f), cache=False).meta["cache"] == "off"


def test_corrupt_cache_entry_is_rebuilt(tmp_path):
    f = write(tmp_path / "s.txt", "1 1 2 3\n2 3 2 1\n")
    load_dataset(str(f))
    (entry,) = (tmp_path / "cache").glob("*.npz")
    write(entry, b"PK\x03\x04 this is not a zip archive")
    d = load_dataset(str(f))
    assert d.meta["cache"] == "miss" and seqs(d) == [[1, 2, 3], [3, 2, 1]]
    assert data_cache.load(entry.stem) is not None  # rewritten, valid again
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix != ".npz"]  # no temp files left


def test_truncated_cache_entry_is_rebuilt(tmp_path):
    f = write(tmp_path / "s.txt", "1 1 2 3\n2 3 2 1\n")
    load_dataset(str(f))
    (entry,) = (tmp_path / "cache").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:-40])  # a half-written copy
    assert load_dataset(str(f)).meta["cache"] == "miss"


def test_unwritable_cache_dir_still_loads(tmp_path, monkeypatch):
    blocker = write(tmp_path / "not_a_dir", "x")
    monkeypatch.setenv("VIRTUALMLE_CACHE_DIR", str(blocker / "cache"))
    f = write(tmp_path / "s.txt", "1 1 2 3\n")
    assert seqs(load_dataset(str(f))) == [[1, 2, 3]]


# ------------------------------------------------------------------ profile on a hand-made file


def test_profile_hand_computed(tmp_path):
    f = write(tmp_path / "h.txt", "1 1 2 3 4\n2 2 3 5\n3 1 2 3 6\n4 2 1 5\n")
    p = profile_dataset(load_dataset(str(f)), max_len=3)
    assert (p["users"], p["items"], p["interactions"]) == (4, 6, 14)
    assert p["density"] == pytest.approx(14 / 24)
    assert p["seq_len"]["max"] == 4 and p["seq_len"]["p50"] == 3.5 and p["seq_len"]["mean"] == 3.5
    assert p["share_within_max_len"] == 0.5
    # Test targets 4, 5, 6, 5; seen before test: 1 2 3 (u1), 2 3 (u2), 1 2 3 (u3), 2 1 (u4).
    assert p["test_only_items"] == 4 and p["test_only_items_distinct"] == 3
    # Counts: item1 3, item2 4, item3 3, item4 1, item5 2, item6 1 -> Gini by mean absolute difference.
    c = np.array([3, 4, 3, 1, 2, 1], dtype=float)
    gini = np.abs(c[:, None] - c[None, :]).sum() / (2 * c.size**2 * c.mean())
    assert p["popularity"]["gini"] == pytest.approx(gini)
    assert p["popularity"]["top1pct_share"] == pytest.approx(4 / 14)
    assert p["popularity"]["max_item_count"] == 4 and p["popularity"]["items_under_5"] == 6
    assert p["repeat_interactions"] == 0


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VIRTUALMLE_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("VIRTUALMLE_DATA_DIR")
    assert data_dir() == Path(os.path.expanduser("~")) / ".cache" / "virtualmle" / "data"
