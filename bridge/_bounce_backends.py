"""Where a bounce's frames are rendered: in this process, or on a running render server.

Both backends take the frames still missing (timeline index, position, resolved parameters) and
yield each finished frame as PNG bytes with its status; the bounce writes them into its own work
folder and manifest, so a bounce through a server resumes exactly like a local one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .timeline import FramePosition

__all__: list[str] = []  # private to bridge.bounce


class BackendError(RuntimeError):
    """A backend failure, with the option or field to blame."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Rendered:
    frame: int
    png: bytes
    status: str  # ok | nan | black
    faults: tuple[str, ...] = ()


class LocalFrames:
    """Render in this process with the bending engine (batched denoising passes)."""

    def __init__(self, pipe: Any, config: Any):
        from bendbridge.server.render import Renderer

        self.renderer = Renderer(pipe, config)
        self.batch = config.max_batch
        r = self.renderer
        self.setup: dict[str, Any] = {
            "model": str(getattr(pipe, "bendbridge_path", "")), "prompts": list(config.prompts), "seed": config.seed,
            "size": [r.width, r.height], "steps": r.steps, "guidance": r.guidance, "plan": config.plan.to_dict()}

    def render(self, todo: Sequence[int], positions: Sequence[FramePosition],
               params: Sequence[dict[str, dict[str, float]]]) -> Iterator[Rendered]:
        from bendbridge.server.net.output import png_bytes
        from bendbridge.server.render import FrameSpec

        for s in range(0, len(todo), self.batch):
            chunk = todo[s : s + self.batch]
            for i, res in zip(chunk, self.renderer.render([FrameSpec(params=params[i]) for i in chunk])):
                yield Rendered(i, png_bytes(res.image), res.status, tuple(str(f) for f in res.faults))

    def close(self) -> None:
        pass


class RemoteFrames:
    """Render on a ``bendbridge serve`` process: an offline session whose frames come back as PNG.

    Keeps ``window`` requests in flight so the server always has a full batch queued; every frame
    received is handed on at once, so a server lost mid-bounce loses no finished frame."""

    def __init__(self, url: str, setup: Any, *, keys: Path | None = None, client: str = "client", timeout: float = 300.0, window: int | None = None):
        from .client import RenderClient, ServerError, ServerTimeout

        self.url, self.timeout = url, timeout
        self.client = RenderClient(url, timeout=min(timeout, 30.0), keys=keys, client_name=client)
        try:
            welcome, _ = self.client.ping()
            self.client.setup(setup, timeout=timeout)
        except ServerTimeout:
            self.client.close()
            raise BackendError("--server", f"no render server answers at {url} (start one with 'bendbridge serve')") from None
        except ServerError as e:
            self.client.close()
            raise BackendError(e.error.field or "--server", f"the server refused the session: {e.error.message}") from None
        self.window = window or 2 * max(1, welcome.max_batch)
        self.setup = {"model": welcome.model, "prompts": list(setup.prompts), "seed": setup.seed,
                      "size": [setup.width, setup.height], "steps": setup.steps, "guidance": setup.guidance, "plan": setup.plan}

    def render(self, todo: Sequence[int], positions: Sequence[FramePosition],
               params: Sequence[dict[str, dict[str, float]]]) -> Iterator[Rendered]:
        from bendbridge.protocol import Error, FrameReady, FrameRequest

        from .client import ServerTimeout

        pending: dict[int, str] = {}  # frame -> request id
        refs: dict[str, int] = {}
        queue = list(todo)[::-1]
        received = 0

        def send_more() -> None:
            while queue and len(pending) < self.window:
                i = queue.pop()
                p = positions[i]
                req = FrameRequest(frame=i, sample=p.sample, seconds=float(p.seconds), beats=float(p.beats), bar=p.bar_beat.bar,
                                   beat=float(p.bar_beat.beat), params=params[i])
                mid = self.client.send(req, pos=p.sample)
                pending[i], refs[mid] = mid, i

        send_more()
        while pending:
            try:
                pkt = self.client.recv(self.timeout)
            except ServerTimeout:
                raise BackendError("--server", f"no frame from {self.url} within {self.timeout:g} s; the {received} frames received "
                                               f"are kept: run the same command again to resume") from None
            m = pkt.message
            if isinstance(m, FrameReady) and m.frame in pending:
                if m.status == "dropped":
                    raise BackendError("--server", f"the server dropped frame {m.frame} (is the session in live mode?)")
                if m.data is None:
                    raise BackendError("--server", f"the server sent frame {m.frame} without its image (it speaks an older protocol)")
                refs.pop(pending.pop(m.frame), None)
                received += 1
                yield Rendered(m.frame, m.data, "ok" if m.status == "resumed" else m.status, tuple(m.faults or ()))
                send_more()
            elif isinstance(m, Error):
                frame = refs.get(m.ref or "")
                where = f"frame {frame}" if frame is not None else "the bounce"
                raise BackendError(m.field or "--server", f"the server refused {where}: [{m.code}] {m.message}")

    def close(self) -> None:
        from bendbridge.protocol import Bye

        try:
            self.client.send(Bye(reason="bounce finished"))
        finally:
            self.client.close()
