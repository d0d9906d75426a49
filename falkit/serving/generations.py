"""The *generations* of a server's App: each instance served is one. ``Generations`` makes,
swaps, restarts and retires them for its ``Server`` (see ``falkit.serving.server`` for the
decisions): requests and sessions keep the generation they started on until they end, and a
replaced instance is torn down once nothing uses it any more.

A component the server holds: it is given what it needs (how to build a generation's
stack, the server's loop once it runs, what to do when the app is lost) and owns the rest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..app import App, assign_device
from ..asgi import LimitSpec, call_hook
from ..devices import free_memory, gpus_wanted, pick_device
from ..exceptions import ServerNotRunning, SetupError
from .logs import LogRing, current_ring
from .startup import StartupProgress

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

logger = logging.getLogger("falkit")

RETIRE_WAIT_S = 2.0  # how long a restarting cell waits for the old instance's teardown
OOM_DRAIN_S = 30.0  # how long requests on the old instance may finish before it must go


def resolve_device(app_cls: type[App]) -> str | None:
    # An App asking for a GPU learns in the serving cell whether it gets one (torch is
    # imported for that); other Apps pick their device lazily, on ``self.device``.
    return pick_device(app_cls) if gpus_wanted(app_cls) else None


def setup_failed(app_cls: type[App], exc: BaseException) -> SetupError:
    return SetupError(f"{app_cls.__name__}.setup() failed: {exc!r}")


def startup_timeout_error(app_cls: type[App], elapsed: float) -> SetupError:
    # fal's words for it: error_type "startup_timeout", "The runner did not start within
    # the allowed time", status 504 to the requests that waited for it.
    return SetupError(
        f"startup_timeout: {app_cls.__name__} did not start within the allowed time "
        f"(startup_timeout={app_cls.startup_timeout} s; setup() still running after "
        f"{elapsed:.1f} s). Make setup() faster or raise startup_timeout."
    )


def forget_handlers() -> None:
    # FastAPI (0.12x+) memoises "is this callable a coroutine/generator" in module-level
    # LRU caches keyed by the callable: our bound methods, so the App instance and its
    # models stayed alive there after a stop. Measured with a weakref (tests/test_devices).
    models = sys.modules.get("fastapi.dependencies.models")
    for name in dir(models) if models is not None else ():
        cached = getattr(models, name)
        if name.endswith("_cached") and hasattr(cached, "cache_clear"):
            cached.cache_clear()


def _out_of_memory(exc: BaseException | None) -> bool:
    # torch.OutOfMemoryError (torch.cuda.OutOfMemoryError before 2.5) or Python's own.
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


class _Hold:
    """The ASGI app served while a new instance is set up with no old one serving: each
    request waits, then goes to the new instance (or gets a 503 if its setup failed)."""

    def __init__(self, generations: Generations) -> None:
        self._generations = generations
        self._ready = asyncio.Event()

    def release(self) -> None:
        self._ready.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._ready.wait()
        gen = self._generations.current
        if gen is None or gen.asgi is self:
            from starlette.responses import JSONResponse

            if scope["type"] == "http":
                await JSONResponse({"detail": "setup failed; the app is stopped"}, 503)(
                    scope, receive, send
                )
            else:
                await send({"type": "websocket.close", "code": 1011})
            return
        gen.active += 1
        scope["falkit.hold"] = gen.hold  # as Server._dispatch sets it
        try:
            await gen.asgi(scope, receive, send)
        finally:
            gen.active -= 1


class _Generation:
    """One App instance as served: its class, instance and ASGI app, and how many requests
    and sessions are using it. A swap installs a new generation; whatever is in flight
    keeps the generation it started on until it ends."""

    __slots__ = ("active", "asgi", "instance", "limits")

    def __init__(self, instance: App | None, asgi: Any, limits: LimitSpec) -> None:
        self.instance = instance
        self.asgi = asgi
        self.limits = limits
        self.active = 0

    def hold(self) -> Callable[[], None]:
        """One more user of this generation until the function returned is called (a
        second call does nothing): its instance is not torn down before."""
        self.active += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.active -= 1

        return release

    def drop(self) -> None:
        """Forget the instance (so its models can be freed once nothing else holds them)."""
        self.instance = None
        self.asgi = None


class Generations:
    """Making, swapping, restarting and retiring the App instances of one server.

    ``build(instance, limits)`` makes a generation's ASGI stack; ``running()`` says whether
    the server still serves; ``lost()`` stops it when no instance is left to serve."""

    def __init__(
        self,
        app_cls: type[App],
        limits: LimitSpec,
        *,
        ring: LogRing,
        build: Callable[[App, LimitSpec], Any],
        running: Callable[[], bool],
        lost: Callable[[], None],
    ) -> None:
        self.app_cls = app_cls
        self.limits = limits
        self.ring = ring
        self.current: _Generation | None = None
        self.device: str | None = None
        self.setup_seconds: float | None = None
        self.last_action = ""
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, once it runs
        self._build = build
        self._running = running
        self._lost = lost
        self._retiring: set[_Generation] = set()  # replaced, awaiting teardown
        self._retire_tasks: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return self.app_cls.app_name

    @property
    def instance(self) -> App | None:
        gen = self.current
        return gen.instance if gen is not None else None

    async def prepare_first(self) -> None:
        """Set up the first generation (on the server's loop, before uvicorn starts)."""
        self.current = await self._prepare(self.app_cls, self.limits, self.device)

    async def _prepare(
        self, app_cls: type[App], limits: LimitSpec, device: str | None
    ) -> _Generation:
        """A generation of ``app_cls`` with ``setup()`` run; runs on the server's loop, and
        the server keeps serving its current generation meanwhile."""
        current_ring.set(self.ring)
        instance = app_cls()
        if device is not None:
            assign_device(instance, device)
        began = time.perf_counter()
        await call_hook(instance.setup)
        self.setup_seconds = time.perf_counter() - began
        return self._generation(instance, limits)

    def _generation(self, instance: App, limits: LimitSpec) -> _Generation:
        return _Generation(instance, self._build(instance, limits), limits)

    async def _teardown(self, instance: App | None) -> None:
        if instance is None:
            return
        try:
            await call_hook(instance.teardown)
        except Exception:
            logging.getLogger("falkit.server").exception(
                "%s.teardown() failed", type(instance).__name__
            )

    async def teardown_all(self) -> None:
        """Tear down every instance (the server is stopping), the retiring ones too."""
        for task in list(self._retire_tasks):
            task.cancel()
        await asyncio.gather(*self._retire_tasks, return_exceptions=True)
        for gen in [*self._retiring, self.current]:
            if gen is not None:
                await self._teardown(gen.instance)

    def drop_all(self) -> None:
        """Forget every instance (the server stopped): their models can be freed."""
        for gen in [self.current, *self._retiring]:
            if gen is not None:
                gen.drop()
        self.current = None
        self._retiring.clear()
        forget_handlers()
        free_memory()

    # -- hot swap and restart ------------------------------------------------------------

    def swap(self, app_cls: type[App], limits: LimitSpec) -> None:
        """Serve ``app_cls``'s handlers from now on, on the running instance's state:
        ``setup()`` does not run again. In-flight requests and open sessions finish on the
        handlers they started on."""
        began = time.perf_counter()
        old = self.instance
        new = app_cls()
        if old is not None:
            new.__dict__.update(old.__dict__)
        gen = self._generation(new, limits)
        self.app_cls, self.limits = app_cls, limits
        self.current = gen
        self.last_action = f"swapped in {(time.perf_counter() - began) * 1000:.0f} ms (setup kept)"
        # The replaced instance must not outlive its requests: it holds the state as it was
        # (a model the new handlers later replace would stay alive through it).
        forget_handlers()

    def restart(self, app_cls: type[App], limits: LimitSpec, reason: str) -> None:
        """Set up a new instance of ``app_cls`` while the current one keeps serving, then
        switch to it (no downtime, same port); the old instance is torn down once the
        requests and sessions it serves have ended. A failed or too slow ``setup()``
        raises and leaves the current instance serving."""
        device = resolve_device(app_cls)
        progress = StartupProgress(app_cls.__name__, self.ring)
        old = self.current
        try:
            gen = self._set_up(app_cls, limits, device, progress)
        except SetupError as exc:
            if not _out_of_memory(exc.__cause__):
                progress.close(f"failed after {progress.elapsed:.1f} s; the old one serves on")
                raise
            gen = self._set_up_instead_of_old(app_cls, limits, device, progress)
            old = None  # already torn down
            reason += "; old instance torn down first (not enough memory for both)"
        except BaseException:
            progress.close(f"failed after {progress.elapsed:.1f} s; the old one serves on")
            raise
        progress.close(f"ready after {progress.elapsed:.1f} s")
        self.device = device
        self.app_cls, self.limits = app_cls, limits
        self.current = gen
        self.last_action = f"restarted: {reason}"
        if old is not None:
            self._retire(old)

    def _set_up(
        self,
        app_cls: type[App],
        limits: LimitSpec,
        device: str | None,
        progress: StartupProgress,
    ) -> _Generation:
        if self.loop is None or not self._running():
            raise ServerNotRunning(f"{self.name} is not running")
        future = asyncio.run_coroutine_threadsafe(self._prepare(app_cls, limits, device), self.loop)
        try:
            return self._await_prepared(future, app_cls, progress)
        except BaseException:
            future.cancel()
            raise

    def _set_up_instead_of_old(
        self,
        app_cls: type[App],
        limits: LimitSpec,
        device: str | None,
        progress: StartupProgress,
    ) -> _Generation:
        """The restart for a model that does not fit twice (its setup ran out of memory next
        to the old one): requests are held, as fal's queue holds them while a runner
        starts; the old instance is torn down and freed, then setup runs again."""
        assert self.loop is not None
        logger.warning(
            "falkit: %s.setup() ran out of memory next to the running instance: tearing "
            "that one down first; requests wait meanwhile",
            app_cls.__name__,
        )
        old, hold = self.current, _Hold(self)
        self.current = _Generation(None, hold, LimitSpec())
        if old is not None:
            self._retire(old, wait=OOM_DRAIN_S)
        try:
            gen = self._set_up(app_cls, limits, device, progress)
        except BaseException as exc:
            self.loop.call_soon_threadsafe(hold.release)
            self._lost()
            raise SetupError(
                f"{app_cls.__name__}.setup() failed after the old instance was torn down to "
                f"make room ({exc}); the server is stopped: fix setup() and serve again"
            ) from exc
        self.current = gen
        self.loop.call_soon_threadsafe(hold.release)
        return gen

    def _await_prepared(
        self,
        future: concurrent.futures.Future[_Generation],
        app_cls: type[App],
        progress: StartupProgress,
    ) -> _Generation:
        deadline = app_cls.startup_timeout
        while True:
            try:
                return future.result(timeout=0.02)
            except concurrent.futures.TimeoutError:
                pass
            except concurrent.futures.CancelledError:
                raise SetupError(
                    f"{self.name} stopped while {app_cls.__name__} was starting"
                ) from None
            except Exception as exc:
                raise setup_failed(app_cls, exc) from exc
            if deadline is not None and progress.elapsed > deadline:
                raise startup_timeout_error(app_cls, progress.elapsed)
            progress.tick()

    def _retire(self, old: _Generation, wait: float = RETIRE_WAIT_S) -> None:
        assert self.loop is not None
        self._retiring.add(old)
        future = asyncio.run_coroutine_threadsafe(self._retire_when_idle(old), self.loop)
        # Usually nothing is in flight and teardown is quick: waiting a moment lets the cell
        # return with the old model gone. Open sessions are not waited for.
        with contextlib.suppress(concurrent.futures.TimeoutError):
            future.result(timeout=wait)
            return
        self.last_action += f"; the old version retires when its {old.active} open connections end"

    async def _retire_when_idle(self, gen: _Generation) -> None:
        current_ring.set(self.ring)
        task = asyncio.current_task()
        assert task is not None
        self._retire_tasks.add(task)
        try:
            while gen.active:
                await asyncio.sleep(0.01)
            self._retiring.discard(gen)
            instance = gen.instance
            gen.drop()
            await self._teardown(instance)
            del instance
            forget_handlers()
            free_memory()
        finally:
            self._retire_tasks.discard(task)
