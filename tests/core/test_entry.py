"""The `ownerlink` executable keeps out what no command uses (see `bridge.cli.NOT_USED`)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from bridge.cli import entry
sys.argv = ["ownerlink", "config", "--help"]
try:
    entry()
except SystemExit:
    pass
import httpx, structlog
import bridge.daemon
httpx.Client().close()
print(json.dumps(sorted(m for m in ("rich", "pygments", "httpx._main") if sys.modules.get(m))))
"""


def test_the_executable_never_loads_rich_or_httpx_command_line() -> None:
    """Every command module is imported (as `ownerlink` does), the daemon too, httpx works, and
    neither rich, pygments nor httpx's command line is in the process."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_python_dash_m_bridge_goes_through_the_same_entry() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("ownerlink ")
