"""Machine-readable reasons a command is refused or fails: `reason` in results and audit records."""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Why a command ended as it did. Refusals are listed in the order `decide` checks them."""

    OK = "ok"
    # Refused before any identity is looked at: the message itself is unacceptable.
    RETAINED = "retained"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_COMMAND = "unknown_command"
    MALFORMED = "malformed"
    UNKNOWN_ACTION = "unknown_action"
    TOO_OLD = "too_old"
    FROM_FUTURE = "from_future"
    # Who is asking, and for what.
    UNKNOWN_APP = "unknown_app"
    APP_DISABLED = "app_disabled"
    UNKNOWN_VEHICLE = "unknown_vehicle"
    DUPLICATE_ID = "duplicate_id"
    SCOPE_MISSING = "scope_missing"
    UNSUPPORTED = "unsupported"
    RATE_LIMITED = "rate_limited"
    BUDGET_EXHAUSTED = "budget_exhausted"
    # The second factor, checked last: a code is only looked at for an otherwise-valid command.
    STEPUP_LOCKED_OUT = "stepup_locked_out"
    STEPUP_NOT_ENROLLED = "stepup_not_enrolled"
    STEPUP_REQUIRED = "stepup_required"
    STEPUP_FAILED = "stepup_failed"
    # The bridge itself cannot take commands safely.
    AUDIT_UNAVAILABLE = "audit_unavailable"
    AUDIT_TAMPERED = "audit_tampered"
    AUDIT_UNCHECKED = "audit_unchecked"  # not yet compared with the head the broker holds
    STATE_UNAVAILABLE = "state_unavailable"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL_ERROR = "internal_error"
    # Outcomes after forwarding.
    VEHICLE_FAILED = "vehicle_failed"  # the provider reported the car did not do it
    VEHICLE_BUSY = "vehicle_busy"  # another ownerlink process kept the car past the timeout
    FORBIDDEN = "forbidden"
    REAUTH_REQUIRED = "reauth_required"
    PROVIDER_RATE_LIMITED = "provider_rate_limited"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"


# Refusals decided before the rate-limit check: these never use up an app's or vehicle's allowance,
# so a misbehaving client cannot spend another app's (or the owner's) commands by sending junk.
BEFORE_RATE_LIMIT = frozenset(
    {
        Reason.RETAINED,
        Reason.PAYLOAD_TOO_LARGE,
        Reason.UNKNOWN_COMMAND,
        Reason.MALFORMED,
        Reason.UNKNOWN_ACTION,
        Reason.TOO_OLD,
        Reason.FROM_FUTURE,
        Reason.UNKNOWN_APP,
        Reason.APP_DISABLED,
        Reason.UNKNOWN_VEHICLE,
        Reason.DUPLICATE_ID,
        Reason.SCOPE_MISSING,
        Reason.UNSUPPORTED,
        Reason.RATE_LIMITED,
    }
)
