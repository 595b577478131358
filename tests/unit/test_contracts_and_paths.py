"""Data contracts are typed and immutable; path names are validated before use."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from regimes.answers import UNKNOWN
from regimes.contracts import Bar, FeatureVector, HMMOutput, LatentStateVector
from regimes.errors import BadInputError, UnsafeNameError
from regimes.paths import (
    artifact_dir,
    check_model_id,
    check_symbol,
    inputs_hash,
    make_model_id,
    state_partition_dir,
)

pytestmark = pytest.mark.unit
TS = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def test_bar_is_immutable_and_validated():
    bar = Bar("SYN000", "5m", TS, 10.0, 11.0, 9.5, 10.5, 1000.0)
    assert bar.final_at == TS + timedelta(minutes=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        bar.close = 12.0  # type: ignore[misc]
    gap = Bar("SYN000", "5m", TS, *(float("nan"),) * 4, 0.0, is_gap=True)
    assert gap.is_gap
    partial = Bar("SYN000", "5m", TS, 10.0, 11.0, 9.5, 10.5, 300.0, is_gap=True)
    assert partial.is_gap  # a resampled bar built from too few minutes keeps its prices
    with pytest.raises(BadInputError, match="prices must be finite"):
        Bar("SYN000", "5m", TS, float("nan"), 11.0, 9.5, 10.5, 1.0, is_gap=True)
    for args, message in [
        ((10.0, 9.0, 9.5, 10.0, 1.0), "high < low"),
        ((12.0, 11.0, 9.5, 10.0, 1.0), "open/close outside"),
        ((10.0, 11.0, 9.5, 10.0, -1.0), "volume"),
        ((0.0, 11.0, 9.5, 10.0, 1.0), "> 0"),
    ]:
        with pytest.raises(BadInputError, match=message):
            Bar("SYN000", "5m", TS, *args)
    with pytest.raises(BadInputError, match="UTC"):
        Bar("SYN000", "5m", TS.replace(tzinfo=None), 10.0, 11.0, 9.5, 10.5, 1.0)
    with pytest.raises(BadInputError, match="UTC"):
        Bar("SYN000", "5m", TS.astimezone(timezone(timedelta(hours=2))), 10.0, 11.0, 9.5, 10.5, 1.0)
    with pytest.raises(BadInputError, match="unknown timeframe '2h'"):
        Bar("SYN000", "2h", TS, 10.0, 11.0, 9.5, 10.5, 1.0)


def test_vectors_are_read_only_copies():
    source = np.arange(8, dtype=float)
    z = LatentStateVector("SYN000", "1h", TS, "m1", source)
    source[0] = 99.0
    assert z.z[0] == 0.0 and z.d == 8
    with pytest.raises(ValueError):
        z.z[1] = 5.0
    features = FeatureVector("SYN000", "1h", TS, ("clv", "r5"), [0.1, np.nan], is_warmup=True)
    assert np.isnan(features.as_dict()["r5"])
    with pytest.raises(BadInputError, match="NaN"):
        FeatureVector("SYN000", "1h", TS, ("clv", "r5"), [0.1, np.nan])
    with pytest.raises(BadInputError, match="2 values for 3 names"):
        FeatureVector("SYN000", "1h", TS, ("clv", "r5", "r15"), [0.1, 0.2])


def test_hmm_output_invariants():
    common = dict(
        symbol="SYN000",
        timeframe="1m",
        ts=TS,
        model_id="m1",
        z=np.zeros(6),
        loglik=-3.0,
        entropy=0.5,
    )
    out = HMMOutput(
        **common,
        posterior=[0.7, 0.2, 0.1],
        state_id=0,
        raw_state_id=0,
        state_prob=0.7,
        is_unknown=False,
    )
    assert out.K == 3 and out.d == 6
    unknown = HMMOutput(
        **common,
        posterior=[0.4, 0.3, 0.3],
        state_id=UNKNOWN,
        raw_state_id=0,
        state_prob=0.4,
        is_unknown=True,
        ood_reason="loglik",
    )
    assert unknown.is_unknown
    with pytest.raises(BadInputError, match="summing to 1"):
        HMMOutput(
            **common,
            posterior=[0.7, 0.7],
            state_id=0,
            raw_state_id=0,
            state_prob=0.7,
            is_unknown=False,
        )
    with pytest.raises(BadInputError, match="needs an ood_reason"):
        HMMOutput(
            **common,
            posterior=[0.5, 0.5],
            state_id=-1,
            raw_state_id=0,
            state_prob=0.5,
            is_unknown=True,
        )
    with pytest.raises(BadInputError, match="is_unknown must hold exactly"):
        HMMOutput(
            **common,
            posterior=[0.5, 0.5],
            state_id=-1,
            raw_state_id=0,
            state_prob=0.5,
            is_unknown=False,
        )
    with pytest.raises(BadInputError, match="outside 0..1"):
        HMMOutput(
            **common,
            posterior=[0.5, 0.5],
            state_id=2,
            raw_state_id=0,
            state_prob=0.5,
            is_unknown=False,
        )


UNSAFE = [
    ("", "empty name"),
    ("../etc", "path separator"),
    ("..", "contains '..'"),
    ("a..b", "contains '..'"),
    ("AB/C", "path separator"),
    ("AB\\C", "path separator"),
    ("AB\x00C", "control characters"),
    ("AB\nC", "control characters"),
    ("A" * 65, "at most 64"),
    ("AB C", "only letters"),
    ("A=B", "only letters"),
    (".hidden", "only letters"),
    ("-rf", "only letters"),
    ("AAPL.", "ends with '.'"),
    (12, "expected a string"),
]


@pytest.mark.parametrize("name, message", UNSAFE)
def test_unsafe_symbols_are_refused(name, message):
    with pytest.raises(UnsafeNameError, match=message):
        check_symbol(name)
    with pytest.raises(UnsafeNameError):
        state_partition_dir("states", "1m", "m1", name, date(2024, 1, 2))


@pytest.mark.parametrize("name, message", UNSAFE)
def test_unsafe_model_ids_are_refused(name, message):
    with pytest.raises(UnsafeNameError, match=message):
        check_model_id(name)
    with pytest.raises(UnsafeNameError):
        artifact_dir("models", "1m", name)


@pytest.mark.parametrize("timeframe", ["", "2h", "../1m", "1m/..", "1M", None])
def test_unsafe_timeframes_are_refused(timeframe):
    with pytest.raises(UnsafeNameError, match="timeframe"):
        artifact_dir("models", timeframe, "m1")


def test_safe_names_build_the_layouts():
    for symbol in ("SPY", "BRK.B", "^GSPC", "SYN000", "ES-2024_H"):
        assert check_symbol(symbol) == symbol
    assert artifact_dir("models", "1h", "1h-20240301T0000Z-abcdefabcdef") == Path(
        "models/timeframe=1h/model_id=1h-20240301T0000Z-abcdefabcdef"
    )
    assert state_partition_dir("states", "1d", "m1", "^GSPC", date(2024, 1, 2)) == Path(
        "states/timeframe=1d/model_id=m1/symbol=%5EGSPC/date=2024-01-02"
    )
    assert state_partition_dir("states", "1m", "m1", "X", TS).name == "date=2024-01-02"
    with pytest.raises(UnsafeNameError, match="UTC"):
        state_partition_dir("states", "1m", "m1", "X", TS.replace(tzinfo=None))


def test_model_id_is_derived_from_inputs():
    digest = inputs_hash({"K": 4, "d": 8}, "data-fp", seed=3)
    assert digest == inputs_hash({"d": 8, "K": 4}, "data-fp", seed=3)
    assert digest != inputs_hash({"K": 4, "d": 8}, "data-fp", seed=4)
    assert digest != inputs_hash({"K": 5, "d": 8}, "data-fp", seed=3)
    end = datetime(2024, 3, 1, 21, 0, tzinfo=UTC)
    first = make_model_id("1h", end, digest)
    assert first == make_model_id("1h", end, digest)
    assert first.startswith("1h-20240301T2100Z-") and check_model_id(first) == first
    with pytest.raises(UnsafeNameError, match="UTC"):
        make_model_id("1h", end.replace(tzinfo=None), digest)


# --------------------------------------------------------------------------- answer schema


def test_every_answer_table_is_derived_from_the_one_schema():
    from sqlalchemy import Boolean, Float, Integer, String

    from regimes.answers import (
        ANSWER_FIELDS,
        CURRENT_STATE_COLUMNS,
        STORED_FIELDS,
        answer_fields,
        field_named,
    )
    from regimes.data.sql import current_states
    from regimes.storage.state_table import REQUIRED_COLUMNS, STATE_SCHEMA

    stored = [f.name for f in STORED_FIELDS]
    assert STATE_SCHEMA.names == [*stored, "date"]
    for field in STORED_FIELDS:
        assert STATE_SCHEMA.field(field.name).nullable == field.nullable, field.name
    assert set(REQUIRED_COLUMNS) | {f"z_{k:02d}" for k in range(16)} | {
        f"p_{k:02d}" for k in range(16)
    } == set(stored)
    assert [c.name for c in current_states.columns] == [*CURRENT_STATE_COLUMNS, "updated_at"]
    sql_types = {"string": String, "int64": Integer, "float64": Float, "bool": Boolean}
    for name in CURRENT_STATE_COLUMNS:
        dtype = field_named(name).dtype
        if dtype in sql_types:
            assert isinstance(current_states.c[name].type, sql_types[dtype]), name
    # label is part of an answer (the API returns it) but derived, never stored.
    assert "label" in [f.name for f in ANSWER_FIELDS] and "label" not in stored
    names = [f.name for f in answer_fields(d=2, K=3)]
    assert names[:6] == ["symbol", "ts", "timeframe", "model_id", "z_00", "z_01"]
    assert "z_02" not in names and "p_02" in names and "p_03" not in names
    assert "label" in [f.name for f in answer_fields(d=2, K=3, stored_only=False)]


def test_an_answer_field_refuses_an_unknown_type_and_name():
    from regimes.answers import AnswerField, field_named

    with pytest.raises(ValueError, match="dtype 'float32'"):
        AnswerField("x", "float32", True, "a value")
    with pytest.raises(KeyError, match="no answer field 'stateid'"):
        field_named("stateid")


def test_unknown_is_defined_once_in_the_core():
    import re

    from tests.conftest import REPO_ROOT

    definitions = [
        f"{path.relative_to(REPO_ROOT)}: {line.strip()}"
        for path in sorted((REPO_ROOT / "platform" / "regimes").rglob("*.py"))
        for line in path.read_text().splitlines()
        if re.match(r"\s*UNKNOWN\w*\s*=", line)
    ]
    assert definitions == ["platform/regimes/answers.py: UNKNOWN = -1"]
