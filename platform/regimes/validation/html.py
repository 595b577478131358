"""The validation report as one self-contained HTML page.

:func:`render_html` takes the report's JSON form (:meth:`ValidationReport.as_dict`),
so the page shows exactly the figures the JSON holds. Charts are inline SVG
(:mod:`regimes.validation.svg`); there is no script and no external resource, so the
file opens offline in any browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from regimes.validation import svg
from regimes.validation.returns import TOO_LITTLE

STYLE = """
body{font-family:sans-serif;margin:24px;max-width:1320px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0;font-size:12px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td.na{color:#a00;font-style:italic}td.text{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #eee}
.pass{color:#080;font-weight:bold}.fail{color:#b00;font-weight:bold}.none{color:#a60}
.note{color:#555;font-size:12px;max-width:1000px}
"""


def _format(value: Any) -> tuple[str, str]:
    if value is None:
        return TOO_LITTLE, "na"
    if isinstance(value, bool):
        return ("yes" if value else "no"), ""
    if isinstance(value, float):
        return (f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"), ""
    if isinstance(value, int):
        return str(value), ""
    return str(value), "text"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An HTML table of ``rows`` (dicts); a None cell reads "too little data"."""
    if not rows:
        return f'<p class="note">{TOO_LITTLE}</p>'
    columns = list(columns or rows[0].keys())
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            text, css = _format(row.get(column))
            cells.append(f'<td class="{css}">{escape(text)}</td>' if css else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _column(rows: Sequence[dict], name: str) -> list:
    return [row.get(name) for row in rows]


def _state_names(report: dict) -> list[str]:
    labels = report.get("labels", {})
    return [f"{k}: {labels.get(str(k), '')}"[:28] for k in range(report["K"])]


def _verdicts(report: dict) -> str:
    verdicts = report["verdicts"]
    overall = "pass" if verdicts["passed"] else "fail"
    items = []
    for check in verdicts["checks"]:
        passed = check["passed"]
        css, word = (
            ("none", "too little data")
            if passed is None
            else (("pass", "pass") if passed else ("fail", "fail"))
        )
        items.append(
            f'<li><b>{escape(check["name"])}</b>: <span class="{css}">{word}</span> '
            f"({escape(check['reason'])})</li>"
        )
    return (
        f'<p>Verdicts (read by the promotion gates): <span class="{overall}">'
        f"{overall.upper()}</span></p><ul>{''.join(items)}</ul>"
    )


def _dwell_section(report: dict, names: list[str]) -> str:
    figures = report["figures"]
    rows = figures["dwell"]
    chart = svg.bar_chart(
        [str(k) for k in range(report["K"])],
        {
            "empirical mean dwell": _column(rows, "mean_dwell"),
            "implied 1/(1-a_kk)": _column(rows, "implied_dwell"),
        },
        "Dwell per state (bars): empirical vs implied by the transition matrix",
        "bars",
        notes=["" if row["enough"] else TOO_LITTLE for row in rows],
    )
    histogram = figures["dwell_histogram"]
    edges = histogram["edges"]
    spells = svg.line_chart(
        [str(e) for e in edges[:-1]],
        {names[int(k)]: counts for k, counts in histogram["counts"].items()},
        "Spell lengths (complete spells per length bin, left edge in bars)",
        "spells",
    )
    return (
        "<h2>1. Dwell times (8.1)</h2>"
        '<p class="note">Spells of the filtered argmax (raw_state_id); spells cut by the '
        "window's ends or an UNKNOWN bar are censored and left out of the mean. "
        "published_mean_dwell: the same after anti-chatter.</p>"
        f'<div class="charts">{chart}{spells}</div>{table(rows)}'
    )


def _transition_section(report: dict) -> str:
    figures = report["figures"]
    labels = [str(k) for k in range(report["K"])]
    model = svg.heatmap(figures["transmat"], labels, labels, "Model transition matrix a_ij")
    empirical = svg.heatmap(
        figures["empirical_transmat"], labels, labels, "Empirical transition rates (filtered)"
    )
    return (
        "<h2>2. Transitions (8.2)</h2>"
        f'<div class="charts">{model}{empirical}</div>{table(figures["transitions"])}'
    )


def _confidence_section(report: dict, names: list[str]) -> str:
    figures = report["figures"]
    histogram = figures["confidence_histogram"]
    edges = histogram["edges"]
    centres = [f"{(edges[i] + edges[i + 1]) / 2:.2f}" for i in range(len(edges) - 1)]
    by_state = svg.line_chart(
        centres,
        {names[int(k)]: counts for k, counts in histogram["counts"].items()},
        "max(alpha_t) per state (bars per bin)",
        "bars",
    )
    over_time = figures["confidence_over_time"]
    timeline = svg.line_chart(
        [str(row["period"])[:10] for row in over_time],
        {"median": _column(over_time, "median"), "10th percentile": _column(over_time, "p10")},
        "max(alpha_t) over time",
        "max alpha",
    )
    return (
        "<h2>3. Posterior confidence (8.3)</h2>"
        f'<div class="charts">{by_state}{timeline}</div>{table(figures["confidence"])}'
    )


def _ood_section(report: dict) -> str:
    figures = report["figures"]
    rows = figures["ood_over_time"]
    reasons = [c for c in (rows[0].keys() if rows else []) if c not in ("period", "bars")]
    chart = svg.line_chart(
        [str(row["period"])[:10] for row in rows],
        {reason: _column(rows, reason) for reason in reasons} or {"no UNKNOWN": [0.0] * len(rows)},
        "UNKNOWN share of bars per period, by reason",
        "share",
    )
    totals = table([{"reason": k, "share": v} for k, v in figures["ood_totals"].items()])
    return f'<h2>4. OOD rate (8.4)</h2><div class="charts">{chart}</div>{totals}'


def _returns_section(report: dict) -> str:
    figures = report["figures"]
    rows = figures["returns"]
    settings = figures["settings"]
    categories = [str(row["state"]) for row in rows]
    notes = [TOO_LITTLE if row.get("volatility") is None else "" for row in rows]
    charts = []
    for name, title, unit in (
        ("mean_forward_return", f"Mean next-{settings['horizon_bars']}-bar log return", "return"),
        ("volatility", "Annualised volatility of the next bar", "volatility"),
        ("max_drawdown", "Max drawdown of the bars in the state", "drawdown"),
    ):
        charts.append(
            svg.bar_chart(
                categories,
                {name: _column(rows, name)},
                f"{title} (with {settings['bootstrap']['confidence']:.0%} spell bootstrap)",
                unit,
                intervals={name: (_column(rows, f"{name}_low"), _column(rows, f"{name}_high"))},
                notes=notes,
            )
        )
    return (
        "<h2>5. State-conditioned returns (8.5)</h2>"
        '<p class="note">Published state of bar t (after anti-chatter; UNKNOWN excluded); '
        "returns from close t on. Intervals resample whole spells; note: the spells behind "
        "each row.</p>"
        f'<div class="charts">{"".join(charts)}</div>{table(rows)}'
    )


def _backtest_section(report: dict) -> str:
    backtest = report["figures"]["backtest"]
    strategies = backtest.get("strategies", {})
    rows = [{"strategy": name, **metrics} for name, metrics in strategies.items()]
    equity = backtest.get("equity")
    chart = (
        svg.line_chart(
            [t[:10] for t in equity["ts"]],
            {name: equity[name] for name in strategies},
            "Walk-forward equity (out of sample, after costs)",
            "value of 1",
            log=True,
        )
        if equity
        else ""
    )
    settings = report["figures"]["settings"]
    return (
        "<h2>6. Walk-forward backtest (8.6)</h2>"
        f'<p class="note">{len(backtest.get("windows", []))} test windows from '
        f"{escape(str((backtest.get('windows') or ['-'])[0]))}; per window, each state's "
        "mean and volatility of the next-bar return are estimated on the bars before it; "
        "position decided on bar t, applied from t+1; costs "
        f"{settings['cost_bps']} bps per unit turnover. gated: in when the state's mean was "
        "positive; sized: long only, proportional to mean/volatility, capped at "
        f"{settings['backtest']['size_cap']}. Sharpe difference vs baseline with a "
        "circular-block bootstrap interval.</p>"
        f'<div class="charts">{chart}</div>{table(rows)}'
    )


def render_html(report: dict[str, Any]) -> str:
    """The whole page for a report's JSON form (:meth:`ValidationReport.as_dict`)."""
    figures = report["figures"]
    window = figures["window"]
    names = _state_names(report)
    headline = report["headline"]
    title = f"Validation report: {report['model_id']} ({report['timeframe']})"
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="note">Window {escape(window["first_ts"])} .. {escape(window["last_ts"])}, '
        f"{window['bars']} bars of {len(window['symbols'])} symbol(s): "
        f"{escape(', '.join(window['symbols'][:20]))}. Training window "
        f"{escape(' .. '.join(str(t) for t in report['training_window']))}. K = {report['K']}."
        "</p>",
        _verdicts(report),
        "<h2>Headline</h2>",
        f"<p>Volatility ratio highest / lowest state: "
        f"{_format(headline['volatility_ratio_high_low'])[0]}; Sharpe "
        + ", ".join(f"{k} {_format(v)[0]}" for k, v in headline["sharpe"].items())
        + "</p>",
        table(headline["states_by_volatility"]),
        _dwell_section(report, names),
        _transition_section(report),
        _confidence_section(report, names),
        _ood_section(report),
        _returns_section(report),
        _backtest_section(report),
        "<h2>7. Per symbol</h2>",
        table(figures["per_symbol"]),
        "</body></html>",
    ]
    return "\n".join(parts)
