"""The headless render server: a ZeroMQ ROUTER for control, a PUB socket for events.

One thread runs the loop: drain every waiting message (decode, validate, dispatch), then render
one batch of queued frame requests, then poll again. Every bad packet is answered with an
``error`` message naming the field and the allowed range, and the loop goes on. Frame-ready
reports go to the requesting client and are also published on the PUB socket (topic = session).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from bendbridge.protocol import (
    PACKAGE_VERSION,
    Bye,
    Error,
    FeatureFrame,
    FrameReady,
    FrameRequest,
    Heartbeat,
    Hello,
    Limits,
    Message,
    Packet,
    ParamUpdate,
    ProtocolError,
    SessionSetup,
    Transport,
    Welcome,
    decode,
    encode,
    version_string,
)
from bendbridge.protocol.errors import BendbridgeError
from bendbridge.protocol.security import DEFAULT_CONTROL, DEFAULT_EVENTS, SecurityError, is_loopback, load_server_keys
from bendbridge.server.model import LoadedModel

from .live_pipeline import LivePipeline, Report, default_lanes, describe
from .session import Pending, RenderSession, dropped

__all__ = ["ServerConfig", "RenderServer"]

log = logging.getLogger("bendbridge.server")


@dataclass(frozen=True)
class ServerConfig:
    control: str = DEFAULT_CONTROL
    events: str = DEFAULT_EVENTS
    model: Path | None = None  # None: the embedded model
    device: str | None = None
    precision: str | None = None  # auto, fp32, bf16, fp16 (None: fp16 on CUDA, else fp32)
    decoder: str | None = None  # full (None), tiny, or an AutoencoderTiny folder
    output_root: Path = Path("renders")
    max_batch: int = 8
    keys: Path | None = None  # CURVE key folder; required for non-loopback endpoints
    max_message_bytes: int = 64 << 20
    pipeline: bool = True  # live sessions render in parallel lanes beside the loop (live_pipeline)
    lanes: int | None = None  # lanes per live session (None: one per CPU core up to 4 on the CPU, else 1)
    threads_per_lane: int = 1  # CPU threads of each lane


class RenderServer:
    def __init__(self, config: ServerConfig, model: LoadedModel | None = None):
        for option, ep in (("--bind", config.control), ("--events", config.events)):
            if not is_loopback(ep) and config.keys is None:
                raise SecurityError(
                    option,
                    f"refusing to bind {ep} without authentication: binding beyond loopback needs CURVE "
                    f"keys ('bendbridge keys --dir KEYS --client NAME', then --keys KEYS)",
                )
        server_keys = load_server_keys(config.keys) if config.keys is not None else None  # before the model loads
        self.config = config
        self.limits = Limits(max_bytes=config.max_message_bytes)
        self.root = Path(config.output_root).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BendbridgeError("--output-root", f"cannot create {self.root}: {e.strerror}") from None
        if model is None:
            from bendbridge.server.model import load_model

            model = load_model(config.model, config.device, precision=config.precision, decoder=config.decoder)
        self.model = model
        self.model_name = model.name
        self.sessions: dict[str, RenderSession] = {}
        self.clients: dict[bytes, str] = {}  # client identity -> session id
        self.seq = 0
        self.stats = {"received": 0, "errors": 0, "rendered": 0}
        self._ctx = zmq.Context.instance()
        self._auth = None
        self.control = self._ctx.socket(zmq.ROUTER)
        self.events = self._ctx.socket(zmq.PUB)
        for s in (self.control, self.events):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes)
        self.control.setsockopt(zmq.ROUTER_MANDATORY, 0)
        if server_keys is not None:
            self._secure(*server_keys)
        self._bind()
        self._welcome_cache: Welcome | None = None
        self._running = False
        self.pipelines: dict[str, LivePipeline] = {}
        self.reports: queue.SimpleQueue[Report] = queue.SimpleQueue()
        self.wake = self._ctx.socket(zmq.PULL)  # a pipeline's deliver thread pings it when reports wait
        self.wake_endpoint = f"inproc://bendbridge-wake-{id(self):x}"
        self.wake.bind(self.wake_endpoint)

    def _bind(self) -> None:
        """Bind both sockets; the endpoints actually bound are kept (a ``*`` port resolves to a free one)."""
        for option, sock, ep in (
            ("--bind", self.control, self.config.control),
            ("--events", self.events, self.config.events),
        ):
            try:
                sock.bind(ep)
            except zmq.ZMQError as e:
                self.close()
                raise BendbridgeError(option, f"cannot bind {ep}: {e}") from None
        self.control_endpoint = self.control.getsockopt_string(zmq.LAST_ENDPOINT)
        self.events_endpoint = self.events.getsockopt_string(zmq.LAST_ENDPOINT)

    def _secure(self, pub: bytes, sec: bytes, clients: Path) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self._auth = ThreadAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(clients))
        for s in (self.control, self.events):
            s.curve_secretkey, s.curve_publickey, s.curve_server = sec, pub, True

    # ------------------------------------------------------------------ replies
    def _send(self, client: bytes, msg: Message, session: str = "", pos: int = 0, rate: int = 48_000) -> None:
        self.seq += 1
        try:
            self.control.send_multipart(
                [client, encode(msg, session=session, seq=self.seq, pos=pos, rate=rate)], flags=zmq.NOBLOCK
            )
        except zmq.Again:
            log.warning("client %r not reachable; reply dropped", client)

    def _error(self, client: bytes, e: Exception, ref: str | None = None, session: str = "") -> None:
        self.stats["errors"] += 1
        if isinstance(e, BendbridgeError):
            err = Error(code=e.code[:32], message=e.message[:4000], field=e.field[:256] if e.field else None, ref=ref)
        else:
            log.exception("internal error")
            err = Error(code="internal", message=f"{type(e).__name__}: {e}"[:4000], ref=ref)
        self._send(client, err, session)

    def welcome(self) -> Welcome:
        if self._welcome_cache is None:
            from bendbridge.protocol.operators import operator_names
            from bendbridge.server.render import RenderConfig, Renderer

            r = Renderer(self.model, RenderConfig())
            targets = ("latent", "text") + tuple(layer.name for layer in r.layers)
            self._welcome_cache = Welcome(
                server="bendbridge",
                version=version_string(),
                package=PACKAGE_VERSION,
                model=self.model_name,
                device=str(r.device),
                targets=targets,
                operators=tuple(operator_names()),
                max_batch=self.config.max_batch,
                auth="curve" if self.config.keys else "none",
            )
        return self._welcome_cache

    # ------------------------------------------------------------------ dispatch
    def handle(self, frames: list[bytes]) -> None:
        self.stats["received"] += 1
        if len(frames) != 2:
            if frames:
                self._error(
                    frames[0],
                    ProtocolError(None, f"expected one message frame, got {len(frames) - 1}", code="malformed"),
                )
            return
        client, data = frames
        try:
            pkt = decode(data, self.limits)
        except Exception as e:  # noqa: BLE001 - every bad packet is answered, the server goes on
            self._error(client, e)
            return
        try:
            self.dispatch(client, pkt)
        except Exception as e:  # noqa: BLE001
            self._error(client, e, pkt.envelope.id, pkt.envelope.session)

    def dispatch(self, client: bytes, pkt: Packet) -> None:
        m, env = pkt.message, pkt.envelope
        if isinstance(m, Hello):
            self._send(client, self.welcome())
        elif isinstance(m, SessionSetup):
            self._setup(client, m, env.id)
        elif isinstance(m, Heartbeat):
            self._send(client, Heartbeat(ref=env.id), env.session)
        elif isinstance(m, Bye):
            self.clients.pop(client, None)
        elif isinstance(m, (FrameRequest, ParamUpdate, FeatureFrame, Transport)):
            s = self._session(client, env.session)
            if isinstance(m, FrameRequest):
                s.renderer.engine.resolve([s.effective_params(m)])  # bad values are refused now, by field
                done = None if s.live else s.already_done(m)
                if done is not None:
                    self._report(client, s, done)
                else:
                    for d in s.enqueue(Pending(client, env.id, m)):
                        self._report(d.client, s, dropped(d))
                    if s.sid in self.pipelines:
                        self.pipelines[s.sid].notify()
            elif isinstance(m, ParamUpdate):
                s.update_params(m.params)
                self._send(client, Heartbeat(ref=env.id), s.sid)
            # feature frames and transport are accepted; the bridge resolves them into parameters
        else:
            raise ProtocolError("type", f"a client may not send {m.TYPE!r}", code="unexpected")

    def _session(self, client: bytes, sid: str) -> RenderSession:
        sid = sid or self.clients.get(client, "")
        s = self.sessions.get(sid)
        if s is None:
            raise ProtocolError("envelope.session", f"no session {sid!r}; send session_setup first", code="no_session")
        self.clients[client] = sid
        return s

    def _setup(self, client: bytes, m: SessionSetup, ref: str) -> None:
        if m.model not in (None, "", "default", self.model_name, self.model.base_name):
            raise ProtocolError(
                "session_setup.model",
                f"model {m.model!r} is not loaded; this server has {self.model_name!r}",
                code="range",
            )
        sid = m.output  # one session per output folder: re-sending the setup resumes it
        old = self.sessions.get(sid)
        if old is None or old.setup != m:
            self._stop_pipeline(sid)
            s = self.sessions[sid] = RenderSession(sid, m, self.model, self.root, self.config.max_batch)
            if s.live and self.config.pipeline:
                lanes = self.config.lanes or default_lanes(self.model.pipe.unet.device.type)
                self.pipelines[sid] = LivePipeline(
                    s, self.reports, self.wake_endpoint, self._ctx, lanes, self.config.threads_per_lane
                )
        self.clients[client] = sid
        self._send(client, self.welcome(), sid)

    def _report(self, client: bytes, s: RenderSession, fr: FrameReady) -> None:
        self._send(client, fr, s.sid, pos=fr.sample)
        event = (
            dataclasses.replace(fr, data=None) if fr.data is not None else fr
        )  # subscribers get the path, not the bytes
        self.events.send_multipart([s.sid.encode(), encode(event, session=s.sid, pos=fr.sample)])

    def _stop_pipeline(self, sid: str) -> None:
        pipeline = self.pipelines.pop(sid, None)
        if pipeline is not None:
            pipeline.stop()
            log.info("live session %s: %s", sid, describe(pipeline.session))

    def send_reports(self) -> None:
        """Send what the live pipelines have delivered (in their order)."""
        while True:
            try:
                s, p, r = self.reports.get_nowait()
            except queue.Empty:
                return
            if isinstance(r, Exception):
                self._error(p.client, r, p.msg_id, s.sid)
            else:
                self.stats["rendered"] += r.status != "dropped"
                self._report(p.client, s, r)

    # ------------------------------------------------------------------ loop
    def _waiting(self) -> list[RenderSession]:
        """Sessions whose queue this loop renders (live sessions with a pipeline render on their own)."""
        return [s for sid, s in self.sessions.items() if s.queue and sid not in self.pipelines]

    def render_once(self) -> bool:
        """Render one batch from the first session with queued work. True if it did any work."""
        for s in self._waiting():
            batch, late = s.take_batch(time.time())
            for p in late:
                self._report(p.client, s, dropped(p))
            if batch:
                try:
                    reports = s.render(batch)
                except Exception as e:  # noqa: BLE001 - a failing batch is reported, not fatal
                    for p in batch:
                        self._error(p.client, e, p.msg_id, s.sid)
                    return True
                self.stats["rendered"] += len(reports)
                for p, fr in zip(batch, reports):
                    self._report(p.client, s, fr)
            return True
        return False

    def serve_forever(self, stop: Any = None, idle_timeout_ms: int = 50) -> None:
        """Run until ``stop`` (an Event-like object) is set."""
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.wake, zmq.POLLIN)
        self._running = True
        try:
            while self._running and not (stop is not None and stop.is_set()):
                busy = bool(self._waiting())
                events = dict(poller.poll(0 if busy else idle_timeout_ms))
                if self.wake in events:
                    while self.wake.poll(0):
                        self.wake.recv()
                self.send_reports()
                if self.control in events:
                    for _ in range(10_000):  # drain what is waiting, then render
                        try:
                            frames = self.control.recv_multipart(flags=zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self.handle(frames)
                self.render_once()
        finally:
            self._running = False

    def close(self) -> None:
        if hasattr(self, "wake"):  # not when binding failed in __init__
            for sid in list(self.pipelines):
                self._stop_pipeline(sid)
            self.send_reports()
            self.wake.close(0)
        self.control.close(0)
        self.events.close(0)
        if self._auth is not None:
            self._auth.stop()
