"""Runs the real gateway binary for tests: loopback, port 0 (or a fixed port on restart), temp data dir."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple

import jwt

REPO_ROOT = Path(__file__).resolve().parents[3]
GATEWAY_BIN = os.environ.get("GATEWAY_BIN") or str(REPO_ROOT / ".build" / "debug" / "gateway")
_LISTENING = re.compile(r"gateway listening url=(\S+) port=(\d+)")


class GatewayProcess:
    """One gateway process; ``restart()`` keeps the port and the data directory."""

    def __init__(self, env: Optional[Dict[str, str]] = None, tls_dir: Optional[str] = None) -> None:
        self.secret = "py-test-secret-" + secrets.token_hex(24)
        self.data_dir = tempfile.mkdtemp(prefix="gw-py-")
        self.extra_env = dict(env or {})
        self.tls_dir = tls_dir
        self.port = 0
        self.url = ""
        self.proc: Optional[subprocess.Popen[str]] = None
        self._stderr: List[str] = []

    @property
    def http_base(self) -> str:
        return f"{'https' if self.tls_dir else 'http'}://127.0.0.1:{self.port}"

    def token(self, sub: str, role: str, sessions: Optional[List[str]] = None, ttl: int = 3600) -> str:
        now = int(time.time())
        claims = {"sub": sub, "role": role, "sessions": sessions or [], "exp": now + ttl, "iat": now}
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def start(self, timeout: float = 20.0) -> "GatewayProcess":
        env = dict(os.environ)
        env.update(
            GATEWAY_AUTH_HS256_SECRET=self.secret,
            GATEWAY_LISTEN_HOST="127.0.0.1",
            GATEWAY_LISTEN_PORT=str(self.port),
            GATEWAY_DATA_DIR=self.data_dir,
            GATEWAY_LOG_LEVEL="warning",
        )
        if self.tls_dir:
            env["GATEWAY_TLS_CERT"] = os.path.join(self.tls_dir, "cert.pem")
            env["GATEWAY_TLS_KEY"] = os.path.join(self.tls_dir, "key.pem")
        env.update(self.extra_env)
        proc = subprocess.Popen(
            [GATEWAY_BIN], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self.proc = proc
        found: Dict[str, str] = {}
        ready = threading.Event()

        def read_stdout() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                m = _LISTENING.search(line)
                if m and not ready.is_set():
                    found["url"], found["port"] = m.group(1), m.group(2)
                    ready.set()

        def read_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self._stderr.append(line)
                del self._stderr[:-50]

        threading.Thread(target=read_stdout, daemon=True).start()
        threading.Thread(target=read_stderr, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                self._kill()
                raise RuntimeError(f"gateway did not start (exit {proc.returncode}): {''.join(self._stderr)}")
        self.port = int(found["port"])
        self.url = found["url"]
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> Optional[int]:
        """Signals the process and waits for it (SIGKILL after ``timeout``); returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def dispose(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def make_cert(directory: str) -> str:
    """A self-signed certificate for localhost / 127.0.0.1 in ``directory`` (cert.pem, key.pem)."""
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", os.path.join(directory, "key.pem"),
            "-out", os.path.join(directory, "cert.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return os.path.join(directory, "cert.pem")


def run(fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float = 45.0) -> Any:
    """Runs an async test body with a hard time bound."""

    async def bounded() -> Any:
        return await asyncio.wait_for(fn(*args), timeout)

    return asyncio.run(bounded())


class Proxy:
    """A TCP proxy in front of the gateway that can stop forwarding to the client and cut every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.blackhole_down = False
        self.port = 0
        self._pairs: Set[Tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: Optional[asyncio.AbstractServer] = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def start(self) -> "Proxy":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, downstream: bool) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if downstream and self.blackhole_down:
                        continue
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
        self._pairs.discard(pair)

    def cut_all(self) -> None:
        for down, up in list(self._pairs):
            down.transport.abort()
            up.transport.abort()

    async def close(self) -> None:
        self.cut_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
