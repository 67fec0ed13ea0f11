"""Step-up (TOTP): right, wrong, reused and drifting codes; lockout and expiry; the secret file."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta
from pathlib import Path

import pyotp
import pytest

from bridge.commands.decide import StepUpCheck, StepUpStatus
from bridge.commands.stepup import (
    STEP_S,
    StepUp,
    code_at,
    enroll,
    load_secret,
    match_step,
    provisioning_uri,
    secret_path,
    time_step,
)
from bridge.config import StepUpConfig
from bridge.errors import StateError
from bridge.events import AlertKind, CollectingAlerts
from bridge.files import write_private_atomic
from bridge.store import Store
from tests.commands.fakes import T0


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def make(state_dir: Path, config: StepUpConfig | None = None) -> tuple[StepUp, CollectingAlerts]:
    alerts = CollectingAlerts()
    stepup = StepUp(
        store=Store.open(state_dir),
        state_dir=state_dir,
        config=config or StepUpConfig(),
        alerts=alerts,
    )
    stepup.start()
    return stepup, alerts


def use(stepup: StepUp, code: str | None, at: datetime = T0, app: str = "ha") -> StepUpCheck:
    """Assess and settle as the pipeline does for an otherwise-allowed command."""
    check = stepup.assess(app, code, at)
    stepup.settle(app, check, allowed=check.status is StepUpStatus.OK, now=at, vehicle="car")
    return check


def test_right_code_is_accepted(state_dir: Path) -> None:
    """The authenticator's current code passes."""
    secret = enroll(state_dir)
    stepup, _ = make(state_dir)
    assert use(stepup, code_at(secret, T0)).status is StepUpStatus.OK


def test_code_matches_pyotp_reference(state_dir: Path) -> None:
    """Our codes are RFC 6238 codes: pyotp's TOTP.at gives the same digits."""
    secret = enroll(state_dir)
    assert code_at(secret, T0) == pyotp.TOTP(secret).at(T0)


def test_wrong_code_fails_and_alerts(state_dir: Path) -> None:
    """A wrong code is FAILED and raises a STEPUP_FAILED alert without the code in it."""
    secret = enroll(state_dir)
    stepup, alerts = make(state_dir)
    wrong = f"{(int(code_at(secret, T0)) + 1) % 1_000_000:06d}"
    assert use(stepup, wrong).status is StepUpStatus.FAILED
    assert [a.kind for a in alerts.alerts] == [AlertKind.STEPUP_FAILED]
    assert wrong not in str(alerts.alerts[0].as_document())


def test_a_code_is_never_accepted_twice(state_dir: Path) -> None:
    """Replaying an accepted code, even seconds later in the same step, fails."""
    secret = enroll(state_dir)
    stepup, _ = make(state_dir)
    code = code_at(secret, T0)
    assert use(stepup, code).status is StepUpStatus.OK
    again = use(stepup, code, T0 + timedelta(seconds=1))
    assert again.status is StepUpStatus.FAILED
    assert "already used" in again.detail


def test_reuse_is_refused_across_a_restart(state_dir: Path) -> None:
    """The last accepted step is persisted: a new StepUp on the same state dir refuses it too."""
    secret = enroll(state_dir)
    first, _ = make(state_dir)
    code = code_at(secret, T0)
    assert use(first, code).status is StepUpStatus.OK
    second, _ = make(state_dir)
    assert use(second, code).status is StepUpStatus.FAILED


def test_one_code_given_to_two_processes_at_once_is_taken_by_one(state_dir: Path) -> None:
    """The daemon and `ownerlink command` (each its own StepUp on one state dir) both check the
    same code before either takes it: only one may act on it, and the other counts a failure."""
    secret = enroll(state_dir)
    (daemon, daemon_alerts), (cli, _) = make(state_dir), make(state_dir)
    code = code_at(secret, T0)
    checks = [daemon.assess("ha", code, T0), cli.assess("owner", code, T0)]
    assert [c.status for c in checks] == [StepUpStatus.OK, StepUpStatus.OK]
    taken = [
        stepup.settle(app, check, allowed=True, now=T0, vehicle="car")
        for stepup, app, check in ((cli, "owner", checks[1]), (daemon, "ha", checks[0]))
    ]
    assert taken == [True, False]
    assert daemon.recent_failures("ha", T0) == 1
    assert [a.kind for a in daemon_alerts.alerts] == [AlertKind.STEPUP_FAILED]


def test_an_older_step_than_the_last_accepted_is_refused(state_dir: Path) -> None:
    """After the current code is used, the previous step's (still within drift) is refused."""
    secret = enroll(state_dir)
    stepup, _ = make(state_dir)
    assert use(stepup, code_at(secret, T0)).status is StepUpStatus.OK
    earlier = code_at(secret, T0 - timedelta(seconds=STEP_S))
    assert use(stepup, earlier).status is StepUpStatus.FAILED


@pytest.mark.parametrize("steps", [-1, 1])
def test_one_step_of_drift_is_accepted(state_dir: Path, steps: int) -> None:
    """A code from one step before or after now is accepted."""
    secret = enroll(state_dir)
    stepup, _ = make(state_dir)
    code = code_at(secret, T0 + timedelta(seconds=steps * STEP_S))
    check = use(stepup, code)
    assert check.status is StepUpStatus.OK
    assert check.step == time_step(T0) + steps


@pytest.mark.parametrize("steps", [-2, 2])
def test_two_steps_of_drift_are_refused(state_dir: Path, steps: int) -> None:
    """A code from two steps away is refused."""
    secret = enroll(state_dir)
    stepup, _ = make(state_dir)
    code = code_at(secret, T0 + timedelta(seconds=steps * STEP_S))
    if code in {code_at(secret, T0 + timedelta(seconds=s * STEP_S)) for s in (-1, 0, 1)}:
        pytest.skip("the two-steps-away code collides with a nearer one (1 in ~330k)")
    assert use(stepup, code).status is StepUpStatus.FAILED


def test_spaces_in_a_typed_code_are_ignored(state_dir: Path) -> None:
    """A code typed as the authenticator shows it ("123 456") is accepted."""
    secret = enroll(state_dir)
    stepup, _ = make(state_dir)
    code = code_at(secret, T0)
    assert use(stepup, f"{code[:3]} {code[3:]}").status is StepUpStatus.OK


def test_missing_code_is_not_a_failure(state_dir: Path) -> None:
    """No code at all is MISSING and is not counted towards a lockout."""
    enroll(state_dir)
    stepup, alerts = make(state_dir)
    for _ in range(10):
        assert use(stepup, None).status is StepUpStatus.MISSING
    assert alerts.alerts == []
    assert stepup.locked_until("ha", T0) is None


def test_not_enrolled(state_dir: Path) -> None:
    """Without a secret, a code cannot be checked: NOT_ENROLLED."""
    stepup, _ = make(state_dir)
    assert use(stepup, "123456").status is StepUpStatus.NOT_ENROLLED


def test_five_failures_lock_the_app_out_until_expiry(state_dir: Path) -> None:
    """Five wrong codes in 15 minutes lock the app out (alert), even right codes, until expiry."""
    secret = enroll(state_dir)
    stepup, alerts = make(state_dir)
    for minute in range(5):
        assert (
            use(
                stepup,
                "000000" if code_at(secret, T0) != "000000" else "111111",
                T0 + timedelta(minutes=minute),
            ).status
            is StepUpStatus.FAILED
        )
    assert alerts.alerts[-1].kind is AlertKind.STEPUP_LOCKOUT
    locked_at = T0 + timedelta(minutes=5)
    right = code_at(secret, locked_at)
    assert use(stepup, right, locked_at).status is StepUpStatus.LOCKED_OUT
    assert use(stepup, right, locked_at, app="other").status is StepUpStatus.OK
    after = T0 + timedelta(minutes=4, seconds=15 * 60 + 1)
    assert use(stepup, code_at(secret, after), after).status is StepUpStatus.OK


def test_failures_outside_the_window_do_not_add_up(state_dir: Path) -> None:
    """Four failures, a long pause, then one more: no lockout."""
    enroll(state_dir)
    stepup, alerts = make(state_dir)
    for minute in (0, 1, 2, 3, 30):
        use(stepup, "abcdef", T0 + timedelta(minutes=minute))
    assert all(a.kind is AlertKind.STEPUP_FAILED for a in alerts.alerts)
    assert stepup.locked_until("ha", T0 + timedelta(minutes=30)) is None


def test_lockout_survives_a_restart_and_can_be_cleared(state_dir: Path) -> None:
    """The lockout is persisted; the owner can lift it."""
    enroll(state_dir)
    stepup, _ = make(state_dir, StepUpConfig(max_failures=1))
    use(stepup, "abcdef")
    again, _ = make(state_dir, StepUpConfig(max_failures=1))
    assert again.locked_until("ha", T0) is not None
    again.clear_lockout("ha")
    assert again.locked_until("ha", T0) is None


def test_enroll_writes_a_private_secret_and_refuses_to_overwrite(state_dir: Path) -> None:
    """The secret file is 0600; enrolling again needs force and changes the secret."""
    secret = enroll(state_dir)
    path = secret_path(state_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(state_dir) == secret
    with pytest.raises(StateError, match="--force"):
        enroll(state_dir)
    assert enroll(state_dir, force=True) != secret


@pytest.mark.parametrize(
    "content", [b"not base32!\n", "geheimnis-\u00e9".encode(), b"", b" \n", b"ABCDEFGH"]
)
def test_a_damaged_secret_is_a_state_error_not_an_enrolment(
    state_dir: Path, content: bytes
) -> None:
    """A secret file TOTP cannot use is refused when loaded, naming the file and the fix, so a
    command is refused as state-unavailable instead of failing inside the code check."""
    enroll(state_dir)
    write_private_atomic(secret_path(state_dir), content)
    fix = "run `ownerlink stepup enroll --force`"
    with pytest.raises(StateError, match=f"{secret_path(state_dir)} holds no usable .*{fix}"):
        load_secret(state_dir)
    stepup, _ = make(state_dir)
    with pytest.raises(StateError, match="holds no usable step-up secret"):
        stepup.assess("ha", "123456", T0)


def test_a_secret_in_lower_case_or_without_padding_is_still_usable(state_dir: Path) -> None:
    """What pyotp accepts is accepted: base32 in any case, padding left out."""
    secret = pyotp.random_base32(length=34)
    write_private_atomic(secret_path(state_dir.parent), secret.lower().encode() + b"\n")
    assert load_secret(state_dir.parent) == secret.lower()


def test_provisioning_uri_names_the_issuer(state_dir: Path) -> None:
    """The otpauth URI carries the secret and the Ownerlink issuer."""
    secret = enroll(state_dir)
    uri = provisioning_uri(secret)
    assert uri.startswith("otpauth://totp/") and "issuer=Ownerlink" in uri and secret in uri


def test_match_step_is_pure(state_dir: Path) -> None:
    """match_step finds the step of a code from the secret and time alone."""
    secret = pyotp.random_base32()
    assert match_step(secret, code_at(secret, T0), T0) == time_step(T0)
