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
        "StateDirectoryMode=0700",
        "User=ownerlink",
        "Restart=on-failure",
        "RestrictAddressFamilies=",
        "CapabilityBoundingSet=",
        "SystemCallErrorNumber=EPERM",
    ):
        assert setting in unit
    # A dynamic user could not read the root-owned config the install guide tells owners to
    # make (0640, group ownerlink), nor share the state with `sudo -u ownerlink ownerlink …`.
    assert "DynamicUser=yes" not in unit


def test_the_install_guide_makes_what_the_unit_needs() -> None:
    """The user the unit runs as, the state directory it owns and a config it can read."""
    guide = (ROOT / "docs" / "install-raspberry-pi.md").read_text()
    for step in (
        "useradd --system",
        "-o ownerlink -g ownerlink /var/lib/ownerlink",
        "-g ownerlink /etc/ownerlink",
        "sudo -u ownerlink ownerlink login",
    ):
        assert step in guide
    assert "DynamicUser" not in guide and "systemd-run" not in guide


def _unit_setting(unit: str, key: str) -> str:
    (value,) = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(f"{key}=")]
    return value


def test_the_config_file_alone_sets_the_state_directory() -> None:
    """The unit sets no OWNERLINK_* variable: one there overrode the file's state_dir for the
    daemon only, while commands run by hand (`sudo -u ownerlink ownerlink …`) used the file's.
    The directory it makes writable is the example's and the default state_dir."""
    from bridge.config import Settings, load_config

    unit = (ROOT / "systemd" / "ownerlink.service").read_text()
    settings = [line for line in unit.splitlines() if line.startswith("Environment=OWNERLINK_")]
    assert settings == []
    made = Path("/var/lib") / _unit_setting(unit, "StateDirectory")
    assert load_config(ROOT / "config.example.yaml").state_dir == made
    assert Settings.model_fields["state_dir"].default == made


def _shell_lines(markdown: str) -> list[str]:
    """The lines of the document's ```sh blocks, continuation lines joined."""
    lines, inside = [], False
    for line in markdown.replace("\\\n", " ").splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```sh"
        elif inside:
            lines.append(line.split("  #")[0].strip())
    return lines


@pytest.mark.parametrize("document", ["README.md", "docs/install-raspberry-pi.md"])
def test_the_config_is_installed_where_the_daemon_can_read_it(document: str) -> None:
    """Each `install … /etc/ownerlink/config.yaml` works on a fresh machine (its folder made
    first, or -D) and gives the file 0640 to the group the unit runs as."""
    unit = (ROOT / "systemd" / "ownerlink.service").read_text()
    group = _unit_setting(unit, "Group")
    lines = _shell_lines((ROOT / document).read_text())
    installs = [
        n
        for n, line in enumerate(lines)
        if "install " in line and line.endswith(" /etc/ownerlink/config.yaml")
    ]
    assert installs, f"{document} installs no config"
    for n in installs:
        words = lines[n].split()
        folder_made = "-D" in words or any(
            line.endswith(" /etc/ownerlink") and (" -d " in line or "mkdir" in line)
            for line in lines[:n]
        )
        assert folder_made, f"{document}: {lines[n]!r} runs before /etc/ownerlink exists"
        assert "-m 0640" in lines[n] and f"-g {group}" in lines[n], lines[n]


def test_addon_manifest_is_valid() -> None:
    """The add-on manifest parses and names the architectures and options Home Assistant needs."""
    manifest = yaml.safe_load((ROOT / "ha-addon" / "config.yaml").read_text())
    for key in ("name", "version", "slug", "description", "arch", "options", "schema"):
        assert key in manifest
    assert {"aarch64", "amd64"} <= set(manifest["arch"])


def test_the_scripts_mend_a_virtualenv_left_without_pip(tmp_path: Path) -> None:
    """Where venv's pip is packaged apart (Debian, Ubuntu: python3-venv), a first `scripts/demo`
    fails half-way and leaves .venv/bin/python without pip; every later run took that for a
    ready .venv and failed with "No module named pip". scripts/venv (which demo and bootstrap
    run first) now gives such a .venv its pip, and leaves a working one alone."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "venv", tmp_path / "scripts" / "venv")
    venv_python = tmp_path / ".venv" / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True
    )

    def has_pip() -> bool:
        command = [venv_python, "-m", "pip", "--version"]
        answer = subprocess.run(command, capture_output=True, check=False)
        return answer.returncode == 0

    assert not has_pip()
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", "scripts/venv"], cwd=tmp_path, env=env, check=True, timeout=300)
    assert has_pip()
    marker = tmp_path / ".venv" / "kept"
    marker.write_text("")
    subprocess.run(["bash", "scripts/venv"], cwd=tmp_path, env=env, check=True, timeout=60)
    assert marker.exists() and has_pip()
    for script in ("demo", "bootstrap"):
        assert "bash scripts/venv\n" in (ROOT / "scripts" / script).read_text(), script


def test_the_unit_and_the_image_set_the_threshold_the_daemon_would_pin() -> None:
    """Set there, `ownerlink run` leaves it alone and need not load ctypes to set it."""
    from bridge.malloc import THRESHOLD

    expected = f"MALLOC_MMAP_THRESHOLD_={THRESHOLD}"
    unit = (ROOT / "systemd" / "ownerlink.service").read_text()
    assert f"Environment={expected}" in unit.splitlines()
    image = (ROOT / "Dockerfile").read_text()
    assert f"    {expected}" in image.splitlines()


def test_a_python_the_machine_lacks_is_skipped_not_failed(tmp_path: Path) -> None:
    """CI runs scripts/test-pythons after the full suite; a machine without Python 3.12 or 3.13
    (neither on PATH nor from pyenv) must still pass CI, saying what it skipped. A python3.12
    that cannot even start counts as missing, so the run never tries to build a venv with it."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "test-pythons", tmp_path / "scripts" / "test-pythons")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    broken = bin_dir / "python3.12"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    # dirname is all the script calls before it looks for Pythons.
    (bin_dir / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    answer = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "scripts/test-pythons"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    assert "Python 3.12 is not installed here; skipped" in answer.stdout
    assert "Python 3.13 is not installed here; skipped" in answer.stdout
    assert not (tmp_path / ".venv312").exists()
