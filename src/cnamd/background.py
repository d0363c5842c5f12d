"""A loop that works beside the serving until stopped (the order worker, the
change-log pruner): started once, cancelled at shutdown between or inside a batch,
whose transaction then rolls back whole."""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar

__all__ = ["BackgroundLoop"]


class BackgroundLoop:
    """``start()`` runs ``_run()`` as a named task; ``stop()`` cancels it and waits."""

    task_name: ClassVar[str]

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        raise NotImplementedError
