"""Password throttling: too many wrong passwords from one address in a window answer 429.

"One address" is one IPv4 address or one IPv6 /64: a single IPv6 host usually holds a whole /64
and can pick a fresh address for every guess.

Every form that checks the owner's password (login, and the Security page's re-checks) draws on
the same allowance. Failures are kept in SQLite so restarting the daemon does not hand an attacker
a fresh allowance.
"""

from __future__ import annotations

from ipaddress import IPv6Address, ip_network

from bridge.store import Store
from bridge.web.netguard import parse_ip
from bridge.web.ports import Clock

IPV6_SITE_PREFIX = 64


def client_key(ip: str) -> str:
    """The key failures count under: the IPv4 address, or the IPv6 address's /64 network."""
    addr = parse_ip(ip)
    if isinstance(addr, IPv6Address):
        return str(ip_network(f"{addr}/{IPV6_SITE_PREFIX}", strict=False))
    return str(addr) if addr is not None else ip


class LoginLimiter:
    """Counts failed logins per client address (an IPv6 /64) within a sliding window."""

    def __init__(self, *, store: Store, clock: Clock, max_failures: int, window_s: float) -> None:
        self.store = store
        self.clock = clock
        self.max_failures = max_failures
        self.window_s = window_s

    def retry_after(self, ip: str) -> float | None:
        """Seconds until the address may try again, or None when it is not blocked."""
        since = self.clock().timestamp() - self.window_s
        rows = self.store.query(
            "SELECT ts FROM web_login_failures WHERE ip = ? AND ts > ? ORDER BY ts",
            (client_key(ip), since),
        )
        if len(rows) < self.max_failures:
            return None
        # The block lifts when the oldest failure that still counts leaves the window.
        oldest = float(rows[len(rows) - self.max_failures]["ts"])
        return max(1.0, oldest - since)

    def attempt(self, ip: str) -> float | None:
        """Begin a password check: seconds to wait when the address is blocked, else None; the
        attempt then counts as a failure until `clear` says it was right.

        Counted before the check, not after it: the check (scrypt) runs off the event loop, so
        requests sent in parallel would all pass the gate before the first failure was written.
        Gate and count run together on the loop, with nothing awaited between them.
        """
        wait = self.retry_after(ip)
        if wait is None:
            self.fail(ip)
        return wait

    def fail(self, ip: str) -> None:
        now = self.clock().timestamp()
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM web_login_failures WHERE ts <= ?", (now - self.window_s,))
            conn.execute(
                "INSERT INTO web_login_failures (ip, ts) VALUES (?, ?)", (client_key(ip), now)
            )

    def clear(self, ip: str) -> None:
        """Forget an address's failures once it has logged in correctly."""
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM web_login_failures WHERE ip = ?", (client_key(ip),))
