"""Builds one Provider per configured account, each with its own HTTP client and token manager."""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from bridge.config import AccountConfig, Settings
from bridge.events import AlertSink
from bridge.providers.barrier import hold_request
from bridge.providers.base import CallGate, OnRefused, Provider
from bridge.providers.fordconnect import V1_BASE_URL, FordConnectProvider, v1_headers
from bridge.providers.fordconnect_query import QUERY_BASE_URL, FordConnectQueryProvider
from bridge.providers.http import AuthorizedApi, Edge
from bridge.providers.oauth import OAuthClient
from bridge.providers.tokens import TokenManager, TokenStore

# Hosts that are Ford's own: the simulator's extensions are never offered against them.
FORD_DOMAINS = ("ford.com", "b2clogin.com", "onmicrosoft.com")


@dataclass(frozen=True, slots=True)
class AccountParts:
    """What one account is made of, for callers that need more than the Provider (the login)."""

    provider: Provider
    api: AuthorizedApi
    tokens: TokenManager
    oauth: OAuthClient


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """One TLS context for every account's client: each costs ~1 MB and ~30 ms to build, and they
    would all be the same (the system's CAs, certificate and host name checks on)."""
    return ssl.create_default_context()


def build_providers(
    settings: Settings,
    *,
    gate: CallGate,
    alerts: AlertSink,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    on_refused: OnRefused | None = None,
) -> dict[str, Provider]:
    """A Provider per `accounts:` entry, keyed by account name. Nothing touches the network yet.
    `on_refused` hears of the 429s and 403s a command's status polls meet (see OnRefused)."""
    return {
        name: build_account(
            settings,
            name,
            gate=gate,
            alerts=alerts,
            transport=transport,
            clock=clock,
            on_refused=on_refused,
        ).provider
        for name in settings.accounts
    }


def build_account(
    settings: Settings,
    name: str,
    *,
    gate: CallGate,
    alerts: AlertSink,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    on_refused: OnRefused | None = None,
) -> AccountParts:
    """The provider, token manager and OAuth client of one account, sharing one HTTP client."""
    config = settings.accounts[name]
    client = httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        verify=shared_tls_context(),
        # The last step before a request reaches the transport: a command's first request waits
        # there for its audit record to be durable.
        event_hooks={"request": [hold_request]},
    )
    edge = Edge(account=name, client=client, gate=gate, timeout_s=config.request_timeout_s)
    oauth = OAuthClient(config=config, edge=edge, clock=clock)
    tokens = TokenManager(
        account=name, store=TokenStore(settings.state_dir), oauth=oauth, alerts=alerts, clock=clock
    )
    headers = v1_headers(config.application_id) if config.provider == "fordconnect" else {}
    api = AuthorizedApi(edge=edge, tokens=tokens, headers=headers)
    provider = _provider(settings, name, config, api, on_refused=on_refused, clock=clock)
    return AccountParts(provider, api, tokens, oauth)


def _provider(
    settings: Settings,
    name: str,
    config: AccountConfig,
    api: AuthorizedApi,
    *,
    on_refused: OnRefused | None,
    clock: Callable[[], float],
) -> Provider:
    # Upload stamps more than a day ahead of `clock` are refused as a wrong car clock. A simulator
    # may run faster than real time (the demo runs at 60x), so its stamps are only checked
    # against the year 2000. The command deadline keeps its own monotonic clock.
    extension = is_extension_server(config.api_base_url)
    wall_clock = None if extension else clock
    if config.provider == "fordconnect-query":
        return FordConnectQueryProvider(
            name,
            api=api,
            base_url=config.api_base_url or QUERY_BASE_URL,
            read_alerts=config.health_alerts,
            wall_clock=wall_clock,
        )
    return FordConnectProvider(
        name,
        api=api,
        base_url=config.api_base_url or V1_BASE_URL,
        poll_interval_s=settings.commands.status_poll_interval_s,
        command_timeout_s=settings.commands.timeout_s,
        horn_lights_extension=extension,
        on_refused=on_refused,
        wall_clock=wall_clock,
    )


def is_extension_server(api_base_url: str | None) -> bool:
    """True for a configured non-Ford server (the simulator), whose extensions we may use."""
    if api_base_url is None:
        return False
    host = (urlsplit(api_base_url).hostname or "").lower()
    return not any(host == d or host.endswith(f".{d}") for d in FORD_DOMAINS)
