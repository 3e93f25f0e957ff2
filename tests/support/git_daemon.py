"""A real ``git daemon`` on 127.0.0.1 serving bare repositories, for tests that need a remote."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

DEADLINE = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GitDaemon:
    """``git daemon`` on 127.0.0.1; counts the upload-pack requests it serves (its log says)."""

    def __init__(self, base: Path, port: int) -> None:
        self.base = base
        self.port = port
        self.uploads = 0
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"git://127.0.0.1:{self.port}/remote.git"

    def start(self) -> None:
        ready = threading.Event()
        self._proc = subprocess.Popen(
            [
                "git",
                "daemon",
                "--verbose",
                "--reuseaddr",
                "--export-all",
                f"--base-path={self.base}",
                f"--port={self.port}",
                "--listen=127.0.0.1",
                "--enable=receive-pack",
                str(self.base),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._drain, args=(self._proc, ready), daemon=True).start()
        assert ready.wait(DEADLINE), "git daemon did not start listening"

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(DEADLINE)
            self._proc = None

    def wait_uploads(self, count: int) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self.uploads >= count, DEADLINE)
            return self.uploads

    def _drain(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "Ready to rumble" in line:
                ready.set()
            if "Request upload-pack" in line:
                with self._cond:
                    self.uploads += 1
                    self._cond.notify_all()
