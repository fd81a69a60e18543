"""Running the emulator: in the foreground (``m365sim serve``) or in a thread (tests, demo).

:class:`EmulatorServer` binds uvicorn with the local CA's server certificate, learns the real
port (``port=0`` picks a free one) and sets the state's public base URL before answering, so
discovery documents and ``@odata.nextLink`` values carry the address clients actually use.
It refuses (``ValueError``) to listen beyond loopback without ``state.control_token``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import uvicorn

from m365sim.app import create_app
from m365sim.control.guard import listen_problem
from m365sim.state import EmulatorState
from m365sim.tls import TlsFiles, ensure_tls


class EmulatorServer:
    def __init__(
        self,
        state: EmulatorState,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_dir: Path | None = None,
        log_level: str = "warning",
    ) -> None:
        problem = listen_problem(host, state.control_token)
        if problem is not None:
            raise ValueError(problem)
        tls_dir = tls_dir or state.data_dir or Path(".m365sim")
        self.tls: TlsFiles = ensure_tls(tls_dir)
        self.state = state
        self.host = host
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit TCP_NODELAY: without it, a response written as two TLS
        # records (head, then body) waits ~40 ms for the client's delayed ACK (Nagle).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind((host, port))
        self.port: int = self.sock.getsockname()[1]
        # "localhost" matches the certificate and MSAL's https-only rule
        public_host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::1", "::") else host
        state.base_url = f"https://{public_host}:{self.port}"
        self.app = create_app(state)
        self.config = uvicorn.Config(
            self.app,
            ssl_certfile=str(self.tls.server_cert),
            ssl_keyfile=str(self.tls.server_key),
            log_level=log_level,
            access_log=False,
            lifespan="on",
            timeout_keep_alive=30,
            backlog=1024,
        )
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return self.state.base_url

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_cert

    def serve_forever(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def start_in_thread(self, timeout: float = 20.0) -> EmulatorServer:
        self._thread = threading.Thread(target=self.serve_forever, name="m365sim", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("m365sim did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sock.close()  # uvicorn does not close sockets it was handed
