"""Shared pytest fixtures. Everything runs offline: models are built with rlkd_bench.tiny."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own request cache unless it sets one itself."""
    monkeypatch.setenv("RLKD_CACHE_DIR", str(tmp_path_factory.mktemp("rlkd-cache")))
