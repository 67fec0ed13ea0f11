"""Step-up verification for sensitive commands: TOTP (RFC 6238) with replay memory and lockout.

One owner secret (`<state_dir>/stepup.secret`, 0600) whatever the app, since the code proves the
*owner* approved this unlock. Codes are 6 digits on 30-second steps; one step of drift either way
is accepted (phones' clocks and typing time), never more. The last accepted step is persisted so
a code, or any older one, is never accepted twice, even across a restart. Failures are counted
per app; too many within the window lock that app out of sensitive commands for a while.

`assess` only reads; `settle` records what the decision did with it. The pipeline calls them back
to back with no await in between, so two commands carrying the same code cannot both pass.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from pathlib import Path

import pyotp

from bridge.commands.decide import CODE_REUSED, StepUpCheck, StepUpStatus
from bridge.commands.storage import reading, writing
from bridge.config import StepUpConfig
from bridge.errors import StateError
from bridge.events import Alert, AlertKind, AlertSink
from bridge.files import read_private, write_private_atomic
from bridge.logs import register_secret
from bridge.store import Store, ensure_private_dir

SECRET_FILE = "stepup.secret"  # noqa: S105 - a file name, not a secret
STEP_S = 30
DRIFT_STEPS = 1  # RFC 6238 §5.2 recommends at most one step back; we allow one either way
ISSUER = "Ownerlink"

MIGRATIONS = (
    "CREATE TABLE stepup_steps (secret_id TEXT PRIMARY KEY, step INTEGER NOT NULL);"
    "CREATE TABLE stepup_failures (app TEXT NOT NULL, at REAL NOT NULL);"
    "CREATE INDEX stepup_failures_app ON stepup_failures (app, at);"
    "CREATE TABLE stepup_lockouts (app TEXT PRIMARY KEY, until REAL NOT NULL)",
)


def secret_path(state_dir: Path) -> Path:
    return state_dir / SECRET_FILE


def time_step(now: datetime) -> int:
    return int(now.timestamp()) // STEP_S


def match_step(secret: str, code: str, now: datetime, *, drift: int = DRIFT_STEPS) -> int | None:
    """The time-step within ±`drift` of `now` whose code is `code`, or None. Pure."""
    totp = pyotp.TOTP(secret)
    current = time_step(now)
    found = None
    # As bytes: compare_digest refuses non-ASCII text, and "12345é" is just a wrong code.
    typed = code.encode("utf-8", "replace")
    # Compare every candidate in constant time and never stop early: timing reveals nothing.
    for step in range(current - drift, current + drift + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode("ascii"), typed) and found is None:
            found = step
    return found


def code_at(secret: str, now: datetime) -> str:
    """The code an authenticator shows at `now`."""
    return str(pyotp.TOTP(secret).generate_otp(time_step(now)))


def provisioning_uri(secret: str, account: str = "owner") -> str:
    """The otpauth:// URI an authenticator app scans (it contains the secret: show it once)."""
    return str(pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER))


def enroll(state_dir: Path, *, force: bool = False) -> str:
    """Create and store a new secret (160 random bits); refuse to replace one unless `force`."""
    path = secret_path(state_dir)
    if path.exists() and not force:
        raise StateError(
            f"{path} exists; re-enrolling invalidates your authenticator (use --force)"
        )
    secret = pyotp.random_base32()
    store_secret(state_dir, secret)
    return secret


def store_secret(state_dir: Path, secret: str) -> None:
    """Put `secret` in force (0600, replaced atomically: a crash leaves the old or the new)."""
    ensure_private_dir(state_dir)
    write_private_atomic(secret_path(state_dir), secret.encode("ascii"))


def load_secret(state_dir: Path) -> str | None:
    """The enrolled secret, or None when step-up was never enrolled. A file that holds no
    usable secret (damaged, or edited by hand) is a StateError saying how to re-enrol: read
    as "enrolled", it failed every code and `stepup code` with a traceback."""
    path = secret_path(state_dir)
    data = read_private(path)
    if data is None:
        return None
    try:
        secret = data.decode("ascii").strip()
        # pyotp's own decoding: base32 in any case, padding optional, long enough.
        usable = bool(pyotp.TOTP(secret).byte_secret())
    except ValueError:  # UnicodeDecodeError and binascii.Error are ValueErrors
        usable = False
    if not usable:
        raise StateError(
            f"{path} holds no usable step-up secret (damaged or edited): run "
            "`ownerlink stepup enroll --force` and scan the new QR code"
        )
    # Never logged today; if a line ever carried it (base32: either case), it is redacted.
    register_secret(secret.upper())
    register_secret(secret.lower())
    return secret


def _secret_id(secret: str) -> str:
    # Steps are remembered per secret (re-enrolment starts afresh) without storing the secret.
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


class StepUp:
    """The stateful side: last accepted step, failure counts, lockouts (SQLite) and alerts."""

    def __init__(
        self, *, store: Store, state_dir: Path, config: StepUpConfig, alerts: AlertSink
    ) -> None:
        self.store = store
        self.state_dir = state_dir
        self.config = config
        self.alerts = alerts

    def start(self) -> None:
        """Create the tables if needed."""
        self.store.migrate("stepup", MIGRATIONS)

    def assess(self, app_id: str, code: str | None, now: datetime) -> StepUpCheck:
        """Check `code` for `app_id` at `now` without recording anything."""
        until = self.locked_until(app_id, now)
        if until is not None:
            # Checked before the code, so a right guess during a lockout teaches nothing.
            detail = f"locked out until {until.isoformat(timespec='seconds')}"
            return StepUpCheck(StepUpStatus.LOCKED_OUT, detail=detail)
        secret = load_secret(self.state_dir)
        if secret is None:
            # Said before "missing": no code could help until the owner enrols.
            return StepUpCheck(StepUpStatus.NOT_ENROLLED, detail="run `ownerlink stepup enroll`")
        if code is None:
            return StepUpCheck(StepUpStatus.MISSING, detail="send the code from your authenticator")
        # Authenticators show "123 456"; people type what they see.
        return self._verify(secret, code.replace(" ", ""), now)

    def _verify(self, secret: str, code: str, now: datetime) -> StepUpCheck:
        step = match_step(secret, code, now)
        if step is None:
            return StepUpCheck(StepUpStatus.FAILED, detail="wrong code")
        last = self._last_step(secret)
        if last is not None and step <= last:
            return StepUpCheck(StepUpStatus.FAILED, detail=CODE_REUSED)
        return StepUpCheck(StepUpStatus.OK, step=step, key=_secret_id(secret))

    def settle(
        self,
        app_id: str,
        check: StepUpCheck,
        *,
        allowed: bool,
        now: datetime,
        vehicle: str | None = None,
    ) -> bool:
        """Take an accepted code's step for good (before the command is forwarded), or count a
        failure. False when the code was accepted but another process took the same step
        between `assess` and now (the daemon and `ownerlink command`, given one code at once):
        that is a reused code, counted as a failure, and the command must not go."""
        if check.status is StepUpStatus.OK and allowed and check.step is not None and check.key:
            if self._claim_step(check.key, check.step):
                return True
            self._record_failure(app_id, now, vehicle, CODE_REUSED)
            return False
        if check.status is StepUpStatus.FAILED:
            self._record_failure(app_id, now, vehicle, check.detail)
        return True

    def locked_until(self, app_id: str, now: datetime) -> datetime | None:
        """When the app's lockout ends, or None when it is not locked out."""
        rows = reading(
            self.store,
            "step-up state",
            "SELECT until FROM stepup_lockouts WHERE app = ? AND until > ?",
            (app_id, now.timestamp()),
        )
        return datetime.fromtimestamp(rows[0][0], tz=now.tzinfo) if rows else None

    def clear_lockout(self, app_id: str) -> None:
        """Lift an app's lockout and forget its failures (the owner's decision)."""
        with writing(self.store, "step-up state") as conn:
            conn.execute("DELETE FROM stepup_lockouts WHERE app = ?", (app_id,))
            conn.execute("DELETE FROM stepup_failures WHERE app = ?", (app_id,))

    def _last_step(self, secret: str) -> int | None:
        rows = reading(
            self.store,
            "step-up state",
            "SELECT step FROM stepup_steps WHERE secret_id = ?",
            (_secret_id(secret),),
        )
        return int(rows[0][0]) if rows else None

    def _claim_step(self, key: str, step: int) -> bool:
        """Record `step` as used unless it (or a later one) already is. One statement, so two
        processes claiming the same step cannot both succeed; True when this one did."""
        with writing(self.store, "step-up state") as conn:
            cursor = conn.execute(
                "INSERT INTO stepup_steps (secret_id, step) VALUES (?, ?) ON CONFLICT (secret_id)"
                " DO UPDATE SET step = excluded.step WHERE step < excluded.step",
                (key, step),
            )
            return cursor.rowcount == 1

    def recent_failures(self, app_id: str, now: datetime) -> int:
        """Failures counted towards the app's next lockout (those within the window)."""
        rows = reading(
            self.store,
            "step-up state",
            "SELECT count(*) FROM stepup_failures WHERE app = ? AND at > ?",
            (app_id, now.timestamp() - self.config.failure_window_s),
        )
        return int(rows[0][0])

    def _record_failure(self, app_id: str, now: datetime, vehicle: str | None, why: str) -> None:
        failures = self._count_failure(app_id, now.timestamp())
        self.alerts.emit(
            Alert(
                AlertKind.STEPUP_FAILED,
                f"step-up code refused for app {app_id}: {why or 'wrong code'}",
                now,
                app=app_id,
                vehicle=vehicle,
                details={"failures": failures, "max_failures": self.config.max_failures},
            )
        )
        if failures >= self.config.max_failures:
            self._lock_out(app_id, now, vehicle)

    def _count_failure(self, app_id: str, at: float) -> int:
        with writing(self.store, "step-up state") as conn:
            conn.execute("INSERT INTO stepup_failures (app, at) VALUES (?, ?)", (app_id, at))
            conn.execute(
                "DELETE FROM stepup_failures WHERE at <= ?", (at - self.config.failure_window_s,)
            )
            row = conn.execute(
                "SELECT count(*) FROM stepup_failures WHERE app = ?", (app_id,)
            ).fetchone()
        return int(row[0])

    def _lock_out(self, app_id: str, now: datetime, vehicle: str | None) -> None:
        until = now + timedelta(seconds=self.config.lockout_s)
        with writing(self.store, "step-up state") as conn:
            conn.execute(
                "INSERT INTO stepup_lockouts (app, until) VALUES (?, ?) ON CONFLICT (app)"
                " DO UPDATE SET until = excluded.until",
                (app_id, until.timestamp()),
            )
            # A fresh count after the lockout: the next five mistakes earn the next one.
            conn.execute("DELETE FROM stepup_failures WHERE app = ?", (app_id,))
        self.alerts.emit(
            Alert(
                AlertKind.STEPUP_LOCKOUT,
                f"app {app_id} locked out of sensitive commands until {until.isoformat()}",
                now,
                app=app_id,
                vehicle=vehicle,
                details={"until": until.isoformat(), "lockout_s": self.config.lockout_s},
            )
        )
