"""Pure pieces of the web layer, called directly: hashing, address checks, URI rules, charts."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from starlette.requests import Request

from bridge.errors import StateError
from bridge.events import CollectingAudit
from bridge.web.api.access_log import AccessLog
from bridge.web.api.routes import result_status
from bridge.web.charts import AXIS, HEIGHT, budget_svg
from bridge.web.guards import safe_next
from bridge.web.handlers import state_damaged
from bridge.web.netguard import allowed_hosts, host_allowed, host_of, ip_allowed, parse_ip
from bridge.web.oauth.server import redirect_uri_problem
from bridge.web.pages.security import masked_webhook
from bridge.web.passwords import hash_password, verify_password
from tests.web.fakes import MutableClock


def test_password_hash_is_salted_scrypt_and_verifies() -> None:
    """Same password, different salts; the right password verifies, a wrong one does not."""
    first, second = hash_password("a long password"), hash_password("a long password")
    assert first != second
    assert first.startswith("scrypt$32768$8$1$")
    assert verify_password("a long password", first)
    assert not verify_password("a long passwore", first)


@pytest.mark.parametrize("stored", ["", "bcrypt$x", "scrypt$1$2$3$!!$??", "scrypt$a$b$c$d$e"])
def test_malformed_password_hashes_never_verify(stored: str) -> None:
    """A damaged or foreign hash in the database fails closed instead of raising."""
    assert not verify_password("anything", stored)


@pytest.mark.parametrize(
    ("address", "cidrs", "allowed"),
    [
        ("127.0.0.1", ["127.0.0.0/8"], True),
        ("::ffff:127.0.0.1", ["127.0.0.0/8"], True),
        ("::1", ["127.0.0.0/8", "::1/128"], True),
        ("10.0.0.1", ["127.0.0.0/8"], False),
        ("fe80::1%eth0", ["fe80::/10"], True),
        ("not-an-ip", ["0.0.0.0/0"], False),
        (None, ["0.0.0.0/0"], False),
    ],
)
def test_allowlist_matches_peer_addresses(
    address: str | None, cidrs: list[str], allowed: bool
) -> None:
    """CIDR checks unwrap IPv4-mapped IPv6 and fail closed on unknown peers."""
    assert ip_allowed(parse_ip(address), cidrs) is allowed


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("127.0.0.1:8088", True),
        ("[::1]:8088", True),
        ("192.168.1.20:8088", True),
        ("localhost:8088", True),
        ("raspberrypi:8088", True),  # a bare name only local resolution can answer
        ("a0d7b954-ownerlink:8088", True),  # a Home Assistant add-on's host name
        ("pi.local", True),
        ("ownerlink.home.arpa", True),
        ("Owner.Example.NET.:8443", True),  # listed, in any case, with the root's dot
        ("", True),  # HTTP/1.0 without a Host: no browser, so no rebinding
        ("rebind.attacker.example:8088", False),
        ("127.0.0.1.nip.io", False),  # a public name that resolves to loopback
        ("localhost.attacker.example", False),
        ("evil.example", False),
    ],
)
def test_host_check_refuses_public_names_nobody_listed(header: str, allowed: bool) -> None:
    """DNS rebinding needs a public name the attacker owns; those pass only when listed."""
    hosts = allowed_hosts(["owner.example.net"], None)
    assert host_allowed(host_of(header), hosts) is allowed


def test_public_url_host_is_allowed() -> None:
    assert allowed_hosts([], "https://car.example.org:8443/base") == {"car.example.org"}


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("https://app.example/cb", True),
        ("http://127.0.0.1:8123/cb", True),
        ("http://localhost/cb", True),
        ("http://[::1]:9/cb", True),
        ("com.example.app:/cb", True),
        ("http://app.example/cb", False),
        ("https://app.example/cb#frag", False),
        ("https://user:pw@app.example/cb", False),
        ("javascript:alert(1)", False),
        ("https:///nohost", False),
    ],
)
def test_redirect_uri_registration_rules(uri: str, ok: bool) -> None:
    """https, loopback http and private-use schemes only (RFC 8252, RFC 9700)."""
    assert (redirect_uri_problem(uri) is None) is ok


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/audit?x=1", "/audit?x=1"),
        ("https://evil", "/apps"),
        ("//evil", "/apps"),
        ("/\\evil", "/apps"),
        ("", "/apps"),
        (None, "/apps"),
    ],
)
def test_login_next_is_local_only(target: str | None, expected: str) -> None:
    """Only same-site paths survive as a post-login destination."""
    assert safe_next(target) == expected


def test_webhook_display_hides_the_path() -> None:
    """The webhook's path often is its secret; only scheme and host are shown."""
    assert masked_webhook("https://ha.local:8123/api/webhook/s3cr3t") == "https://ha.local:8123/…"
    assert masked_webhook(None) is None


def test_webhook_display_hides_credentials_in_the_address() -> None:
    """A webhook behind basic auth carries its password before the host (`user:pass@`): the
    Security page showed it, as part of the "host"."""
    shown = masked_webhook("https://alerts:s3cr3t@hooks.example:8443/notify")
    assert shown == "https://hooks.example:8443/…"
    assert masked_webhook("http://token@[2001:db8::1]/x") == "http://[2001:db8::1]/…"


def test_budget_chart_has_24_bars_and_an_accessible_summary() -> None:
    """The inline SVG has one bar per hour and says the total in words."""
    svg = budget_svg([1] * 24, used=24, limit=250)
    assert svg.count("<rect") == 24
    assert 'aria-label="24 of 250 provider calls used today"' in svg
    assert budget_svg([], used=0, limit=250).count("<rect") == 24


def test_budget_bars_are_drawn_against_the_hourly_cap() -> None:
    """11 calls against a cap of 40 fill about a quarter of the plot, not all of it, and the
    cap is drawn as a labelled line."""
    svg = budget_svg([11] + [0] * 23, used=11, limit=250, hourly_cap=40)
    height = float(re.search(r'<rect [^>]*height="([\d.]+)"', svg).group(1))  # type: ignore[union-attr]
    assert 0.2 < height / (HEIGHT - AXIS) < 0.3
    assert 'class="cap"' in svg and "40 an hour" in svg


@pytest.mark.parametrize(
    ("doc", "status"),
    [
        ({"status": "succeeded"}, 200),
        ({"status": "failed", "reason": "forbidden"}, 200),
        ({"status": "accepted"}, 202),
        ({"status": "timed_out"}, 202),
        ({"status": "rejected", "reason": "stepup_required"}, 403),
        ({"status": "rejected", "reason": "rate_limited"}, 429),
        ({"status": "rejected", "reason": "duplicate_id"}, 409),
        ({"status": "rejected", "reason": "unknown_vehicle"}, 404),
        ({"status": "rejected", "reason": "malformed"}, 400),
        ({"status": "rejected", "reason": "audit_unavailable"}, 503),
        ({"status": "rejected", "reason": "shutting_down"}, 503),
    ],
)
def test_command_results_map_to_http_statuses(doc: dict[str, str], status: int) -> None:
    """A refusal's reason picks the status a client can act on; done and in-flight are 2xx."""
    assert result_status(doc) == status


def test_a_bridge_halted_on_a_tampered_audit_log_answers_503_not_403() -> None:
    """With the audit log failing its check every command is refused `audit_tampered`: the
    bridge cannot take commands, like `audit_unavailable`, and it answered 403, which tells
    an app that it lacks a permission it does have."""
    assert result_status({"status": "rejected", "reason": "audit_tampered"}) == 503


def test_access_log_writes_first_of_a_kind_and_summarises_repeats() -> None:
    """Within a minute, repeats are counted; the summary is written when the minute closes."""
    audit, clock = CollectingAudit(), MutableClock(datetime(2025, 1, 1, 10, 0, 5, tzinfo=UTC))
    log = AccessLog(audit=audit, clock=clock)
    kw = {"ip": "127.0.0.1", "method": "GET", "route": "/r", "vehicle": "car"}
    assert log.record(app="a", status=200, **kw) is True
    assert log.record(app="a", status=200, **kw) is False
    log.record(app="a", status=403, **kw)
    assert [r.get("status") for r in audit.records] == [200, 403]
    log.flush()
    assert len(audit.records) == 2  # the minute is still open
    clock.advance(60)
    log.flush()
    assert audit.records[-1]["repeats"] == [
        {"route": "/r", "vehicle": "car", "status": 200, "count": 1}
    ]


async def test_a_state_failure_answers_503_without_paths_or_detail() -> None:
    """What cannot be read is named in the log, not to whoever asked: the answer says only
    where to look (`ownerlink doctor`), for API clients and pages alike."""
    scope = {"type": "http", "method": "POST", "path": "/oauth/token", "headers": []}
    answer = await state_damaged(Request(scope), StateError("cannot use /srv/state/ownerlink.db"))
    assert answer.status_code == 503
    body = bytes(answer.body).decode()
    assert "state_unavailable" in body and "ownerlink doctor" in body and "/srv" not in body
