"""The daemon's registry loop: broker sync at start, retries with backoff, other processes' edits.

`ownerlink apps …` runs in its own process and writes the same database, so the daemon polls the
registry's change feed (cheap: one indexed SELECT, on the loop) to fire its listeners within a
second — that is how a revocation from the command line removes Home Assistant discovery at once.
"""

from __future__ import annotations

import asyncio
import contextlib

from bridge.access.apps import AppRegistry
from bridge.errors import BrokerError
from bridge.logs import get_logger

log = get_logger(__name__)


class SyncLoop:
    """Keeps the broker in step with the registry while the daemon runs."""

    def __init__(
        self,
        *,
        registry: AppRegistry,
        poll_interval_s: float = 0.5,
        retry_min_s: float = 1.0,
        retry_max_s: float = 60.0,
    ) -> None:
        self._registry = registry
        self._poll = poll_interval_s
        self._retry_min = retry_min_s
        self._retry_max = retry_max_s
        self._task: asyncio.Task[None] | None = None
        self.in_sync = asyncio.Event()  # set after each successful sync (tests await it)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registry-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due, delay, first = loop.time(), self._retry_min, True
        while True:
            try:
                # Two indexed SELECTs on a local file, run on the loop as the command path's app
                # lookup is: handing them to a worker thread cost two thread wake-ups each, four
                # times a second, and was most of what an idle daemon spent.
                self._registry.poll_changes()
                if loop.time() >= due and (first or self._needs_sync()):
                    if await self._sync_once():
                        delay, first = self._retry_min, False
                    else:
                        due, delay = loop.time() + delay, min(delay * 2, self._retry_max)
            except Exception:  # a bad poll must not end the loop that keeps the broker in step
                log.exception("registry_loop_failed")
            await asyncio.sleep(self._poll)

    def _needs_sync(self) -> bool:
        return self._registry.has_pending()

    async def _sync_once(self) -> bool:
        try:
            report = await asyncio.to_thread(self._registry.sync_broker)
        except BrokerError as exc:
            self.in_sync.clear()
            log.warning("broker_sync_failed", error=str(exc), retry="with backoff")
            return False
        if report.changed:
            log.info("broker_synced", changed=list(report.changed))
        self.in_sync.set()
        return True
