"""Client side of the render server: a ZeroMQ DEALER that speaks the protocol.

>>> with RenderClient("tcp://127.0.0.1:5555") as c:   # doctest: +SKIP
...     welcome, rtt = c.ping()
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import zmq

from bendbridge.protocol import Hello, Message, Packet, SessionSetup, Welcome, decode, encode, new_id
from bendbridge.protocol.errors import BendbridgeError

__all__ = ["RenderClient", "ServerTimeout", "ServerError"]


class ServerTimeout(BendbridgeError):
    """No answer from the server in time."""

    code = "timeout"


class ServerError(BendbridgeError):
    """The server answered with an error message (kept as ``error``): its field and message."""

    def __init__(self, err: Any):
        super().__init__(err.field, f"{err.message} (refused by the server: {err.code})", code=err.code)
        self.error = err


class RenderClient:
    def __init__(
        self,
        url: str = "tcp://127.0.0.1:5555",
        *,
        timeout: float = 10.0,
        keys: Path | None = None,
        client_name: str | None = None,
        rate: int = 48_000,
    ):
        self.url, self.timeout, self.rate = url, timeout, rate
        self.session = ""
        self.seq = 0
        self._ctx = zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            from bendbridge.protocol.security import load_client_keys

            pub, sec, server_pub = load_client_keys(keys, client_name or "client")
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = pub, sec, server_pub
        try:
            self.sock.connect(url)
        except zmq.ZMQError as e:
            self.sock.close(0)
            raise BendbridgeError("--server", f"cannot connect to {url!r}: {e} (expected tcp://HOST:PORT)") from None

    def __enter__(self) -> RenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close(0)

    def send(self, msg: Message, *, pos: int = 0) -> str:
        """Send one message in this client's session; returns its message id."""
        self.seq += 1
        mid = new_id()
        self.sock.send(encode(msg, session=self.session, seq=self.seq, pos=pos, rate=self.rate, msg_id=mid))
        return mid

    def send_raw(self, data: bytes) -> None:
        self.sock.send(data)

    def recv(self, timeout: float | None = None) -> Packet:
        t = self.timeout if timeout is None else timeout
        if not self.sock.poll(int(t * 1000)):
            raise ServerTimeout("--server", f"no answer from {self.url} within {t:g} s")
        return decode(self.sock.recv())

    def expect(self, kind: type[Message], timeout: float | None = None, ref: str | None = None) -> Packet:
        """Receive until a message of ``kind`` arrives (an error raises ServerError)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            p = self.recv(max(0.0, deadline - time.monotonic()))
            if isinstance(p.message, kind) and (ref is None or getattr(p.message, "ref", None) in (None, ref)):
                return p
            if p.message.TYPE == "error" and (ref is None or p.message.ref in (None, ref)):
                raise ServerError(p.message)

    def ping(self) -> tuple[Welcome, float]:
        t = time.perf_counter()
        self.send(Hello(client="bendbridge-ping"))
        w = self.expect(Welcome).message
        return w, time.perf_counter() - t  # type: ignore[return-value]

    def setup(self, setup: SessionSetup, timeout: float = 120.0) -> Welcome:
        self.send(setup)
        p = self.expect(Welcome, timeout)
        self.session = p.envelope.session
        return p.message  # type: ignore[return-value]
