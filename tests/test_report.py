"""`virtualmle report` (HTML + PNG, checked in headless Chromium) and optuna-dashboard on our studies."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest

from virtualmle.cli import main
from virtualmle.search.loop import SearchOptions, run_search
from virtualmle.search.method import Proposal, SearchContext, TrialRecord
from virtualmle.methods import get_method
from virtualmle.search.space import load_space
from virtualmle.search.storage import open_storage
from virtualmle.search.testing import TINY_FIXED, TINY_SLICE_USERS, write_tiny_space


class NotesMethod:
    """A real (small) method that writes a hypothesis per proposal and a verdict per result,
    as the agent does; it also proposes a value outside the space and a parameter outside it."""

    name = "notes"

    def __init__(self, space) -> None:
        self.space = space
        self.plan = [{"lr": 0.003}, {"lr": 0.02}, {"lr": 0.005, "norm_first": False}]
        self.observed: list[int] = []  # trial numbers in the order their results came back

    def propose(self, ctx: SearchContext) -> Proposal | None:
        i = len(ctx.history) + len(ctx.pending)
        if i >= len(self.plan):
            return None
        return Proposal(params=self.plan[i], user_attrs={"hypothesis": f"lr change number {i} <helps>"})

    def observe(self, ctx: SearchContext, record: TrialRecord) -> dict[str, Any]:
        self.observed.append(record.number)
        best = ctx.incumbent
        keep = record.value is not None and (best is None or record.value > best.value)
        return {"verdict": "keep" if keep else "discard"}


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{root / 'studies.db'}"
    storage = open_storage(url)
    space = load_space(path=write_tiny_space(root))
    common = dict(data="beauty", model="sasrec", space=space, slice_users=TINY_SLICE_USERS, max_epochs=1,
                  fixed=dict(TINY_FIXED), device="cpu")
    method = NotesMethod(space)
    notes = run_search(method, SearchOptions(trials=3, workers=2, run_dir=root / "r1", **common),
                       storage=storage)
    default = run_search(get_method("default", space=space), SearchOptions(trials=1, run_dir=root / "r2", **common),
                         storage=storage)
    return root, url, notes, default, method.observed


def test_method_notes_extras_and_out_of_range_values_are_stored(studies):
    _, url, notes, _, observed = studies
    trials = optuna.load_study(study_name=notes.study_name, storage=url).trials
    assert [t.user_attrs["hypothesis"] for t in trials] == [f"lr change number {i} <helps>" for i in range(3)]
    assert all(t.user_attrs["verdict"] in ("keep", "discard") for t in trials)
    # With two workers either of the first two trials can finish first; the first result observed
    # has no incumbent to lose against, whichever it is.
    assert sorted(observed) == [0, 1, 2]
    assert trials[observed[0]].user_attrs["verdict"] == "keep"
    assert trials[1].params["lr"] == 0.02  # outside the space's [1e-3, 1e-2]: range widened
    assert trials[2].user_attrs["extra_params"] == {"norm_first": False}


def test_report_page_and_plots(studies, capsys):
    root, url, notes, default, _ = studies
    out = root / "html"
    assert main(["report", "--storage", url, "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    for name in (notes.study_name, default.study_name):
        assert name in page
        for kind in ("history", "compute"):
            png = out / f"{name}-{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert (out / f"{notes.study_name}-params.png").exists()  # lr varied
    assert (out / "compare-trials.png").exists() and (out / "compare-seconds.png").exists()
    assert "lr change number 1 &lt;helps&gt;" in page  # escaped, never raw HTML
    assert "verdict" in page and "complete" in page
    assert f"{notes.best_value:.6f}" in page and f"{notes.best_test['ndcg@10']:.6f}" in page
    # One study only.
    one = root / "one"
    assert main(["report", "--storage", url, "--study", default.study_name, "--out", str(one)]) == 0
    assert notes.study_name not in (one / "index.html").read_text()
    capsys.readouterr()
    assert main(["report", "--storage", url, "--study", "nope", "--out", str(root / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("virtualmle: error: study 'nope' not found") and "\n" not in err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (Debian package `chromium`)")
def test_report_renders_in_headless_chromium(studies, tmp_path):
    root, url, notes, _, _ = studies
    out = root / "html-chromium"
    assert main(["report", "--storage", url, "--out", str(out)]) == 0
    shot = tmp_path / "page.png"
    res = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,2000", (out / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert shot.exists(), res.stderr[-2000:]
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1200, 2000)
    lo, hi = img.getextrema()
    assert hi - lo > 100  # text and plots, not a blank page
    # The plots loaded: a broken <img> would leave far fewer dark pixels than three charts do.
    dark = sum(img.histogram()[:128])
    assert dark > 5000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.skipif(shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) is None
                    and shutil.which("optuna-dashboard") is None,
                    reason="optuna-dashboard not installed (pip install -e .[dev])")
def test_optuna_dashboard_shows_our_studies(studies):
    _, url, notes, _, _ = studies
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which("optuna-dashboard")
    port = _free_port()
    proc = subprocess.Popen([exe, url, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                summaries = _get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        ours = next(s for s in summaries if s["study_name"] == notes.study_name)
        detail = _get(f"{base}/api/studies/{ours['study_id']}?after=0")
        trials = detail["trials"]
        assert len(trials) == 3 and all(t["state"] == "Complete" for t in trials)
        assert {p["name"] for p in trials[0]["params"]} >= {"hidden", "lr", "negatives"}
        assert all(len(t["intermediate_values"]) == 1 for t in trials)
        keys = {a["key"] for a in trials[0]["user_attrs"]}
        assert {"outcome", "valid", "test", "seconds", "hypothesis", "verdict"} <= keys
        best = max(trials, key=lambda t: t["values"][0])
        assert best["number"] == notes.best_number
    finally:
        proc.terminate()
        proc.wait(timeout=10)
