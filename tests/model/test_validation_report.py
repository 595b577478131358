"""The validation report of a model trained on real data: S&P 500 daily bars (the
copy shipped with ``arch``), trained and backfilled as a user would, the report
written by ``train`` (from a replay) and by ``regimes report`` (from the Delta store),
the issue's criteria checked on its figures, and the page opened in headless Chromium.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from regimes.app import backfill as backfill_cases
from regimes.app import features, training
from regimes.app.demo import _ingest_sp500
from regimes.app.executors import executor_named
from regimes.app.orchestrators import orchestrator_named
from regimes.app.report import ReportRequest, report, write_whole
from regimes.app.workspace import Workspace
from regimes.errors import BadInputError
from regimes.validation.verdicts import ValidationVerdicts
from tests.browser import open_page

pytestmark = pytest.mark.model

SYMBOL = "^GSPC"


def regimes(home: Path, *args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "regimes", "--home", str(home), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sp500(tmp_path_factory):
    """A home with the S&P 500 daily history, a 1d model trained on it (train writes its
    report), the report refused before the backfill, then the states backfilled."""
    home = tmp_path_factory.mktemp("sp500")
    local, direct = executor_named("local"), orchestrator_named("direct")
    with Workspace.open(home=home) as workspace:
        _ingest_sp500(workspace, lambda _: None)
        features.features(workspace, features.FeaturesRequest(("1d",), (SYMBOL,)), local)
        request = training.TrainRequest(("1d",), (SYMBOL,), {"K": [4], "covariance": ["diag"]})
        [trained] = training.train(workspace, request, local, direct).models
        model_id = trained["model_id"]
        trained_report = json.loads(Path(trained["report"]).with_suffix(".json").read_text())
    before_backfill = regimes(home, "report", "--timeframe", "1d", "--model-id", model_id)
    with Workspace.open(home=home) as workspace:
        backfill_cases.backfill(
            workspace, backfill_cases.BackfillRequest("1d", model_id), local, direct
        )
    return {
        "home": home,
        "model_id": model_id,
        "trained": trained,
        "trained_report": trained_report,
        "before_backfill": before_backfill,
    }


@pytest.fixture(scope="module")
def written(sp500):
    """``regimes report`` over the whole stored history (after a windowed one)."""
    home, model_id = sp500["home"], sp500["model_id"]
    with Workspace.open(home=home) as workspace:
        request = ReportRequest("1d", model_id, start="2018-10-01T00:00Z")
        windowed_report = json.loads(report(workspace, request).json.read_text())
    full = regimes(home, "report", "--timeframe", "1d", "--model-id", model_id)
    assert full.returncode == 0, full.stderr
    answer = json.loads(full.stdout.strip().splitlines()[-1])
    return {
        "answer": answer,
        "stderr": full.stderr,
        "report": json.loads(Path(answer["json"]).read_text()),
        "windowed": windowed_report,
    }


def test_report_needs_stored_states_first(sp500):
    result = sp500["before_backfill"]
    assert result.returncode == 2
    assert "run `regimes backfill --timeframe 1d --model-id" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_train_writes_a_report_and_verdicts_for_every_model(sp500):
    trained = sp500["trained"]
    assert Path(trained["report"]).is_file()
    verdicts = ValidationVerdicts.from_dict(trained["verdicts"])
    assert [c.name for c in verdicts.checks] == ["dwell", "diagonal_dominance", "confidence"]


def test_sp500_states_differ_in_volatility_and_dwell_matches_the_matrix(sp500, written):
    report, answer = written["report"], written["answer"]
    home, model_id = sp500["home"], sp500["model_id"]
    folder = home / "reports" / "validation" / "1d" / model_id
    assert answer["html"] == str(folder / "report.html") and answer["json"] == str(
        folder / "report.json"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json"]
    assert (folder / "report.html").stat().st_mode & 0o777 == 0o644
    headline = report["headline"]
    # The criteria: highest vs lowest state volatility >= 2x, and the states that
    # hold >= 10% of bars dwell within a factor 2 of 1/(1-a_ii).
    assert headline["volatility_ratio_high_low"] >= 2.0, headline
    assert headline["dwell_vs_implied"], headline
    for row in headline["dwell_vs_implied"]:
        assert 0.5 <= row["ratio"] <= 2.0, row
    vols = [s["volatility"] for s in headline["states_by_volatility"]]
    assert vols == sorted(vols)
    assert set(headline["sharpe"]) == {"baseline", "gated", "sized"}
    for name in ("gated", "sized"):
        metrics = report["figures"]["backtest"]["strategies"][name]
        assert metrics["sharpe_difference_low"] <= metrics["sharpe_difference_high"]
    # The stored states are the replay train reported on: the same figures.
    assert sp500["trained_report"]["headline"] == headline
    assert "highest / lowest" in written["stderr"] and "Sharpe" in written["stderr"]


def test_a_short_window_marks_cells_instead_of_inventing_numbers(written):
    windowed = written["windowed"]
    assert windowed["figures"]["window"]["bars"] < 80
    notes = [row["note"] for row in windowed["figures"]["returns"]]
    assert any(note.startswith("too little data") for note in notes), notes


def test_unknown_symbol_and_unknown_model_are_refused(sp500):
    with Workspace.open(home=sp500["home"]) as workspace:
        request = ReportRequest("1d", sp500["model_id"], symbols=(SYMBOL, "NOPE"))
        with pytest.raises(
            BadInputError, match=r"no 1d bars and no states for symbol\(s\) \['NOPE'\]"
        ):
            report(workspace, request)
        with pytest.raises(BadInputError, match="not in the registry"):
            report(workspace, ReportRequest("1d", "1d-nope"))


def test_a_failed_write_leaves_the_previous_report_whole(tmp_path):
    write_whole(tmp_path, {"report.json": "{}", "report.html": "<html>old</html>"})
    with pytest.raises(UnicodeEncodeError):
        write_whole(tmp_path, {"report.json": '{"new": 1}', "report.html": "\ud800"})
    assert (tmp_path / "report.json").read_text() == "{}"
    assert (tmp_path / "report.html").read_text() == "<html>old</html>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]


def test_the_report_renders_in_chromium_offline(written, tmp_path_factory):
    html = Path(written["answer"]["html"])
    text = html.read_text()
    assert "<script" not in text.lower() and "https://" not in text
    # Kept with pytest's output (the last runs' base temp folders) for a person to look.
    shot = tmp_path_factory.getbasetemp() / "browser" / "validation_report_1d.png"
    check = open_page(html.as_uri(), shot)
    print(f"screenshot: {shot}")
    assert check.errors == [] and check.requests == []
    assert len(check.charts) >= 10
    for chart in check.charts:
        assert chart["width"] >= 300 and chart["height"] >= 150, chart
        assert chart["drawn"] > 5, chart
    assert check.screenshot.stat().st_size > 20_000


def test_the_browser_check_catches_errors_requests_and_blank_charts(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><body><canvas width='300' height='200'></canvas>"
        "<img src='http://127.0.0.1:9/x.png'>"
        "<script>console.error('boom'); undefined_function();</script></body></html>"
    )
    check = open_page(page.as_uri(), tmp_path / "broken.png")
    assert any("boom" in e for e in check.errors)
    assert any("undefined_function" in e for e in check.errors)
    assert check.requests == ["http://127.0.0.1:9/x.png"]
    assert [c["drawn"] for c in check.charts] == [0, 0]
