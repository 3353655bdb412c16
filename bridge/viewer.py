"""The live screen: a local web page that shows each frame at its due time.

:class:`Viewer` serves, on loopback by default, one page (``/``) and a server-sent event stream
(``/events``). The live loop calls :meth:`Viewer.publish` with each frame as it comes back from the
render server (PNG bytes, its due time on the wall clock, bar:beat, parameter values and the
session's stats); every connected page receives it at once — no files are polled — and shows it when
its due time comes (at once when it is already due). The page goes fullscreen (key ``f`` or a
double click) for a projector and works as an OBS browser source; ``?overlay=0`` hides the overlay
(playhead bar:beat, fps, dropped/late frames, render latency, parameter meters), key ``o`` toggles it.

Several pages may watch at once; a page that goes away is forgotten and the session goes on. A
viewer on another address than loopback must be asked for (``allow_remote``).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bendbridge.protocol.errors import BendbridgeError

from .viewer_page import PAGE

__all__ = ["Viewer"]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # the live console has its own status line
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/":
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
        elif path == "/events":
            self._stream()
        else:
            self.send_error(404, "bendbridge viewer: / and /events only")

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        inbox = self.server.viewer._join()
        try:
            self.wfile.write(b"retry: 500\n\n")
            self.wfile.flush()
            while not self.server.viewer.closed:
                try:
                    event = inbox.get(timeout=1.0)
                except queue.Empty:
                    event = b": keep-alive\n\n"  # also notices a page that went away
                self.wfile.write(event)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the page closed or reloaded: forget it, the session goes on
        finally:
            self.server.viewer._leave(inbox)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    viewer: Viewer


class Viewer:
    """The page server. ``port`` 0 picks a free port; ``url`` says where it is."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False):
        if not allow_remote and not _is_loopback(host):
            raise BendbridgeError(
                "--view-host", f"{host!r} is not a loopback address; add --view-remote to show frames to other machines"
            )
        try:
            self._http = _Server((host, port), _Handler)
        except OSError as e:
            raise BendbridgeError("--view-port", f"cannot serve the viewer on {host}:{port}: {e.strerror}") from None
        self._http.viewer = self
        self.closed = False
        self._inboxes: list[queue.Queue[bytes]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._http.serve_forever, name="viewer", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def watchers(self) -> int:
        with self._lock:
            return len(self._inboxes)

    def _join(self) -> queue.Queue[bytes]:
        inbox: queue.Queue[bytes] = queue.Queue(maxsize=32)
        with self._lock:
            self._inboxes.append(inbox)
        return inbox

    def _leave(self, inbox: queue.Queue[bytes]) -> None:
        with self._lock:
            if inbox in self._inboxes:
                self._inboxes.remove(inbox)

    def publish(self, frame: int, png: bytes, due: float, info: dict[str, Any] | None = None) -> None:
        """Send a frame to every page: PNG bytes, due time (wall clock, seconds), and what the
        overlay shows (``bar_beat``, ``params``, ``stats``)."""
        payload = {"frame": frame, "due": due, "png": base64.b64encode(png).decode("ascii"), **(info or {})}
        self._send(b"event: frame\ndata: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")

    def _send(self, event: bytes) -> None:
        with self._lock:
            inboxes = list(self._inboxes)
        for inbox in inboxes:
            try:
                inbox.put_nowait(event)
            except queue.Full:  # a page that cannot keep up loses its oldest event, not the session
                try:
                    inbox.get_nowait()
                    inbox.put_nowait(event)
                except (queue.Empty, queue.Full):
                    pass

    def close(self) -> None:
        self.closed = True
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
