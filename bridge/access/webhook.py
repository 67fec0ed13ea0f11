"""Delivers alert documents to the owner's webhook: generic JSON POSTs from a background task.

`submit` only appends to a bounded queue (oldest dropped when full) and wakes the task, from any
thread, so raising an alert never waits on the network. Failed deliveries are retried with
exponential backoff; a 4xx other than 408/429 is final (retrying the same body cannot help).
The URL is never logged: webhook URLs often embed a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from bridge.config import AlertsConfig
from bridge.logs import get_logger

log = get_logger(__name__)

RETRYABLE_STATUS = frozenset({408, 429})


class WebhookSender:
    """A bounded queue of JSON documents and the task that POSTs them."""

    def __init__(
        self,
        *,
        url: str,
        timeout_s: float,
        retries: int,
        queue_size: int = 100,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url
        self._host = urlsplit(url).hostname or "webhook"
        self._timeout = timeout_s
        self._retries = retries
        self._backoff = backoff_s
        self._backoff_max = backoff_max_s
        self._transport = transport
        self._queue: deque[dict[str, Any]] = deque(maxlen=queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def submit(self, document: Mapping[str, Any]) -> None:
        """Queue a document for delivery. Never blocks; callable from any thread."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            log.warning("webhook_queue_full", host=self._host, dropped=self.dropped)
        self._queue.append(dict(document))
        self._wake()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Deliver what is queued for up to `drain_timeout_s`, then give up and close."""
        if self._task is None:
            return
        self._stopping = True
        self._wake()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), drain_timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._queue:
            log.warning("webhook_undelivered", host=self._host, count=len(self._queue))
        self._task = None

    def _wake(self) -> None:
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None:
            return  # not started: start() picks the queue up
        with contextlib.suppress(RuntimeError):  # the loop has closed; nothing left to wake
            loop.call_soon_threadsafe(wakeup.set)

    async def _run(self) -> None:
        assert self._wakeup is not None
        async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport) as client:
            while True:
                while self._queue:
                    await self._deliver(client, self._queue.popleft())
                if self._stopping:
                    return
                self._wakeup.clear()
                if not self._queue:  # re-check: a submit may have landed before the clear
                    await self._wakeup.wait()

    async def _deliver(self, client: httpx.AsyncClient, document: dict[str, Any]) -> None:
        for attempt in range(self._retries + 1):
            outcome = await self._post(client, document)
            if outcome is None:
                self.delivered += 1
                return
            final = outcome.startswith("final")
            log.warning("webhook_failed", host=self._host, attempt=attempt + 1, error=outcome)
            if final or attempt == self._retries:
                break
            await asyncio.sleep(self._delay(attempt))
        self.failed += 1

    async def _post(self, client: httpx.AsyncClient, document: dict[str, Any]) -> str | None:
        """None when delivered; otherwise why not (prefixed `final` when a retry cannot help)."""
        try:
            # httpx's timeout bounds each read, not the request: an endpoint sending its answer
            # a byte at a time would hold this sender, and every alert after it, indefinitely.
            async with asyncio.timeout(self._timeout):
                response = await client.post(self._url, json=document)
        except TimeoutError:
            return "timed out"
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if response.is_success:
            return None
        status = response.status_code
        if 400 <= status < 500 and status not in RETRYABLE_STATUS:
            return f"final: HTTP {status}"
        return f"HTTP {status}"

    def _delay(self, attempt: int) -> float:
        # Jitter spreads retries from several alerts so they do not arrive in lock-step.
        delay = min(self._backoff * 2.0**attempt, self._backoff_max)
        return delay * random.uniform(0.8, 1.2)


def webhook_from_config(config: AlertsConfig, **kwargs: Any) -> WebhookSender | None:
    """The sender for `alerts.webhook_url`, or None when no webhook is configured."""
    if not config.webhook_url:
        return None
    return WebhookSender(
        url=config.webhook_url,
        timeout_s=config.webhook_timeout_s,
        retries=config.webhook_retries,
        **kwargs,
    )


async def send_all(
    sender: WebhookSender, documents: Sequence[Mapping[str, Any]], drain_timeout_s: float = 10.0
) -> None:
    """Deliver a batch and return (for one-off CLI runs, where there is no daemon loop)."""
    for document in documents:
        sender.submit(document)
    await sender.start()
    await sender.stop(drain_timeout_s)
