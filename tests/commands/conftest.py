"""What the end-to-end modules share. Each module serves its own simulator as `served`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.simulator import Simulator
from tests.conftest import BrokerAddress


@pytest.fixture
def settings_args(
    tmp_path: Path, served: tuple[Simulator, str], broker: BrokerAddress, base_topic: str
) -> dict[str, Any]:
    sim, base = served
    return {
        "state_dir": tmp_path / "state",
        "base": base,
        "sim": sim,
        "broker": broker,
        "base_topic": base_topic,
    }
