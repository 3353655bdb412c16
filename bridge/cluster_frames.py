"""Rendering a bounce's frames on a Ray cluster (``bendbridge bounce --cluster ray``): render workers
are Ray actors that load the model once and render batches of frames; the bridge plans the frames,
keeps at most ``in_flight`` batches queued on each worker, and hands every finished frame to the
bounce as it comes (the bounce writes it atomically with its manifest line, in any order).

A worker that dies (its process killed, its node lost) fails its batches with ``ActorDiedError``:
those batches are queued again and a new worker is started in its place, so every frame is
rendered and written exactly once (a batch's frames come back together, or not at all). A driver
that dies is resumed by running the same command: the bounce skips the frames already written.

``--cluster ray`` starts a private Ray on this machine with ``--workers N`` render workers, every
port on 127.0.0.1 and token authentication on (Ray's default); ``ray://HOST:PORT`` or ``auto``
joins an existing cluster (see the README's *Bigger than one machine*). Workers need the render
side installed (``bendbridge[server]``); the bridge process does not: the worker class
(``bendbridge.server.cluster_worker.RenderWorker``, torch-free until a worker builds it) is handed
in by the caller, as the in-process renderer is.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bendbridge.protocol.frames import FrameParams, FrameSourceError, PictureOf, RenderedFrame
from bendbridge.protocol.inversion import InversionSettings
from bendbridge.protocol.position import FramePosition

__all__ = ["ClusterSpec", "ClusterFrames", "parse_cluster", "start_local_ray"]


@dataclass(frozen=True)
class ClusterSpec:
    """Where to render: ``address`` None (a private local Ray) or a Ray address (``ray://…``, ``auto``);
    ``workers`` render workers; ``gpus`` per worker (1 on GPU nodes, 0 on CPUs)."""

    address: str | None = None
    workers: int = 2
    gpus: float = 0.0
    in_flight: int = 2


def parse_cluster(text: str, workers: int, field: str = "--cluster") -> ClusterSpec:
    """``ray`` (local), ``ray://HOST:PORT`` or ``auto``; ``workers`` 1 … 256."""
    if not 1 <= workers <= 256:
        raise FrameSourceError("--workers", f"{workers} is outside 1…256")
    if text == "ray":
        return ClusterSpec(None, workers)
    if text == "auto" or text.startswith("ray://"):
        return ClusterSpec(text, workers, gpus=1.0)
    raise FrameSourceError(field, f"{text!r} is not valid; allowed: ray (a private local Ray), ray://HOST:PORT, auto")


LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray keeps every port on 127.0.0.1 (read at import)


def start_local_ray(cpus: int) -> None:
    """A private Ray on this machine with ``cpus`` CPUs, every port on 127.0.0.1 (token auth: Ray's
    default). Ray reads the loopback setting when it is imported, so it is set before; a Ray that
    was imported without it, and binds another address, is stopped and refused."""
    os.environ.setdefault(LOOPBACK_ONLY, "0")  # without it Ray on Linux binds the machine's address
    import ray

    ray.init(
        num_cpus=max(cpus, 1), include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
        configure_logging=False,
    )  # fmt: skip
    bound = {n["NodeManagerAddress"] for n in ray.nodes()}
    if bound != {"127.0.0.1"}:
        ray.shutdown()
        raise FrameSourceError(
            "--cluster", f"the private Ray bound {', '.join(sorted(bound))}, not 127.0.0.1: set {LOOPBACK_ONLY}=0 "
            "before Ray is imported"
        )  # fmt: skip


class ClusterFrames:
    """A :class:`~bendbridge.protocol.frames.FrameSource` on Ray render workers."""

    def __init__(
        self, cluster: ClusterSpec, settings: Any, plan: Any, batch: int, model: Path | None = None,
        inversion: InversionSettings | None = None, device: str | None = None, *, worker: type,
    ):  # fmt: skip
        """``worker``: the render worker class the actors are made of (``server.cluster_worker.RenderWorker``)."""
        if cluster.address is None:
            os.environ.setdefault(LOOPBACK_ONLY, "0")  # before Ray is imported: it reads it then
        try:
            import ray
        except ImportError:
            raise FrameSourceError("--cluster", "needs Ray: pip install 'bendbridge[cluster]'") from None
        self.ray, self.cluster, self.batch = ray, cluster, batch
        self._started = not ray.is_initialized()
        if self._started:
            self._init()
        self._args = (str(model) if model else None, settings, plan, batch, inversion, device)
        self._actor = ray.remote(num_gpus=cluster.gpus, max_restarts=0, max_concurrency=1)(worker)
        self.workers = [self._start_worker() for _ in range(cluster.workers)]
        self.replaced = 0  # workers started again after one died
        self.requeued: list[list[int]] = []  # the batches (their frames) queued again after their worker died
        try:
            self.identity = ray.get(self.workers[0].identity.remote())
        except Exception as e:  # noqa: BLE001 (a worker that cannot load the model says why)
            self.close()
            raise FrameSourceError("--model", f"the render workers could not start: {_cause(e)}") from None

    def _init(self) -> None:
        ray, c = self.ray, self.cluster
        if c.address is None:
            start_local_ray(c.workers)
        else:
            try:
                ray.init(address=c.address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise FrameSourceError("--cluster", f"cannot join the Ray cluster at {c.address}: {e}") from None

    def _start_worker(self) -> Any:
        return self._actor.options(num_cpus=1).remote(*self._args)

    def render(
        self, todo: Sequence[int], positions: Sequence[FramePosition], params: Sequence[FrameParams],
        pictures: PictureOf | None = None,
    ) -> Iterator[RenderedFrame]:  # fmt: skip
        ray = self.ray
        queue = deque(list(todo)[s : s + self.batch] for s in range(0, len(todo), self.batch))
        running: dict[Any, tuple[list[int], Any]] = {}  # object ref -> (frames, worker)
        load = {id(w): 0 for w in self.workers}

        def submit() -> None:
            for w in sorted(self.workers, key=lambda w: load[id(w)]):
                while queue and load[id(w)] < self.cluster.in_flight:
                    frames = queue.popleft()
                    pics = {i: pictures(i) for i in frames} if pictures is not None else None
                    ref = w.render.remote(
                        frames, {i: positions[i] for i in frames}, {i: params[i] for i in frames}, pics
                    )
                    running[ref] = (frames, w)
                    load[id(w)] += 1

        submit()
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            frames, worker = running.pop(done[0])
            if id(worker) in load:
                load[id(worker)] -= 1
            try:
                results = ray.get(done[0])
            except ray.exceptions.ActorDiedError:
                queue.appendleft(frames)
                self.requeued.append(frames)
                self._replace(worker, load)
                submit()
                continue
            except ray.exceptions.RayTaskError as e:
                raise FrameSourceError(
                    "--cluster", f"a render worker failed on frames {frames[0]}…{frames[-1]}: {_cause(e)}"
                ) from None
            yield from results
            submit()

    def _replace(self, dead: Any, load: dict[int, int]) -> None:
        """Drop a dead worker (its queued batches fail and are queued again too) and start another."""
        if dead in self.workers:
            self.workers.remove(dead)
            load.pop(id(dead), None)
            fresh = self._start_worker()
            self.workers.append(fresh)
            load[id(fresh)] = 0
            self.replaced += 1

    def close(self) -> None:
        for w in getattr(self, "workers", []):
            try:
                self.ray.kill(w)
            except Exception:  # noqa: BLE001 (already gone)
                pass
        if getattr(self, "_started", False) and self.ray.is_initialized():
            self.ray.shutdown()
            time.sleep(0.2)


def _cause(e: BaseException) -> str:
    text = str(getattr(e, "cause", None) or e).strip().splitlines()
    return text[-1] if text else type(e).__name__
