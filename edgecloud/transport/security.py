"""CurveZMQ encryption and a client allow-list, with pyzmq's own tools (no extra dependency).

Keys are ZeroMQ certificate files: ``NAME.key`` (public) and ``NAME.key_secret`` (both)::

    python -c "from edgecloud.transport.security import create_keys; create_keys('keys', 'server')"

The daemon uses ``server.key_secret`` and an allow-list folder with the edges' ``*.key``;
an edge uses its own ``edge.key_secret`` and the daemon's ``server.key``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from edgecloud.errors import ConfigError

PathLike = Union[str, Path]


def create_keys(directory: PathLike, name: str) -> Tuple[Path, Path]:
    """Write a new key pair; returns (public ``.key``, secret ``.key_secret``) paths."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    return Path(public), Path(secret)


def _load(path: PathLike, need_secret: bool) -> Tuple[bytes, Optional[bytes]]:
    if not zmq.has("curve"):
        raise ConfigError("this libzmq was built without CURVE support")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read ZeroMQ certificate {path}: {exc}") from None
    if need_secret and not secret:
        raise ConfigError(f"{path} holds no secret key (use the .key_secret file)")
    return public, secret


def start_authenticator(
    context: zmq.Context, clients_dir: Optional[PathLike]
) -> ThreadAuthenticator:
    """Accept CURVE clients whose public keys are in ``clients_dir`` (any client if None).
    Must run before the server socket binds; call ``.stop()`` when done."""
    if clients_dir is not None and not Path(clients_dir).is_dir():
        raise ConfigError(f"client key folder {clients_dir} does not exist")
    auth = ThreadAuthenticator(context)
    auth.start()
    location = str(clients_dir) if clients_dir is not None else zmq.auth.CURVE_ALLOW_ANY
    auth.configure_curve(domain="*", location=location)
    return auth


def secure_server(sock: zmq.Socket, secret_file: PathLike) -> None:
    """Make ``sock`` a CURVE server with the key pair in ``secret_file`` (before bind)."""
    public, secret = _load(secret_file, need_secret=True)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_server = True


def secure_client(sock: zmq.Socket, secret_file: PathLike, server_key_file: PathLike) -> None:
    """Make ``sock`` a CURVE client of the server whose public key is in ``server_key_file``."""
    public, secret = _load(secret_file, need_secret=True)
    server_public, _ = _load(server_key_file, need_secret=False)
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_serverkey = server_public
