"""The app registry on a real SQLite file, with a fake broker back-end and collecting sinks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bridge.access.apps import AppRegistry, ChangeKind
from bridge.config import AppConfig
from bridge.errors import AccessError, AuditWriteError, BrokerError
from bridge.events import CollectingAlerts
from bridge.model import Scope
from bridge.store import Store
from tests.access.support import FakeEnforcement, Harness, make_harness, now


@pytest.fixture
def fake() -> FakeEnforcement:
    return FakeEnforcement()


@pytest.fixture
def h(tmp_path: Path, fake: FakeEnforcement) -> Harness:
    return make_harness(tmp_path / "state", fake, reserved=["mqtt-daemon"])


def test_add_records_audit_alerts_listener_and_broker(h: Harness, fake: FakeEnforcement) -> None:
    """Adding an app writes app.added, raises APP_ADDED, tells listeners and creates the login."""
    new = h.registry.add("nodered", name="Node-RED", scopes=["read:status", "command:lock"])
    assert h.registry.get("nodered") == new.app
    assert h.audit_kinds() == ["app.added"]
    assert h.audit.records[0]["scopes"] == ["command:lock", "read:status"]
    assert h.alert_kinds() == ["app_added"]
    assert [c.kind for c in h.changes] == [ChangeKind.ADDED]
    assert fake.calls == [("create", "nodered")]
    assert len(new.password) == 32


def test_sensitive_scopes_raise_an_alert_each(h: Harness) -> None:
    """Granting unlock or location raises SCOPE_GRANTED per sensitive scope; lock does not."""
    h.registry.add("nr", scopes=["read:status"])
    h.registry.grant("nr", ["command:lock"])
    h.registry.grant("nr", ["command:unlock", "read:location"], allow_location=True)
    assert h.alert_kinds() == ["app_added", "sensitive_scope_granted", "sensitive_scope_granted"]
    assert h.audit_kinds() == ["app.added", "app.scopes_granted", "app.scopes_granted"]
    assert h.audit.records[2]["scopes"] == ["command:unlock", "read:location"]


def test_location_is_opt_in_on_add_and_grant(h: Harness) -> None:
    """read:location without allow_location is refused, and nothing is written."""
    with pytest.raises(AccessError, match="opt-in"):
        h.registry.add("nr", scopes=["read:location"])
    h.registry.add("nr", scopes=["read:status"])
    with pytest.raises(AccessError, match="opt-in"):
        h.registry.grant("nr", ["read:location"])
    assert h.registry.require("nr").scopes == {Scope.READ_STATUS}
    assert h.audit_kinds() == ["app.added"]


@pytest.mark.parametrize(
    ("app_id", "scopes", "message"),
    [
        ("a/b", ["read:status"], "invalid app id"),
        ("ownerlink", ["read:status"], "reserved"),
        ("mqtt-daemon", ["read:status"], "reserved"),
        ("nr", ["read:everything"], "unknown scope"),
    ],
)
def test_bad_input_is_refused_with_nothing_applied(
    h: Harness, fake: FakeEnforcement, app_id: str, scopes: list[str], message: str
) -> None:
    """Invalid ids, reserved ids and unknown scopes change nothing anywhere."""
    with pytest.raises(AccessError, match=message):
        h.registry.add(app_id, scopes=scopes)
    assert h.registry.list() == [] and h.audit.records == [] and h.alerts.alerts == []
    assert fake.calls == []


def test_duplicate_ids_are_refused_ignoring_case(h: Harness) -> None:
    """An id already taken (also as `NR` vs `nr`) is refused."""
    h.registry.add("nr", scopes=["read:status"])
    for dup in ("nr", "NR"):
        with pytest.raises(AccessError, match="already taken"):
            h.registry.add(dup, scopes=["read:status"])
    assert [a.id for a in h.registry.list()] == ["nr"]


def test_only_one_home_assistant_app(h: Harness) -> None:
    """A second Home Assistant app is refused; the first stays the discovery app."""
    h.registry.add("ha", scopes=["read:status"], home_assistant=True)
    with pytest.raises(AccessError, match="already the Home Assistant app"):
        h.registry.add("ha2", scopes=["read:status"], home_assistant=True)
    ha = h.registry.home_assistant_app()
    assert ha is not None and ha.id == "ha"


def test_withdraw_records_and_notifies(h: Harness, fake: FakeEnforcement) -> None:
    """Withdrawing writes app.scopes_withdrawn, fires listeners and updates the broker."""
    h.registry.add("nr", scopes=["read:status", "command:lock"])
    app = h.registry.withdraw("nr", ["command:lock"])
    assert app.scopes == {Scope.READ_STATUS}
    assert h.audit_kinds()[-1] == "app.scopes_withdrawn"
    assert h.changes[-1].kind is ChangeKind.SCOPES_WITHDRAWN
    assert fake.applied["nr"].app.scopes == {Scope.READ_STATUS}


def test_granting_held_scopes_changes_nothing(h: Harness) -> None:
    """A grant or withdrawal that changes nothing writes no audit record and fires nothing."""
    h.registry.add("nr", scopes=["read:status"])
    h.registry.grant("nr", ["read:status"])
    h.registry.withdraw("nr", ["command:lock"])
    assert h.audit_kinds() == ["app.added"] and len(h.changes) == 1


def test_revoke_is_immediate_and_twice_is_an_error(h: Harness, fake: FakeEnforcement) -> None:
    """Revoked apps are gone from get(); audit, alert, listener and broker removal all happen."""
    h.registry.add("nr", scopes=["read:status"])
    h.registry.revoke("nr")
    assert h.registry.get("nr") is None
    assert h.audit_kinds()[-1] == "app.revoked" and h.alert_kinds()[-1] == "app_revoked"
    assert h.changes[-1].kind is ChangeKind.REVOKED and h.changes[-1].app is None
    assert fake.calls[-1] == ("remove", "nr")
    with pytest.raises(AccessError, match="already revoked"):
        h.registry.revoke("nr")
    with pytest.raises(AccessError, match="no app 'ghost'"):
        h.registry.revoke("ghost")
    assert h.audit_kinds().count("app.revoked") == 1


def test_broker_down_on_add_writes_nothing(h: Harness, fake: FakeEnforcement) -> None:
    """Without the broker no login can be made: add fails after backoff retries, nothing saved."""
    fake.down = True
    with pytest.raises(BrokerError, match="nothing was changed"):
        h.registry.add("nr", scopes=["read:status"])
    assert h.registry.list() == [] and h.audit.records == []
    assert h.sleeps == [0.5, 1.0]  # three attempts, exponential backoff


def test_broker_down_on_change_keeps_it_pending_then_sync_applies(
    h: Harness, fake: FakeEnforcement
) -> None:
    """A change the broker missed is saved, reported and marked pending; a sync clears it."""
    h.registry.add("nr", scopes=["read:status", "command:lock"])
    h.registry.add("old", scopes=["read:status"])
    fake.down = True
    h.registry.withdraw("nr", ["command:lock"])
    h.registry.revoke("old")
    assert h.registry.require("nr").scopes == {Scope.READ_STATUS}
    assert set(h.registry.pending()) == {"nr", "old"}
    assert h.alert_kinds().count("broker_drift") == 2
    with pytest.raises(BrokerError):
        h.registry.sync_broker()
    assert h.registry.has_pending()
    fake.down = False
    h.registry.sync_broker()
    assert not h.registry.has_pending() and h.registry.pending() == {}
    assert set(fake.applied) == {"nr"}
    assert fake.applied["nr"].app.scopes == {Scope.READ_STATUS}


class FailingAudit:
    """An audit sink whose disk is broken."""

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        raise AuditWriteError("disk full")


def test_failed_audit_write_undoes_the_change(tmp_path: Path, fake: FakeEnforcement) -> None:
    """If the audit record cannot be written, the app is not added and its login is removed."""
    store = Store.open(tmp_path)
    registry = AppRegistry(
        store=store,
        audit=FailingAudit(),
        alerts=CollectingAlerts(),
        enforcement=fake,
        clock=now,
        sleep=lambda _s: None,
    )
    registry.migrate()
    with pytest.raises(AuditWriteError):
        registry.add("nr", scopes=["read:status"])
    assert registry.list() == []
    assert fake.calls == [("create", "nr"), ("remove", "nr")]


def test_other_process_changes_reach_listeners(tmp_path: Path) -> None:
    """A change made through another registry (the CLI) fires this one's listeners on poll."""
    daemon = make_harness(tmp_path, FakeEnforcement())
    cli = make_harness(tmp_path, FakeEnforcement())
    cli.registry.add("ha", scopes=["read:status"], home_assistant=True)
    cli.registry.revoke("ha")
    assert daemon.registry.poll_changes() == 2
    assert [(c.kind, c.external) for c in daemon.changes] == [
        (ChangeKind.ADDED, True),
        (ChangeKind.REVOKED, True),
    ]
    assert daemon.changes[1].app is None
    assert daemon.registry.poll_changes() == 0
    assert cli.registry.poll_changes() == 0  # its own changes are not replayed to it


def test_touch_records_activity_without_audit(h: Harness) -> None:
    """touch() sets last seen and last command; it is activity, not an audited change."""
    h.registry.add("nr", scopes=["command:lock"])
    h.registry.touch("nr", "lock")
    app = h.registry.require("nr")
    assert app.last_seen is not None and app.last_command == "lock"
    h.registry.touch("unknown", "lock")  # an unknown app is simply ignored
    assert h.audit_kinds() == ["app.added"]


def test_rate_limit_and_allowlist_are_validated_and_audited(h: Harness) -> None:
    """Rate limits are 1-600 or default; CIDRs are normalised; both are audited."""
    h.registry.add("nr", scopes=["command:lock"], allow_cidrs=["10.0.0.1"])
    assert h.registry.require("nr").allow_cidrs == ("10.0.0.1/32",)
    assert h.registry.set_rate_limit("nr", 12).rate_limit_per_minute == 12
    assert h.registry.set_rate_limit("nr", None).rate_limit_per_minute is None
    with pytest.raises(AccessError, match="rate limit"):
        h.registry.set_rate_limit("nr", 0)
    assert h.registry.set_allowlist("nr", ["192.168.0.0/16"]).allow_cidrs == ("192.168.0.0/16",)
    with pytest.raises(AccessError, match="CIDR"):
        h.registry.set_allowlist("nr", ["nonsense"])
    assert h.audit_kinds() == [
        "app.added",
        "app.rate_limit_set",
        "app.rate_limit_set",
        "app.allowlist_set",
    ]


def test_disabled_app_is_refused_but_kept(h: Harness, fake: FakeEnforcement) -> None:
    """A disabled app holds no scope (App.has is False) and the broker is told."""
    h.registry.add("nr", scopes=["command:lock"])
    app = h.registry.set_enabled("nr", False)
    assert not app.has(Scope.COMMAND_LOCK) and not fake.applied["nr"].app.enabled
    assert h.audit_kinds()[-1] == "app.disabled"


def test_reset_password_changes_the_login(h: Harness, fake: FakeEnforcement) -> None:
    """A reset makes a new password, recreates the login and is audited (without the password)."""
    first = h.registry.add("nr", scopes=["read:status"])
    second = h.registry.reset_password("nr")
    assert second.password != first.password
    assert fake.calls[-1] == ("create", "nr")
    assert h.audit.records[-1]["kind"] == "app.password_reset"
    assert second.password not in str(h.audit.records)


def test_passwords_are_never_stored(tmp_path: Path) -> None:
    """Neither the database file nor the audit records contain the generated password."""
    h = make_harness(tmp_path, FakeEnforcement())
    new = h.registry.add("nr", scopes=["read:status"])
    h.store.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert new.password.encode() not in blob
    assert new.password not in str(h.audit.records)


def test_a_failing_listener_does_not_stop_the_change(h: Harness) -> None:
    """An exception in one listener is logged; later listeners still run."""
    seen: list[str] = []

    def broken(_change: object) -> None:
        raise RuntimeError("boom")

    h.registry.subscribe(broken)
    unsubscribe = h.registry.subscribe(lambda c: seen.append(c.app_id))
    h.registry.add("nr", scopes=["read:status"])
    unsubscribe()
    h.registry.add("nr2", scopes=["read:status"])
    assert seen == ["nr"]


def test_config_declared_apps_are_imported_once(h: Harness) -> None:
    """Apps declared in the config are added (audited, alerted) once and never overwritten."""
    declared = {"ha": AppConfig(scopes=frozenset({Scope.READ_STATUS}), home_assistant=True)}
    assert h.registry.import_declared(declared) == ["ha"]
    h.registry.grant("ha", ["command:lock"])
    assert h.registry.import_declared(declared) == []
    assert h.registry.require("ha").scopes == {Scope.READ_STATUS, Scope.COMMAND_LOCK}
    assert h.registry.details("ha").source == "config"
    assert h.audit.records[0]["source"] == "config"


def test_a_revoked_declared_app_does_not_come_back(h: Harness) -> None:
    """A restart (import_declared again) never undoes the revocation of a config-declared app."""
    declared = {"nr": AppConfig(scopes=frozenset({Scope.READ_STATUS}))}
    h.registry.import_declared(declared)
    h.registry.revoke("nr")
    assert h.registry.import_declared(declared) == []
    assert h.registry.get("nr") is None


def test_a_declared_app_the_registry_cannot_take_is_skipped_with_a_warning(h: Harness) -> None:
    """The file cannot know the registry: a second Home Assistant app (one added with `apps add
    ha --home-assistant` beside the example's `homeassistant`), or an id taken in another case.
    The daemon exited 1 on it at every start; the others are imported and it is named."""
    h.registry.add("myha", scopes=["read:status"], home_assistant=True)
    h.registry.add("Dash", scopes=["read:status"])
    declared = {
        "homeassistant": AppConfig(scopes=frozenset({Scope.READ_STATUS}), home_assistant=True),
        "dash": AppConfig(),
        "nr": AppConfig(),
    }
    with capture_logs() as logs:
        assert h.registry.import_declared(declared) == ["nr"]
    skipped = {e["key"]: e["detail"] for e in logs if e["event"] == "declared_app_not_added"}
    assert skipped.keys() == {"apps.homeassistant", "apps.dash"}
    assert "'myha' is already the Home Assistant app" in skipped["apps.homeassistant"]
    assert h.registry.get("homeassistant") is None and h.registry.require("myha").home_assistant


def test_the_command_path_sees_another_process_change_at_once(tmp_path: Path) -> None:
    """`current` (what a command is decided on) reads the row every time: a scope withdrawn, an
    app disabled or revoked by another process (the CLI) counts for the very next command. The
    activity `touch` writes on every command does not make it parse the app again."""
    daemon = make_harness(tmp_path, FakeEnforcement())
    cli = make_harness(tmp_path, FakeEnforcement())
    cli.registry.add("nr", scopes=["command:lock", "command:unlock"])
    first = daemon.registry.current("nr")
    assert first is not None and first.has(Scope.COMMAND_UNLOCK)
    daemon.registry.touch("nr", "lock")
    assert daemon.registry.current("nr") is first
    cli.registry.withdraw("nr", ["command:unlock"])
    narrowed = daemon.registry.current("nr")
    assert narrowed is not None and not narrowed.has(Scope.COMMAND_UNLOCK)
    assert narrowed.has(Scope.COMMAND_LOCK)
    cli.registry.set_enabled("nr", False)
    disabled = daemon.registry.current("nr")
    assert disabled is not None and not disabled.has(Scope.COMMAND_LOCK)
    cli.registry.revoke("nr")
    assert daemon.registry.current("nr") is None
    cli.registry.add("nr", scopes=["read:status"])  # the same id again, from scratch
    again = daemon.registry.current("nr")
    assert again is not None and again.scopes == frozenset({Scope.READ_STATUS})


def test_scope_history_keeps_what_the_app_held_after_each_change(tmp_path: Path) -> None:
    """Every scope change is kept with what the app held after it, for any process to read
    later: a moment with nothing held is not lost when the scopes come back before anyone looks
    (the OAuth server ends a grant for it). Other apps' changes are not mixed in."""
    daemon = make_harness(tmp_path, FakeEnforcement())
    cli = make_harness(tmp_path, FakeEnforcement())
    cli.registry.add("nr", scopes=["read:status", "read:health"])
    cli.registry.add("other", scopes=["read:status"])
    mark = daemon.registry.scope_mark()
    cli.registry.withdraw("nr", ["read:health"])
    cli.registry.withdraw("other", ["read:status"])
    cli.registry.withdraw("nr", ["read:status"])
    cli.registry.grant("nr", ["read:status"])
    assert daemon.registry.scopes_since("nr", mark) == [
        frozenset({Scope.READ_STATUS}),
        frozenset(),
        frozenset({Scope.READ_STATUS}),
    ]
    later = daemon.registry.scope_mark()
    assert later > mark
    assert daemon.registry.scopes_since("nr", later) == []
    cli.registry.grant("nr", ["read:health"])
    assert daemon.registry.scopes_since("nr", later) == [
        frozenset({Scope.READ_STATUS, Scope.READ_HEALTH})
    ]


def test_revoking_an_app_forgets_its_scope_history(h: Harness) -> None:
    """A revoked app's tokens are dead with it; the same id added again starts a new history."""
    h.registry.add("nr", scopes=["read:status", "read:health"])
    h.registry.withdraw("nr", ["read:health"])
    h.registry.revoke("nr")
    assert h.registry.scopes_since("nr", 0) == []
    h.registry.add("nr", scopes=["read:status"])
    h.registry.withdraw("nr", ["read:status"])
    assert h.registry.scopes_since("nr", 0) == [frozenset()]
