"""``fal.toolkit.utils.endpoint``: end a handler's work when its client goes away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any


@contextlib.asynccontextmanager
async def cancel_on_disconnect(request: Any) -> AsyncIterator[None]:
    """Run the block, and cancel it if the client disconnects first (fal's queue cancel
    reaches a running request as a disconnect too); the code after the block runs either
    way. ``request`` is the handler's ``fastapi.Request``::

        async with cancel_on_disconnect(request):
            await generate(...)
    """
    block = asyncio.current_task()
    assert block is not None, "cancel_on_disconnect runs inside a request's task"
    gone = asyncio.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone.set()
        block.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        yield
    except asyncio.CancelledError:
        if not gone.is_set():
            raise  # cancelled for another reason: not ours to swallow
        block.uncancel()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
