"""Default endpoints, binding rules and ZeroMQ CURVE keys.

The server binds to loopback by default (:data:`DEFAULT_CONTROL`, :data:`DEFAULT_EVENTS`). Any other
interface is opt-in and must be
authenticated: the server refuses to start unless CURVE keys are given, and then only clients
whose public keys sit in ``KEYS/clients/`` may connect.

Key folder layout (``bendbridge keys --dir KEYS [--client NAME]``)::

    KEYS/server.key          server public key (give it to clients)
    KEYS/server.key_secret   server secret key (stays on the server)
    KEYS/clients/NAME.key    public keys of the clients allowed in
    KEYS/NAME.key_secret     a client's own key pair (copy to that client)
"""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from .errors import BendbridgeError

__all__ = [
    "DEFAULT_CONTROL",
    "DEFAULT_EVENTS",
    "SecurityError",
    "is_loopback",
    "make_keys",
    "load_server_keys",
    "load_client_keys",
]

DEFAULT_CONTROL = "tcp://127.0.0.1:5555"  # ROUTER: requests and replies
DEFAULT_EVENTS = "tcp://127.0.0.1:5556"  # PUB: frame-ready events


class SecurityError(BendbridgeError):
    """An endpoint that needs authentication, or a key folder that is missing or incomplete."""

    code = "security"


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// endpoints on 127.0.0.0/8, ::1 or localhost."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        raise SecurityError("endpoint", f"{endpoint!r}: expected tcp://HOST:PORT, ipc:// or inproc://")
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or a host name: not provably loopback


def make_keys(folder: Path, client: str | None = None) -> list[Path]:
    """Create the server key pair (if missing) and, with ``client``, a client key pair whose
    public key is authorised. Returns the files written."""
    import zmq.auth

    folder = Path(folder)
    (folder / "clients").mkdir(parents=True, exist_ok=True)
    written = []
    if not (folder / "server.key_secret").exists():
        pub, sec = zmq.auth.create_certificates(folder, "server")
        written += [Path(pub), Path(sec)]
    if client:
        if not client.replace("-", "").replace("_", "").isalnum():
            raise SecurityError("--client", f"{client!r}: letters, digits, - and _ only")
        pub, sec = zmq.auth.create_certificates(folder, client)
        dest = folder / "clients" / f"{client}.key"
        shutil.move(pub, dest)
        written += [dest, Path(sec)]
    return written


def load_server_keys(folder: Path) -> tuple[bytes, bytes, Path]:
    """(public, secret, authorised-clients folder) for a CURVE server."""
    import zmq.auth

    f = Path(folder) / "server.key_secret"
    if not f.exists():
        raise SecurityError("--keys", f"{f} not found: run 'bendbridge keys --dir {folder}' first")
    pub, sec = zmq.auth.load_certificate(f)
    clients = Path(folder) / "clients"
    if not clients.is_dir() or not any(clients.glob("*.key")):
        raise SecurityError(
            "--keys", f"no authorised client keys in {clients}: run 'bendbridge keys --dir {folder} --client NAME'"
        )
    return pub, sec, clients


def load_client_keys(folder: Path, client: str) -> tuple[bytes, bytes, bytes]:
    """(client public, client secret, server public) for a CURVE client."""
    import zmq.auth

    own, server = Path(folder) / f"{client}.key_secret", Path(folder) / "server.key"
    for f in (own, server):
        if not f.is_file():
            raise SecurityError(
                "--keys",
                f"{f} not found: copy it from the server's key folder ('bendbridge keys --dir KEYS --client {client}')",
            )
    pub, sec = zmq.auth.load_certificate(own)
    server_pub, _ = zmq.auth.load_certificate(server)
    return pub, sec, server_pub
