"""A render session: one setup (model, prompts, plan, frame rate), its queue and its output.

Offline mode renders every requested frame exactly once and reports it (a frame already in the
manifest with the same fingerprint is reported as ``resumed`` without rendering). Live mode
renders with the newest parameters (``param_update`` overrides request values), drops frames whose
deadline has passed and bounds its queue, counting every drop.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bendbridge.protocol import FrameReady, FrameRequest, SessionSetup
from bendbridge.protocol.inversion import InversionSettings, picture_digest
from bendbridge.protocol.output import OutputStore, png_bytes
from bendbridge.protocol.plan import BendPlan
from bendbridge.protocol.position import POSITION_FIELDS
from bendbridge.protocol.render import render_identity
from bendbridge.server.model import LoadedModel
from bendbridge.server.render import Denoised, FrameResult, FrameSpec, RenderConfig, Renderer, unet_replica
from bendbridge.server.render.inversion import start_from

__all__ = ["DecodedBatch", "DenoisedBatch", "RenderSession", "Pending", "dropped"]


@dataclass
class Pending:
    client: bytes
    msg_id: str
    request: FrameRequest
    received: float = field(default_factory=time.time)  # wall seconds


def dropped(p: Pending) -> FrameReady:
    """The report of a request the server gave up on (late, or pushed out of a full queue)."""
    return FrameReady(frame=p.request.frame, sample=p.request.sample, hash="", timings={}, status="dropped")


@dataclass(frozen=True)
class DenoisedBatch:
    """A batch between the U-Net and the decoder: its requests, their effective parameters, the
    latents, when denoising started (wall s) and its time per frame (s)."""

    batch: list[Pending]
    params: list[dict[str, dict[str, Any]]]
    denoised: Denoised
    started: float
    per_frame: float


@dataclass(frozen=True)
class DecodedBatch:
    """A denoised batch with its images (one result per request) and the decode time per frame (s)."""

    denoised: DenoisedBatch
    results: list[FrameResult]
    per_frame: float


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=list).encode()).hexdigest()


class RenderSession:
    def __init__(self, sid: str, setup: SessionSetup, model: LoadedModel, root: Path, max_batch: int):
        plan = BendPlan.from_dict(setup.plan) if setup.plan else BendPlan()
        self.sid, self.setup = sid, setup
        self.renderer = Renderer(model, RenderConfig(setup.settings, plan, max_batch=max_batch))
        inversion = InversionSettings.from_dict(setup.inversion or {}, "session_setup.inversion")
        self.inversion = inversion.check(self.renderer.steps, "session_setup.inversion")
        self.store = OutputStore(root, setup.output)
        self.setup_digest = _digest(render_identity(model.name, self.renderer.settings, plan))
        self.queue: deque[Pending] = deque()
        self.queued: set[int] = set()
        self.live_params: dict[str, dict[str, Any]] = {}
        self.max_batch = max_batch
        self.live_queue_limit = 2 * max_batch
        self.dropped = 0
        self.rendered = 0
        self.resumed = 0
        self.latencies: deque[float] = deque(maxlen=4096)  # request received → report ready, wall s
        self.batch_seconds: dict[int, float] = {}  # batch size → seconds from taken to reported (average)
        self.lock = threading.Lock()  # the queue, when a live pipeline's thread takes from it

    @property
    def live(self) -> bool:
        return self.setup.mode == "live"

    def fingerprint(self, req: FrameRequest, params: dict) -> str:
        return _digest(
            {
                "setup": self.setup_digest,
                "frame": req.frame,
                "params": params,
                "seed": req.seed,
                "angle": req.noise_angle,
                "weights": req.prompt_weights,
                "picture": picture_digest(req.picture) if req.picture is not None else None,
                "inversion": self.inversion.to_dict() if req.picture is not None else None,
            }
        )

    def update_params(self, params: dict[str, dict[str, Any]]) -> None:
        for bid, vals in params.items():
            self.live_params.setdefault(bid, {}).update(vals)

    def effective_params(self, req: FrameRequest) -> dict[str, dict[str, Any]]:
        if not self.live or not self.live_params:
            return req.params
        merged = {k: dict(v) for k, v in req.params.items()}
        for bid, vals in self.live_params.items():
            merged.setdefault(bid, {}).update(vals)
        return merged

    def enqueue(self, p: Pending) -> list[Pending]:
        """Queue a request; returns requests dropped to make room (live mode).

        Offline, a frame already queued is rendered once. Live, a newer request for a queued frame
        takes the older one's place (its parameters and deadline win; one report per frame)."""
        with self.lock:
            return self._enqueue(p)

    def _enqueue(self, p: Pending) -> list[Pending]:
        if p.request.frame in self.queued:
            if self.live:
                i = next(i for i, q in enumerate(self.queue) if q.request.frame == p.request.frame)
                self.queue[i] = replace(p, received=self.queue[i].received)
            return []  # offline: exactly once; it is reported when it finishes
        self.queue.append(p)
        self.queued.add(p.request.frame)
        dropped = []
        while self.live and len(self.queue) > self.live_queue_limit:
            old = self.queue.popleft()
            self.queued.discard(old.request.frame)
            dropped.append(old)
        self.dropped += len(dropped)
        return dropped

    def take_batch(self, now: float) -> tuple[list[Pending], list[Pending]]:
        """Up to ``max_batch`` requests to render now, and the live ones past their deadline."""
        with self.lock:
            return self._take_batch(now)

    def _take_batch(self, now: float) -> tuple[list[Pending], list[Pending]]:
        """Live: a request past its deadline is late, and so is one that could not be delivered by
        its deadline even in a batch of its own (as measured so far) while a newer request waits;
        the rest are taken together, up to ``max_batch``. The newest request is always rendered
        unless its deadline has passed, so the measurements go on."""
        batch, late = [], []
        alone = self.expected_seconds(1) if self.live else 0.0
        while self.queue and len(batch) < self.max_batch:
            p = self.queue.popleft()
            self.queued.discard(p.request.frame)
            deadline = p.request.deadline if self.live and p.request.deadline is not None else None
            # past its deadline; or due too soon, with a newer request to render instead
            if deadline is not None and (deadline < now or (deadline < now + alone and self.queue)):
                late.append(p)
            else:
                batch.append(p)
        self.dropped += len(late)
        return batch, late

    def expected_seconds(self, frames: int) -> float:
        """How long a batch of ``frames`` takes from being taken to its reports (0 before any was
        measured): the measured time of that batch size, else the nearest measured size's time
        per frame times ``frames`` (batches cost less per frame as they grow, so this errs low
        below the measured sizes, where it is used)."""
        if not self.batch_seconds:
            return 0.0
        if frames in self.batch_seconds:
            return self.batch_seconds[frames]
        near = min(self.batch_seconds, key=lambda b: abs(b - frames))
        return self.batch_seconds[near] * frames / near

    def measured(self, frames: int, seconds: float) -> None:
        """Record a batch's time from being taken to its reports (a moving average per size)."""
        old = self.batch_seconds.get(frames)
        self.batch_seconds[frames] = seconds if old is None else 0.7 * old + 0.3 * seconds

    def already_done(self, req: FrameRequest) -> FrameReady | None:
        e = self.store.finished(req.frame, self.fingerprint(req, self.effective_params(req)))
        if e is None:
            return None
        self.resumed += 1
        data = self.store.path(e.frame).read_bytes() if self.setup.deliver == "png" else None
        return FrameReady(
            frame=e.frame,
            sample=e.sample,
            hash=e.hash,
            timings={},
            status="resumed",
            path=f"{self.setup.output}/{self.store.path(e.frame).name}",
            data=data,
        )

    def render(self, batch: list[Pending]) -> list[FrameReady]:
        """Render a batch (one denoising pass), write each frame, return their reports."""
        return self.deliver(self.decode(self.denoise(batch)))

    def lane_renderer(self) -> Renderer:
        """A renderer of this session on its own replica of the U-Net (same weights, own hooks)."""
        return Renderer(self.renderer.model, self.renderer.config, unet=unet_replica(self.renderer.model.pipe.unet))

    def denoise(self, batch: list[Pending], renderer: Renderer | None = None) -> DenoisedBatch:
        """The U-Net part of a batch, with each request's effective (newest) parameters."""
        params = [self.effective_params(p.request) for p in batch]
        specs = [
            FrameSpec(
                params=pp,
                seed=p.request.seed,
                noise_angle=p.request.noise_angle or 0.0,
                prompt_weights=p.request.prompt_weights,
            )
            for p, pp in zip(batch, params)
        ]
        started = time.time()
        t0 = time.perf_counter()
        specs = self._start_from_pictures(batch, specs, renderer or self.renderer)
        denoised = (renderer or self.renderer).denoise(specs)
        return DenoisedBatch(batch, params, denoised, started, (time.perf_counter() - t0) / len(batch))

    def _start_from_pictures(self, batch: list[Pending], specs: list[FrameSpec], renderer: Renderer) -> list[FrameSpec]:
        """The frames whose requests carry a picture, set to start from it (fitted to the render
        size, inverted with the session's settings); the others as they are."""
        rows = [i for i, p in enumerate(batch) if p.request.picture is not None]
        if not rows:
            return specs
        pictures = [batch[i].request.picture for i in rows]
        started = start_from(renderer, pictures, [specs[i] for i in rows], self.inversion)
        out = list(specs)
        for i, spec in zip(rows, started):
            out[i] = spec
        return out

    def decode(self, d: DenoisedBatch, renderer: Renderer | None = None) -> DecodedBatch:
        """Decode a denoised batch into images (touches only the decoder: any thread may)."""
        t0 = time.perf_counter()
        results = (renderer or self.renderer).finish(d.denoised)
        return DecodedBatch(d, results, (time.perf_counter() - t0) / len(d.batch))

    def deliver(self, dd: DecodedBatch) -> list[FrameReady]:
        """Encode and write each frame of a decoded batch; its reports, in request order."""
        d = dd.denoised
        out = []
        for p, pp, res in zip(d.batch, d.params, dd.results):
            req = p.request
            t1 = time.perf_counter()
            status = res.status
            data = png_bytes(res.image, fast=self.live)
            e = self.store.write_png(
                data,
                dict(
                    **{k: getattr(req, k) for k in POSITION_FIELDS},
                    params=pp,
                    seed=req.seed if req.seed is not None else self.setup.seed,
                    fingerprint=self.fingerprint(req, pp),
                    status=status,
                ),
                durable=not self.live,
            )
            self.rendered += 1
            latency = time.time() - p.received
            self.latencies.append(latency)
            timings = {"queued": d.started - p.received, "render": d.per_frame, "decode": dd.per_frame}
            timings |= {"write": time.perf_counter() - t1, "latency": latency}
            out.append(
                FrameReady(
                    frame=req.frame,
                    sample=req.sample,
                    hash=e.hash,
                    status=status,
                    timings=timings,
                    path=f"{self.setup.output}/{self.store.path(req.frame).name}",
                    data=data if self.setup.deliver == "png" else None,
                    faults=tuple(str(f) for f in res.faults) or None,
                )
            )
        self.measured(len(d.batch), time.time() - d.started)
        return out
