"""Adapters from the daemon's real parts to the web ports where their shapes differ.

The registry (bridge.access.apps.AppRegistry) and the command pipeline
(bridge.commands.pipeline.CommandPipeline) satisfy their ports as they are; the audit log's
reader and the step-up verifier are wrapped here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyotp

from bridge.access.validation import LOGIN_STEPUP_ID
from bridge.audit.chain import read_records, records_newest_first
from bridge.audit.verify import verify
from bridge.commands import stepup as totp
from bridge.commands.decide import StepUpStatus
from bridge.web.ports import ChainStatus, Clock

# Owner logins count their step-up failures under an id no app can take.
LOGIN_APP_ID = LOGIN_STEPUP_ID


class AuditFiles:
    """`AuditReader` over the audit log's directory (current and rotated files), read-only."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def records(self) -> Iterator[Mapping[str, Any]]:
        """Every parsable record, oldest first; a torn last line is skipped, not an error."""
        yield from read_records(self.directory)

    def newest_first(self) -> Iterator[Mapping[str, Any]]:
        """Every parsable record, newest first, read one file at a time."""
        yield from records_newest_first(self.directory)

    def verify(self) -> ChainStatus:
        report = verify(self.directory)
        seq, value = report.head
        head = f"{seq}:{value}" if value else None
        problem = report.problem.describe() if report.problem is not None else None
        return ChainStatus(ok=report.ok, records=report.records, head=head, problem=problem)


class OwnerStepUp:
    """`StepUp` for the web: enrolment through the same functions as `ownerlink stepup enroll`,
    and login codes checked by the same verifier as commands (replay memory, lockout)."""

    def __init__(self, *, verifier: totp.StepUp, state_dir: Path, clock: Clock) -> None:
        self.verifier = verifier
        self.state_dir = state_dir
        self.clock = clock

    def enrolled(self) -> bool:
        return totp.load_secret(self.state_dir) is not None

    def propose(self) -> str:
        return pyotp.random_base32()

    def install(self, secret: str, code: str) -> bool:
        # Replacing an enrolled secret is deliberate here: the page asked for the password first,
        # and the code shows the owner's authenticator holds the new secret.
        code = "".join(code.split())  # authenticators show "123 456"
        if totp.match_step(secret, code, self.clock()) is None:
            return False
        totp.store_secret(self.state_dir, secret)
        # The confirming code is spent, like any accepted code: it cannot then unlock the car.
        self.verify(code)
        return True

    def verify(self, code: str) -> bool:
        now = self.clock()
        check = self.verifier.assess(LOGIN_APP_ID, code or None, now)
        allowed = check.status is StepUpStatus.OK
        # False when a command in another process took the same code a moment before.
        return self.verifier.settle(LOGIN_APP_ID, check, allowed=allowed, now=now) and allowed
