"""Deployment files: the Dockerfile passes hadolint, the systemd unit passes systemd-analyze."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        if IN_CI and name == "hadolint":
            pytest.fail(f"{name} is missing under CI")
        pytest.skip(f"{name} is not installed here")
    return found


def test_dockerfile_passes_hadolint() -> None:
    """hadolint finds nothing to complain about in the Dockerfile."""
    result = subprocess.run(
        [tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_addon_dockerfile_passes_hadolint() -> None:
    """The Home Assistant add-on's Dockerfile passes hadolint too."""
    result = subprocess.run(
        [tool("hadolint"), str(ROOT / "ha-addon" / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit (ExecStart pointed at this install)."""
    analyze = tool("systemd-analyze")
    unit = (ROOT / "systemd" / "ownerlink.service").read_text()
    ownerlink = Path(sys.executable).parent / "ownerlink"
    if not ownerlink.exists():
        pytest.skip("the ownerlink console script is not installed in this environment")
    path = tmp_path / "ownerlink.service"
    path.write_text(unit.replace("/usr/local/bin/ownerlink", str(ownerlink)))
    result = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_has_the_hardening_we_promise() -> None:
    """The unit keeps its sandboxing settings (a regression here is a security regression)."""
    unit = (ROOT / "systemd" / "ownerlink.service").read_text()
    for setting in (
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=ownerlink",
        "ConfigurationDirectory=ownerlink",
        "Restart=on-failure",
        "RestrictAddressFamilies=",
        "CapabilityBoundingSet=",
    ):
        assert setting in unit


def test_addon_manifest_is_valid() -> None:
    """The add-on manifest parses and names the architectures and options Home Assistant needs."""
    manifest = yaml.safe_load((ROOT / "ha-addon" / "config.yaml").read_text())
    for key in ("name", "version", "slug", "description", "arch", "options", "schema"):
        assert key in manifest
    assert {"aarch64", "amd64"} <= set(manifest["arch"])
