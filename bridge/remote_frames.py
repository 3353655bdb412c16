"""Rendering a bounce's frames on a running ``bendbridge serve``: an offline session whose frames
come back as PNG over the protocol (``session_setup.deliver = "png"``, protocol 1.1)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from bendbridge.protocol import Bye, Error, FrameReady, FrameRequest, SessionSetup
from bendbridge.protocol.frames import FrameParams, FrameSourceError, PictureOf, RenderedFrame
from bendbridge.protocol.plan import BendPlan
from bendbridge.protocol.position import FramePosition
from bendbridge.protocol.render import render_identity

from .client import RenderClient, ServerError, ServerTimeout

__all__ = ["RemoteFrames"]


class RemoteFrames:
    """Keeps ``window`` requests in flight so the server always has a full batch queued; every
    frame received is handed on at once, so a server lost mid-bounce loses no finished frame."""

    def __init__(
        self,
        url: str,
        setup: SessionSetup,
        *,
        keys: Path | None = None,
        client: str = "client",
        timeout: float = 300.0,
        window: int | None = None,
        rate: int = 48_000,
    ):
        """``rate``: the session's sample rate, in which frame positions are counted."""
        self.url, self.timeout = url, timeout
        self.client = RenderClient(url, timeout=min(timeout, 30.0), keys=keys, client_name=client, rate=rate)
        try:
            welcome, _ = self.client.ping()
            self.client.setup(setup, timeout=timeout)
        except ServerTimeout:
            self.client.close()
            raise FrameSourceError(
                "--server", f"no render server answers at {url} (start one with 'bendbridge serve')"
            ) from None
        except ServerError as e:
            self.client.close()
            raise FrameSourceError(
                e.error.field or "--server", f"the server refused the session: {e.error.message}"
            ) from None
        self.window = window or 2 * max(1, welcome.max_batch)
        self.identity = render_identity(welcome.model, setup.settings, BendPlan.from_dict(setup.plan or {}))

    def render(
        self,
        todo: Sequence[int],
        positions: Sequence[FramePosition],
        params: Sequence[FrameParams],
        pictures: PictureOf | None = None,
    ) -> Iterator[RenderedFrame]:
        pending: dict[int, str] = {}  # frame -> request id
        frame_of: dict[str, int] = {}  # request id -> frame
        queue = list(todo)[::-1]
        received = 0

        def send_more() -> None:
            while queue and len(pending) < self.window:
                i = queue.pop()
                picture = pictures(i) if pictures is not None else None
                request = FrameRequest(**positions[i].wire(), params=params[i], picture=picture)
                mid = self.client.send(request, pos=positions[i].sample)
                pending[i], frame_of[mid] = mid, i

        send_more()
        while pending:
            try:
                m = self.client.recv(self.timeout).message
            except ServerTimeout:
                raise FrameSourceError(
                    "--server",
                    f"no frame from {self.url} within {self.timeout:g} s; the {received} frames "
                    f"received are kept: run the same command again to resume",
                ) from None
            if isinstance(m, FrameReady) and m.frame in pending:
                yield self._received(m)
                frame_of.pop(pending.pop(m.frame), None)
                received += 1
                send_more()
            elif isinstance(m, Error):
                frame = frame_of.get(m.ref or "")
                where = f"frame {frame}" if frame is not None else "the bounce"
                raise FrameSourceError(m.field or "--server", f"the server refused {where}: [{m.code}] {m.message}")

    def _received(self, m: FrameReady) -> RenderedFrame:
        if m.status == "dropped":
            raise FrameSourceError("--server", f"the server dropped frame {m.frame} (is the session in live mode?)")
        if m.data is None:
            raise FrameSourceError(
                "--server", f"the server sent frame {m.frame} without its image (it speaks an older protocol)"
            )
        return RenderedFrame(m.frame, m.data, "ok" if m.status == "resumed" else m.status, tuple(m.faults or ()))

    def close(self) -> None:
        try:
            self.client.send(Bye(reason="bounce finished"))
        finally:
            self.client.close()
