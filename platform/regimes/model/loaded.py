"""A model artifact resolved into everything that shapes its answers, verified in one place.

:meth:`LoadedModel.load` is the only reader of a model directory that inference needs:
it verifies the whole artifact (checksums, and the HMAC signature when
``REGIMES_ARTIFACT_KEY`` is set) through :mod:`regimes.model.artifact`, refuses an
artifact of another format version, checks the stored feature spec against the
fingerprint recorded at training, and rebuilds the state-vector pipeline from
``scaler.pkl`` and ``encoder.pkl``. Nothing is taken from today's ``config/``: an
edited config changes new models only, and :meth:`LoadedModel.differences_from` says
how today's config differs from the one a model was trained with.

What a model directory holds, and where each setting lives::

    metadata.json         format_version, model_id, timeframe, feature names, OOD threshold,
                          anti-chatter, state labels, state TTL, metrics, sha256 of each file
    feature_spec.yaml     the feature spec (formulas, windows, stationarity)
    resolved_config.json  session, the timeframe's config (OOD windows, feature selection,
                          seasonal), preprocessing, and the pipeline's own state (encoder
                          kind, L, features)
    scaler.pkl, encoder.pkl, hmm.pkl, encoder.onnx
    seasonal.pkl          the seasonal adjuster, when the model has one (format 3)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from regimes.config.loading import PlatformConfig, format_validation_error
from regimes.config.spec import FeatureSpec
from regimes.config.timeframes import AntiChatter, OODConfig, Session, TimeframeConfig
from regimes.data.calendars import MarketCalendar
from regimes.data.markets import SymbolCalendars, calendars_from_dict
from regimes.errors import ArtifactIntegrityError
from regimes.features.selection import selected_features
from regimes.model.artifact import METADATA_FILE, load_pickle, read_file, verify_artifact
from regimes.model.pipeline import StateVectorPipeline
from regimes.model.seasonal import SeasonalAdjuster
from regimes.timeframes import parse_duration

FORMAT_VERSION = 3
"""Layout of a model directory this code writes (``format_version`` in
``metadata.json``). Version 3 may hold ``seasonal.pkl`` (the seasonal adjuster, applied
right after the scaler); a reader of version 2 would ignore it and answer differently,
so it must refuse these. Version 1 (no ``format_version``) pickled the whole pipeline
with the training config inside it; such models must be retrained."""
READABLE_FORMATS = frozenset({2, FORMAT_VERSION})
"""Versions this code loads: a version-2 artifact has no seasonal adjustment and answers
exactly as it did."""

FEATURE_SPEC_FILE = "feature_spec.yaml"
RESOLVED_CONFIG_FILE = "resolved_config.json"
SCALER_FILE = "scaler.pkl"
ENCODER_FILE = "encoder.pkl"
HMM_FILE = "hmm.pkl"
SEASONAL_FILE = "seasonal.pkl"


@dataclass(frozen=True)
class LoadedModel:
    """A verified model artifact and every setting that shapes its answers.

    Build one with :meth:`load`; the engine (:class:`regimes.live.engine.InferenceEngine`)
    runs from it alone.

    Attributes
    ----------
    path : Path
        The artifact directory.
    metadata : Mapping
        The verified ``metadata.json``.
    model_id, timeframe : str
    feature_spec : FeatureSpec
        The spec the model was trained with (``feature_spec.yaml``).
    session : Session or None
        The trading session bars were aligned to at training.
    feature_names : tuple of str
        The features the online buffer computes (the timeframe's selection at training).
    pipeline : StateVectorPipeline
        Scaler (+ seasonal adjuster) + encoder, rebuilt from ``scaler.pkl``,
        ``seasonal.pkl`` (when present) and ``encoder.pkl``.
    hmm : RegimeHMM
    ood_threshold : float
        The calibrated log-likelihood threshold.
    ood : OODConfig
        Trailing-window OOD settings.
    anti_chatter : AntiChatter
    labels : dict of int to str
        Human names of the states.
    state_ttl : timedelta
        How long an answer stays current.
    timeframe_config : TimeframeConfig
        The timeframe's settings at training, as stored in ``resolved_config.json``.
    """

    path: Path
    metadata: Mapping[str, Any] = field(repr=False)
    model_id: str
    timeframe: str
    feature_spec: FeatureSpec = field(repr=False)
    session: Session | MarketCalendar | SymbolCalendars | None = field(repr=False)
    feature_names: tuple[str, ...] = field(repr=False)
    pipeline: StateVectorPipeline = field(repr=False)
    hmm: Any = field(repr=False)
    ood_threshold: float
    ood: OODConfig
    anti_chatter: AntiChatter
    labels: dict[int, str] = field(repr=False)
    state_ttl: timedelta
    timeframe_config: TimeframeConfig = field(repr=False)

    @property
    def d(self) -> int:
        """Latent dimension of z_t."""
        return self.pipeline.d

    @property
    def K(self) -> int:
        """Number of HMM states."""
        return self.hmm.K

    @classmethod
    def load(cls, path: str | Path) -> LoadedModel:
        """Verify the artifact at ``path`` and resolve it.

        Parameters
        ----------
        path : str or Path
            A model directory written by :func:`regimes.training.train.train_timeframe`.

        Returns
        -------
        LoadedModel

        Raises
        ------
        ArtifactIntegrityError
            If any file fails its checksum (or the signature, with a key set), the
            artifact is of another format version (the message says to retrain), or the
            feature spec or a setting does not parse or does not match its recorded
            fingerprint; the message names the file.
        """
        directory = Path(path)
        metadata = verify_artifact(directory)
        _check_format(directory, metadata)
        spec = _feature_spec(directory, metadata)
        resolved_path = directory / RESOLVED_CONFIG_FILE
        resolved = _json_object(read_file(directory, RESOLVED_CONFIG_FILE, metadata), resolved_path)
        metadata_path = directory / METADATA_FILE
        with _malformed(resolved_path):
            session = (
                None if resolved["session"] is None else Session.model_validate(resolved["session"])
            )
            if "markets" in resolved:  # a market calendar shaped the model (not the session)
                session = calendars_from_dict(resolved["markets"])
            timeframe_config = _timeframe_config(resolved["timeframe_config"])
            own_state = resolved["pipeline"]
        with _malformed(metadata_path):
            anti_chatter = AntiChatter.model_validate(metadata["anti_chatter"])
            labels = {int(state): str(name) for state, name in metadata["state_labels"].items()}
            state_ttl = parse_duration(metadata["state_ttl"])
            ood_threshold = float(metadata["ood_threshold"])
            model_id, timeframe = str(metadata["model_id"]), str(metadata["timeframe"])
            feature_names = list(metadata["feature_names"])
        pipeline = StateVectorPipeline.from_parts(
            spec,
            own_state,
            load_pickle(directory, SCALER_FILE, metadata),
            load_pickle(directory, ENCODER_FILE, metadata),
            seasonal=_seasonal(directory, metadata),
            calendar=session,
        )
        if pipeline.features_ != feature_names:
            raise ArtifactIntegrityError(
                f"{resolved_path}: pipeline features {pipeline.features_} differ from "
                f"feature_names {feature_names} in {METADATA_FILE}"
            )
        return cls(
            path=directory,
            metadata=metadata,
            model_id=model_id,
            timeframe=timeframe,
            feature_spec=spec,
            session=session,
            feature_names=selected_features(spec, timeframe_config),
            pipeline=pipeline,
            hmm=load_pickle(directory, HMM_FILE, metadata),
            ood_threshold=ood_threshold,
            ood=timeframe_config.ood,
            anti_chatter=anti_chatter,
            labels=labels,
            state_ttl=state_ttl,
            timeframe_config=timeframe_config,
        )

    def differences_from(self, config: PlatformConfig) -> list[str]:
        """Every setting shaping this model's answers that today's ``config`` sets otherwise.

        The model keeps answering with its own settings; this only says what a model
        trained today would do differently. Each entry reads
        ``"<field>: model <value>, config <value>"``, e.g.
        ``"features.rv_15.windows.n: model 15, config 5"``; an empty list means the
        config still matches.
        """
        tf = self.timeframe
        today = config.timeframe(tf)
        pairs = {
            "features": (_spec_settings(self.feature_spec), _spec_settings(config.features)),
            **_calendar_pairs(self.session, config),
            f"timeframes.{tf}.anti_chatter": (self.anti_chatter, today.anti_chatter),
            f"timeframes.{tf}.ood": (self.ood, today.ood),
            f"timeframes.{tf}.features": (
                list(self.feature_names),
                list(selected_features(config.features, today)),
            ),
            f"timeframes.{tf}.state_ttl": (self.state_ttl, today.state_ttl),
            f"timeframes.{tf}.seasonal": (self.timeframe_config.seasonal, today.seasonal),
        }
        found: list[str] = []
        for prefix, (ours, theirs) in pairs.items():
            mine, other = _flatten(_plain(ours), prefix), _flatten(_plain(theirs), prefix)
            for key in sorted(set(mine) | set(other)):
                if mine.get(key) != other.get(key):
                    found.append(f"{key}: model {mine.get(key)!r}, config {other.get(key)!r}")
        return found


# --------------------------------------------------------------------------- helpers


def _check_format(directory: Path, metadata: Mapping[str, Any]) -> None:
    version = metadata.get("format_version")
    if isinstance(version, bool) or version not in READABLE_FORMATS:
        shown = "no format version" if version is None else f"format version {version!r}"
        raise ArtifactIntegrityError(
            f"{directory / METADATA_FILE}: model {metadata.get('model_id', directory.name)} has "
            f"{shown}, this regimes reads formats {sorted(READABLE_FORMATS)}; retrain it "
            f"(`regimes train --timeframe {metadata.get('timeframe', '<tf>')}`)"
        )


def _seasonal(directory: Path, metadata: Mapping[str, Any]):
    """The stored seasonal adjuster, or None (format 2, or a model trained without one)."""
    if SEASONAL_FILE not in metadata.get("files", {}):
        return None
    if metadata.get("format_version") == 2:
        raise ArtifactIntegrityError(
            f"{directory / METADATA_FILE}: a format-2 artifact cannot hold {SEASONAL_FILE}"
        )
    adjuster = load_pickle(directory, SEASONAL_FILE, metadata)
    if not isinstance(adjuster, SeasonalAdjuster):
        raise ArtifactIntegrityError(
            f"{directory / SEASONAL_FILE}: expected a SeasonalAdjuster, got "
            f"{type(adjuster).__name__}"
        )
    return adjuster


def _feature_spec(directory: Path, metadata: Mapping[str, Any]) -> FeatureSpec:
    path = directory / FEATURE_SPEC_FILE
    try:
        data = yaml.safe_load(read_file(directory, FEATURE_SPEC_FILE, metadata))
        spec = FeatureSpec.model_validate(data)
    except yaml.YAMLError as exc:
        raise ArtifactIntegrityError(f"{path}: not valid YAML ({exc})") from None
    except ValidationError as exc:
        raise ArtifactIntegrityError(format_validation_error(str(path), exc)) from None
    recorded = metadata.get("versions", {}).get("feature_spec_sha256")
    if spec.fingerprint() != recorded:
        raise ArtifactIntegrityError(
            f"{path}: fingerprint {spec.fingerprint()} does not match {recorded} recorded in "
            f"{METADATA_FILE}"
        )
    return spec


def _timeframe_config(stored: dict[str, Any]) -> TimeframeConfig:
    # The stored copy is pydantic's JSON dump, which writes durations as ISO 8601
    # ("PT1H"); the config file's own validator reads only the short form ("1h").
    ttl = TypeAdapter(timedelta).validate_python(stored["state_ttl"])
    return TimeframeConfig.model_validate({**stored, "state_ttl": ttl})


def _json_object(data: bytes, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactIntegrityError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ArtifactIntegrityError(f"{path}: expected a JSON object")
    return value


@contextmanager
def _malformed(path: Path):
    """Turn a missing key or an invalid setting read from ``path`` into one clear error."""
    try:
        yield
    except ValidationError as exc:
        raise ArtifactIntegrityError(format_validation_error(str(path), exc)) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactIntegrityError(f"{path}: malformed setting ({exc!r})") from None


def _spec_settings(spec: FeatureSpec) -> dict[str, Any]:
    """The spec as ``{feature: definition, "version": n}`` (names read ``features.rv_15...``)."""
    dump = spec.model_dump(mode="json")
    return {**dump["features"], "version": dump["version"]}


def _calendar_pairs(calendar, config: PlatformConfig) -> dict[str, tuple]:
    """(model, config) pairs of the calendar settings that shaped a model."""
    if calendar is None or isinstance(calendar, Session):
        return {"timeframes.session": (calendar, config.timeframes.session)}
    calendars = (
        list(calendar.calendars.values()) if isinstance(calendar, SymbolCalendars) else [calendar]
    )
    pairs: dict[str, tuple] = {}
    for item in calendars:
        if isinstance(item, MarketCalendar):
            today = config.markets.markets.get(item.name)
            pairs[f"markets.{item.name}"] = (item.config, today)
        else:
            pairs["timeframes.session"] = (item, config.timeframes.session)
    return pairs


def _plain(value: Any) -> Any:
    """JSON-ready form of a setting (pydantic models dumped, durations as seconds)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"<prefix>.a.b": 1}``; lists and scalars are leaves."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flatten(item, f"{prefix}.{key}"))
    return out
