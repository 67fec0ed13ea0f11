"""Pure parts of access: input checks, grants, password hashes, dynsec plans, acl rendering."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.access import validation
from bridge.access.aclfile import render_acl, render_passwords
from bridge.access.broker import BrokerIdentity
from bridge.access.dynsec_plan import (
    Acl,
    find_drift,
    plan_client,
    plan_role,
    role_acls,
    role_name,
)
from bridge.access.grants import allowed_actions, app_grant, describe_topics
from bridge.access.passwords import generate_password, mosquitto_hash, verify_mosquitto_hash
from bridge.errors import AccessError
from bridge.model import App, Command, Scope
from bridge.mqtt.topics import Topics

TOPICS = Topics(base="ol", discovery_prefix="ha")


def app(app_id: str = "nr", *scopes: Scope, **kw: object) -> App:
    return App(
        id=app_id,
        name=app_id,
        scopes=frozenset(scopes),
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        **kw,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "a#", "has space", "x" * 65, "é"])
def test_app_ids_that_could_match_other_topics_are_refused(bad: str) -> None:
    """Ids with wildcards, slashes, spaces or over 64 characters are refused."""
    with pytest.raises(AccessError, match="invalid app id"):
        validation.check_app_id(bad)


@pytest.mark.parametrize("reserved", ["owner", "ownerlink", "Admin", "mydaemon"])
def test_reserved_ids_are_refused(reserved: str) -> None:
    """The owner's, the admin's and the daemon's logins can never be an app."""
    with pytest.raises(AccessError, match="reserved"):
        validation.check_app_id(reserved, reserved=["mydaemon"])


def test_valid_ids_pass() -> None:
    """Letters, digits, dash and underscore up to 64 characters are accepted."""
    assert validation.check_app_id("Node-RED_2") == "Node-RED_2"
    assert validation.check_app_id("a" * 64) == "a" * 64


def test_unknown_scope_names_the_valid_ones() -> None:
    """An unknown scope is an error that lists what would have been accepted."""
    with pytest.raises(AccessError, match=r"unknown scope 'read:vin'.*read:status"):
        validation.parse_scopes(["read:status", "read:vin"])


def test_location_needs_the_explicit_flag() -> None:
    """read:location without allow_location is refused; with it, accepted."""
    with pytest.raises(AccessError, match="opt-in"):
        validation.check_location_opt_in(frozenset({Scope.READ_LOCATION}), allow_location=False)
    validation.check_location_opt_in(frozenset({Scope.READ_LOCATION}), allow_location=True)


def test_cidrs_are_normalised_and_bad_ones_refused() -> None:
    """CIDRs are canonicalised and deduplicated; a malformed one is an error."""
    assert validation.normalise_cidrs(["192.168.1.7/24", "192.168.1.0/24", "::1"]) == (
        "192.168.1.0/24",
        "::1/128",
    )
    with pytest.raises(AccessError, match="invalid CIDR"):
        validation.normalise_cidrs(["300.1.1.1/8"])


def test_grant_follows_read_scopes_only() -> None:
    """An app reads the bridge's state and audit head, its own results and alerts and only the
    state its scopes allow; never the owner's alert feed, which names other apps."""
    grant = app_grant(app("nr", Scope.READ_STATUS), TOPICS)
    assert grant.read == (
        "ol/bridge/state",
        "ol/bridge/audit_head",
        "ol/app/nr/#",
        "ol/+/availability",
        "ol/+/budget",
        "ol/+/status",
    )
    assert grant.write == ()


def test_lock_and_unlock_share_one_topic() -> None:
    """Either lock scope opens the `lock` topic; the actions tell them apart."""
    grant = app_grant(app("nr", Scope.COMMAND_UNLOCK, Scope.COMMAND_CHARGE), TOPICS)
    assert grant.write == ("ol/app/nr/+/cmd/lock", "ol/app/nr/+/cmd/charge")
    assert allowed_actions(Command.LOCK, frozenset({Scope.COMMAND_UNLOCK})) == ("UNLOCK",)


def test_home_assistant_app_gets_discovery_and_disabled_app_nothing() -> None:
    """The HA app reads the discovery prefix and writes its status; a disabled app gets nothing."""
    ha = app_grant(app("ha", home_assistant=True), TOPICS)
    assert "ha/#" in ha.read and ha.write == ("ha/status",)
    assert "ol/bridge/event" in ha.read  # the `Alerts` entity: HA is the owner's home
    off = app_grant(app("nr", Scope.READ_STATUS, enabled=False), TOPICS)
    assert off.read == () and off.write == ()


def test_describe_topics_shows_vehicle_placeholder_and_actions() -> None:
    """The CLI listing names `<vehicle>` and the actions each command topic allows."""
    lines = describe_topics(app("nr", Scope.COMMAND_LOCK), TOPICS)
    assert ("publish", "ol/app/nr/<vehicle>/cmd/lock", "LOCK") in lines


def test_our_hash_matches_mosquitto_passwd_format(tmp_path: Path) -> None:
    """A hash made by mosquitto_passwd verifies with our code, and ours has the same shape."""
    passwd = tmp_path / "pw"
    try:
        subprocess.run(
            ["mosquitto_passwd", "-c", "-b", str(passwd), "u", "s3cret"],
            check=True,
            capture_output=True,
        )
    except FileNotFoundError:
        pytest.skip("mosquitto_passwd is not installed")
    theirs = passwd.read_text().strip().split(":", 1)[1]
    assert verify_mosquitto_hash("s3cret", theirs)
    assert not verify_mosquitto_hash("wrong", theirs)
    ours = mosquitto_hash("s3cret")
    assert ours.split("$")[1:3] == theirs.split("$")[1:3]  # `7`, 101 iterations
    assert verify_mosquitto_hash("s3cret", ours)


def test_generated_passwords_are_long_and_distinct() -> None:
    """Broker passwords carry 192 random bits and never repeat."""
    passwords = {generate_password() for _ in range(50)}
    assert len(passwords) == 50 and all(len(p) == 32 for p in passwords)


def test_role_denies_everything_else_below_its_allows() -> None:
    """Each role carries catch-all denies at a lower priority than its allows."""
    acls = role_acls(app_grant(app("nr", Scope.READ_STATUS), TOPICS), TOPICS)
    assert Acl("publishClientReceive", "ol/+/status", True) in acls
    assert Acl("publishClientReceive", "ol/#", False, -1) in acls
    assert Acl("subscribePattern", "ha/#", False, -1) in acls


def test_plan_role_reports_shrinking_access() -> None:
    """Removing an allow is flagged (the client is then kicked); adding one is not."""
    old = role_acls(app_grant(app("nr", Scope.READ_STATUS, Scope.READ_LOCATION), TOPICS), TOPICS)
    new = role_acls(app_grant(app("nr", Scope.READ_STATUS), TOPICS), TOPICS)
    plan, shrank = plan_role("r", new, old)
    assert shrank and {s.command["command"] for s in plan.steps} == {"removeRoleACL"}
    plan, shrank = plan_role("r", old, new)
    assert not shrank and {s.command["command"] for s in plan.steps} == {"addRoleACL"}


def test_plan_client_kicks_by_disable_then_enable() -> None:
    """A kick is disableClient followed by enableClient; a missing client is reported."""
    plan = plan_client(
        "nr",
        role_name("nr"),
        {"username": "nr", "roles": [{"rolename": role_name("nr")}]},
        enabled=True,
        kick=True,
    )
    assert [s.command["command"] for s in plan.steps] == ["disableClient", "enableClient"]
    assert plan_client("nr", "r", None, enabled=True, kick=False).missing == ["nr"]


def test_drift_finds_hand_made_clients_with_app_roles() -> None:
    """Clients holding an app's role, or marked as ours, but unknown to the registry are drift."""
    clients = [
        {"username": "nr", "roles": [{"rolename": role_name("nr")}]},
        {"username": "sneaky", "roles": [{"rolename": role_name("nr")}]},
        {"username": "ghost", "textname": "Ownerlink app: ghost", "roles": []},
        {"username": "zigbee", "roles": [{"rolename": "z2m"}]},
    ]
    drift = find_drift(clients, known={"nr"})
    assert len(drift) == 2
    assert "'sneaky' holds another app's role" in drift[0] and "'ghost'" in drift[1]


def test_acl_file_puts_local_rules_first_and_skips_disabled_apps() -> None:
    """Local rules come before our user blocks; disabled apps get no lines and no login."""
    desired = [
        BrokerIdentity(app("nr", Scope.READ_STATUS), "$7$x"),
        BrokerIdentity(app("off", Scope.READ_STATUS, enabled=False), "$7$y"),
    ]
    acl = render_acl(desired, TOPICS, "ownerlink", "topic read public/#\n")
    assert acl.index("topic read public/#") < acl.index("user ownerlink") < acl.index("user nr")
    assert "user off" not in acl
    passwd, clashes = render_passwords(desired, "ownerlink:$7$d", "nr:$7$old\nz2m:$7$z\n")
    assert "nr:$7$x" in passwd and "nr:$7$old" not in passwd and "z2m:$7$z" in passwd
    assert "off:" not in passwd and clashes and "'nr'" in clashes[0]
