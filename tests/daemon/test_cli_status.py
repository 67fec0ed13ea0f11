"""`ownerlink status` charges the daemon's persisted budget and shows it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from bridge.cli import main
from bridge.config import load_config
from bridge.demo.broker import DemoBroker
from bridge.demo.run import demo_config, login
from bridge.simulator import SimClock, Simulator, serve_in_thread


def test_status_is_charged_to_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each CLI read is one call in the persisted budget, and `status --json` reports the budget."""
    sim = Simulator(vehicles=1, seed=5, auto_consent=True, admin=True, clock=SimClock(speed=1))
    with serve_in_thread(sim) as url:
        vehicle_id = sim.vehicles[0].vehicle_id
        document = demo_config(
            tmp_path / "state", url, DemoBroker("127.0.0.1", 1, "test"), 0, {"car": vehicle_id}
        )
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(document))
        settings = load_config(path)
        asyncio.run(login(settings))
        capsys.readouterr()
        assert main(["status", "car", "--json", "--config", str(path)]) == 0
        first = json.loads(capsys.readouterr().out)
        assert main(["status", "car", "--json", "--config", str(path)]) == 0
        second = json.loads(capsys.readouterr().out)
    assert "vin" not in json.dumps(second).lower()
    assert second["budget"]["calls_used_today"] == first["budget"]["calls_used_today"] + 1
