"""The provider's HTTP edge: every request to the car maker leaves through `Edge.send`.

`Edge.send` charges the call gate, applies an explicit timeout to the whole request, reads at most
MAX_BODY_BYTES and turns transport failures into `ProviderUnavailable`. `check_status` maps HTTP
statuses onto `bridge.errors`, and `AuthorizedApi.call` adds the bearer token and the
one-refresh-then-retry rule for 401:

    401 → refresh once, retry once → ReauthRequired     403 → Forbidden
    404, 400, v1 401/3000 (vehicle not in the consent, expired command id) → NotFound
    406 → Unsupported      429 → RateLimited(retry_after)      5xx, timeouts, bad JSON → Unavailable
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from bridge.errors import (
    Forbidden,
    NotFound,
    ProviderUnavailable,
    ProviderUnreachable,
    RateLimited,
    ReauthRequired,
    Unsupported,
)
from bridge.logs import get_logger, scrub_text
from bridge.providers.barrier import held_record
from bridge.providers.base import CallGate, CallKind

DEFAULT_RETRY_AFTER_S = 60.0
# The largest answer read: Ford's documents are kilobytes (a full Query telemetry some tens); a
# runaway body from a proxy or a broken edge must not run a small machine out of memory.
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_RETRY_AFTER_S = 24 * 3600.0
# Error text from the server ends up in exception messages and logs; keep it short and scrubbed.
_MAX_DETAIL = 200

# A path level that names something rather than an endpoint: the provider's vehicle id (32 hex
# digits at FordConnect), a VIN (17 characters), a command id. Endpoints are words ("lock",
# "vehicle-health", "v1"): short, or without digits.
_ID_LEVEL = re.compile(r"(?=[^/]*\d)[A-Za-z0-9_.-]{12,}")
ID_SHOWN = "{id}"
# v1 error 3000 is "not authorised for this resource" (a vehicle outside the consent, an expired
# command id): a new token would not change the answer, so it must not cost a refresh.
_RESOURCE_REFUSAL_CODE = 3000

log = get_logger(__name__)


class TokenSource(Protocol):
    """Hands out a valid access token and refreshes it when the API refused one."""

    async def access_token(self) -> str:
        """A token valid for at least the next minute; raises ReauthRequired when there is none."""
        ...

    async def refresh_rejected(self, rejected: str) -> None:
        """The API refused `rejected`: refresh, unless a concurrent caller already has."""
        ...


def where(method: str, url: str) -> str:
    """`GET /path` for messages: never the query string, which could carry a code, and never
    the ids in the path. These messages reach command results, the audit log and alerts, where
    the provider's vehicle id must not appear (the owner's slug stands for the car there)."""
    path = urlsplit(url).path or "/"
    return f"{method} {'/'.join(_shown_level(level) for level in path.split('/'))}"


def _shown_level(level: str) -> str:
    return ID_SHOWN if _ID_LEVEL.fullmatch(level) else level


@lru_cache(maxsize=256)
def parsed_url(url: str) -> httpx.URL:
    """`url` parsed once: a daemon asks the same few URLs all day, and httpx's URL parser is the
    costliest step of building a request (about half of it, more on a cold CPU)."""
    return httpx.URL(url)


class Edge:
    """The one door for provider requests: gate first, explicit timeout, transport errors mapped."""

    def __init__(
        self, *, account: str, client: httpx.AsyncClient, gate: CallGate, timeout_s: float
    ) -> None:
        self.account = account
        self._client = client
        self._gate = gate
        self._timeout = httpx.Timeout(timeout_s)
        self._timeout_s = timeout_s

    async def send(
        self,
        method: str,
        url: str,
        *,
        kind: CallKind,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Charge the gate, send, and return the response whatever its status, its body read
        (at most MAX_BODY_BYTES) within the timeout as a whole."""
        # A command's request names its decision record, which may pay for it (see CallGate).
        record = held_record() if kind is CallKind.COMMAND else None
        commit = self._gate.charge(self.account, kind, record=record)  # may raise BudgetExhausted
        try:
            request = self._client.build_request(
                method,
                parsed_url(url),
                headers=headers,
                json=json_body,
                data=form,
                timeout=self._timeout,
            )
            # httpx's timeout bounds each read, not the whole: a body trickling a byte at a time
            # would hold the poll (and the daemon's stop) for good.
            async with asyncio.timeout(self._timeout_s):
                return await self._receive(request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # Before any byte of the request: a command's result can say it was not sent.
            name = type(exc).__name__
            raise ProviderUnreachable(f"{where(method, url)}: {name}: {_short(str(exc))}") from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ProviderUnavailable(f"{where(method, url)}: timed out") from exc
        except httpx.HTTPError as exc:
            name = type(exc).__name__
            raise ProviderUnavailable(f"{where(method, url)}: {name}: {_short(str(exc))}") from exc
        finally:
            if commit is not None:
                commit()

    async def _receive(self, request: httpx.Request) -> httpx.Response:
        """The response with its body read, refusing one larger than MAX_BODY_BYTES."""
        response = await self._client.send(request, stream=True)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    label = where(request.method, str(request.url))
                    raise ProviderUnavailable(f"{label}: answer larger than {MAX_BODY_BYTES} bytes")
        finally:
            await response.aclose()
        # The body is decoded already: a copy without the encoding headers reads it as it is.
        kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _DECODED]
        return httpx.Response(
            response.status_code, headers=kept, content=bytes(body), request=request
        )

    async def aclose(self) -> None:
        await self._client.aclose()


# Headers describing the body as sent, no longer true of the decoded copy `_receive` returns.
_DECODED = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def check_status(response: httpx.Response) -> None:
    """Raise the `bridge.errors` class for a non-2xx response (401 is the caller's to handle)."""
    status = response.status_code
    if status < 300:
        return
    label = f"{where(response.request.method, str(response.request.url))}: HTTP {status}"
    detail = error_detail(response)
    text = f"{label}: {detail}" if detail else label
    if status == 401 and error_code(response) == _RESOURCE_REFUSAL_CODE:
        raise NotFound(text)
    if status == 401:
        raise ReauthRequired(text)
    if status == 403:
        raise Forbidden(text)
    if status in (400, 404):
        raise NotFound(text)
    if status == 406:
        raise Unsupported(text)
    if status == 429:
        raise RateLimited(text, retry_after=retry_after_s(response))
    raise ProviderUnavailable(text)


def decode_json(response: httpx.Response) -> Any:
    """The JSON body, or ProviderUnavailable: a garbled answer is the server's fault."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        label = where(response.request.method, str(response.request.url))
        raise ProviderUnavailable(f"{label}: malformed JSON in the response") from exc


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The body as a JSON object; any other JSON shape is as malformed as bad syntax."""
    body = decode_json(response)
    if not isinstance(body, dict):
        label = where(response.request.method, str(response.request.url))
        raise ProviderUnavailable(f"{label}: expected a JSON object")
    return body


def retry_after_s(response: httpx.Response, now: float | None = None) -> float:
    """Seconds from `Retry-After` (delta-seconds or an HTTP date), else a cautious default;
    never more than a day (`inf` or a year 9999 date would overflow every date computed from it,
    and no rate limit lasts that long)."""
    raw = response.headers.get("Retry-After", "").strip()
    if not raw:
        return DEFAULT_RETRY_AFTER_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = _until_date(raw, time.time() if now is None else now)
    if not math.isfinite(seconds):
        return DEFAULT_RETRY_AFTER_S
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def _until_date(raw: str, now: float) -> float:
    try:
        at = parsedate_to_datetime(raw)
        # HTTP dates are GMT; the asctime form (and "-0000") name no zone, and a naive
        # datetime's timestamp() would read them in local time, hours early east of UTC.
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() - now
    except (TypeError, ValueError, OverflowError):
        return DEFAULT_RETRY_AFTER_S


def error_detail(response: httpx.Response) -> str:
    """The server's own words about an error, from either API's error shape, scrubbed and short."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _short(response.text)
    return _short(_detail_from(body))


def error_code(response: httpx.Response) -> int | None:
    """The v1 `error.code` (3000, 4002, 4006…) when the body has one."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) else None


def _detail_from(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict):
        parts = [error.get("title"), error.get("details")]
        return " — ".join(str(p) for p in parts if p)
    for key in ("message", "error_description", "error"):
        if isinstance(body.get(key), str):
            return str(body[key])
    return ""


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return scrub_text(flat[:_MAX_DETAIL])


class AuthorizedApi:
    """Bearer-authenticated JSON calls for one account, with the 401 refresh-and-retry-once rule."""

    def __init__(
        self, *, edge: Edge, tokens: TokenSource, headers: Mapping[str, str] | None = None
    ) -> None:
        self._edge = edge
        self._tokens = tokens
        self._headers = dict(headers or {})

    @property
    def account(self) -> str:
        return self._edge.account

    async def call(
        self, method: str, url: str, *, kind: CallKind, json_body: Any = None
    ) -> dict[str, Any]:
        """Send with a valid token; a 401 costs one refresh and one retry, then ReauthRequired."""
        token = await self._tokens.access_token()
        response = await self._send(method, url, kind=kind, token=token, json_body=json_body)
        if _token_refused(response):
            log.info("provider.token_refused", account=self.account, call=where(method, url))
            await self._tokens.refresh_rejected(token)
            token = await self._tokens.access_token()
            response = await self._send(method, url, kind=kind, token=token, json_body=json_body)
            if _token_refused(response):
                raise ReauthRequired(
                    f"account {self.account}: the API refused a freshly refreshed token "
                    f"({where(method, url)}: {error_detail(response) or 'HTTP 401'}); "
                    f"check application_id, or run `ownerlink login {self.account}`"
                )
        check_status(response)
        return json_object(response)

    async def _send(
        self, method: str, url: str, *, kind: CallKind, token: str, json_body: Any
    ) -> httpx.Response:
        headers = {
            **self._headers,
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
        }
        return await self._edge.send(method, url, kind=kind, headers=headers, json_body=json_body)

    async def aclose(self) -> None:
        await self._edge.aclose()


def _token_refused(response: httpx.Response) -> bool:
    return response.status_code == 401 and error_code(response) != _RESOURCE_REFUSAL_CODE
