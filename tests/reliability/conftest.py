"""Fixtures for the reliability suites: a seeded random source and a figures recorder.

`benchmarks/reliability.py` runs the soak versions with RELIABILITY_FIGURES_DIR set; each test
writes the figures it measured there as `<test name>.json`, and the script turns them into
docs/reliability.md. Without the variable the figures are only attached to the test report.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FIGURES_ENV = "RELIABILITY_FIGURES_DIR"
SEED_ENV = "RELIABILITY_SEED"


class Figures(dict[str, Any]):
    """What a run measured, written out when the test ends (pass or fail)."""


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    recorded = Figures()
    started = time.monotonic()
    yield recorded
    recorded.setdefault("wall_s", round(time.monotonic() - started, 1))
    request.node.user_properties.append(("figures", recorded))
    folder = os.environ.get(FIGURES_ENV)
    if folder:
        path = Path(folder) / f"{request.node.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(recorded, indent=2, sort_keys=True, default=str))


@pytest.fixture
def chaos_random(figures: Figures) -> random.Random:
    """A seeded Random for fault moments; the seed is in the figures (and RELIABILITY_SEED)."""
    seed = int(os.environ.get(SEED_ENV) or time.time_ns() % 1_000_000)
    figures["seed"] = seed
    return random.Random(seed)
