"""Password throttling: too many wrong passwords from one address in a window answer 429, and
so do too many from all addresses together, except to an address the owner logged in from.

"One address" is one IPv4 address or one IPv6 /64: a single IPv6 host usually holds a whole /64
and can pick a fresh address for every guess.

The bound on all addresses together is there because a guesser on the LAN can claim many
addresses and stay under each one's allowance. Anyone can fill it, so it must not lock the owner
out: an address that logged in within `KNOWN_FOR_S` keeps only its own allowance, and for
everyone else it lifts as the window moves on (refused attempts do not count, so a flood cannot
keep it closed for longer than the window after its last counted failure).

Every form that checks the owner's password (login, and the Security page's re-checks) draws on
the same allowance. Failures and the addresses logged in from are kept in SQLite so restarting
the daemon does not hand an attacker a fresh allowance.
"""

from __future__ import annotations

from ipaddress import IPv6Address, ip_network

from bridge.store import Store
from bridge.web.netguard import parse_ip
from bridge.web.ports import Clock

IPV6_SITE_PREFIX = 64
# Failures from all addresses together per window: this many times the per-address figure.
GLOBAL_FACTOR = 4
# How long an address the owner logged in from stays exempt from the bound on all addresses.
KNOWN_FOR_S = 30 * 24 * 3600.0


def client_key(ip: str) -> str:
    """The key failures count under: the IPv4 address, or the IPv6 address's /64 network."""
    addr = parse_ip(ip)
    if isinstance(addr, IPv6Address):
        return str(ip_network(f"{addr}/{IPV6_SITE_PREFIX}", strict=False))
    return str(addr) if addr is not None else ip


class LoginLimiter:
    """Counts failed logins per client address (an IPv6 /64) and in all, in a sliding window."""

    def __init__(self, *, store: Store, clock: Clock, max_failures: int, window_s: float) -> None:
        self.store = store
        self.clock = clock
        self.max_failures = max_failures
        self.window_s = window_s

    def retry_after(self, ip: str) -> float | None:
        """Seconds until the address may try again, or None when it is not blocked."""
        key, since = client_key(ip), self.clock().timestamp() - self.window_s
        own = self._rows("WHERE ip = ? AND ts > ?", (key, since))
        wait = self._wait(own, self.max_failures, since)
        if wait is not None or self._known(key):
            return wait
        every = self._rows("WHERE ts > ?", (since,))
        return self._wait(every, GLOBAL_FACTOR * self.max_failures, since)

    def _rows(self, where: str, params: tuple[object, ...]) -> list[float]:
        sql = f"SELECT ts FROM web_login_failures {where} ORDER BY ts"  # noqa: S608 (fixed text)
        return [float(row["ts"]) for row in self.store.query(sql, params)]

    @staticmethod
    def _wait(times: list[float], limit: int, since: float) -> float | None:
        if len(times) < limit:
            return None
        # The block lifts when the oldest failure that still counts leaves the window.
        return max(1.0, times[len(times) - limit] - since)

    def _known(self, key: str) -> bool:
        since = self.clock().timestamp() - KNOWN_FOR_S
        return bool(
            self.store.query("SELECT 1 FROM web_login_known WHERE ip = ? AND ts > ?", (key, since))
        )

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
        """Forget an address's failures once it has given the password (or setup code) right,
        and remember it as one the owner uses."""
        key, now = client_key(ip), self.clock().timestamp()
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM web_login_failures WHERE ip = ?", (key,))
            conn.execute("DELETE FROM web_login_known WHERE ts <= ?", (now - KNOWN_FOR_S,))
            conn.execute(
                "INSERT INTO web_login_known (ip, ts) VALUES (?, ?) "
                "ON CONFLICT (ip) DO UPDATE SET ts = excluded.ts",
                (key, now),
            )
