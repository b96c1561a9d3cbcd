"""Throwaway certificates (trustme) and a TLS-terminating proxy for tests of enishi's TLS.

Neither the local Kafka (Tansu 0.6.0: its `--cert` and `--key` options refuse each other)
nor `temporal server start-dev` can serve TLS, so the tests put `TlsProxy` in front of the
real servers: the client's handshake, certificate checks and mutual TLS are real, and
behind the proxy the bytes reach the real broker or frontend unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Pki:
    """PEM files of one CA: a server certificate (127.0.0.1, localhost), a client
    certificate, and the certificate of another, unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def issue_pki(folder: Path) -> Pki:
    """Writes a fresh CA's files into `folder`."""
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("designer@enishi.test")
    paths = Pki(*(folder / name for name in ("ca", "scert", "skey", "ccert", "ckey", "other")))
    ca.cert_pem.write_to_path(str(paths.ca))
    server.cert_chain_pems[0].write_to_path(str(paths.server_cert))
    server.private_key_pem.write_to_path(str(paths.server_key))
    client.cert_chain_pems[0].write_to_path(str(paths.client_cert))
    client.private_key_pem.write_to_path(str(paths.client_key))
    other.cert_pem.write_to_path(str(paths.other_ca))
    return paths


class TlsProxy:
    """Serves TLS on 127.0.0.1:`port` (mutual TLS when `client_ca` is given) and forwards
    each connection's plaintext to `upstream` (`host:port`). Use with `async with`."""

    def __init__(self, pki: Pki, upstream: str, *, client_ca: Path | None = None) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(pki.server_cert, pki.server_key)
        self._context.set_alpn_protocols(["h2"])  # gRPC clients (Temporal) ask for HTTP/2
        if client_ca is not None:
            self._context.load_verify_locations(client_ca)
            self._context.verify_mode = ssl.CERT_REQUIRED
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, "127.0.0.1", 0, ssl=self._context
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> TlsProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            writer.close()
