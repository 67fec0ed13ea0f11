"""The counters are ours; prometheus_client is loaded by the first scrape (it costs ~1 MB)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.metrics import Metrics

FIRST_SCRAPE = """
import asyncio, sys
import bridge.cli.run, bridge.daemon, bridge.metrics
assert "prometheus_client" not in sys.modules, "loaded with the daemon"
metrics = bridge.metrics.Metrics()
metrics.polls.labels("ev").inc()
metrics.commands.labels("refused", "malformed").inc(40)
assert "prometheus_client" not in sys.modules, "loaded by counting"
asyncio.run(metrics.load())
print(metrics.render().decode())
"""


def test_the_daemon_loads_prometheus_client_only_for_the_first_scrape() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FIRST_SCRAPE],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert 'ownerlink_polls_total{vehicle="ev"} 1.0' in done.stdout
    assert 'ownerlink_commands_total{decision="refused",reason="malformed"} 40.0' in done.stdout


def test_counters_render_as_prometheus_counters() -> None:
    """`_total` and `_created` per label set, HELP and TYPE for every family, even unused."""
    metrics = Metrics()
    metrics.polls.labels("ev").inc()
    metrics.polls.labels("ev").inc(2)
    metrics.provider_calls.labels("home", "read").inc()
    text = metrics.render().decode()
    assert 'ownerlink_polls_total{vehicle="ev"} 3.0' in text
    assert 'ownerlink_polls_created{vehicle="ev"} ' in text
    assert 'ownerlink_provider_calls_total{account="home",kind="read"} 1.0' in text
    assert "# TYPE ownerlink_provider_errors_total counter" in text
    assert "ownerlink_provider_errors_total{" not in text


def test_a_wrong_number_of_labels_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"ownerlink_polls takes labels \('vehicle',\)"):
        Metrics().polls.labels("ev", "extra")
