"""The runnable examples in the public docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

pytestmark = pytest.mark.unit

MODULES = [
    "regimes.timeframes",
    "regimes.paths",
    "regimes.config.loading",
    "regimes.data.synth",
    "regimes.features.batch",
    "regimes.features.online",
    "regimes.model.scaling",
    "regimes.model.encoders.pca",
    "regimes.model.hmm.evaluation",
    "regimes.model.artifact",
    "regimes.storage.state_store",
    "regimes.storage.registry",
    "regimes.config.settings",
    "regimes.live.sync",
    "regimes.validation.spells",
    "regimes.validation.dwell",
    "regimes.validation.transitions",
    "regimes.validation.bootstrap",
    "regimes.validation.returns",
    "regimes.validation.periods",
    "regimes.validation.svg",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
