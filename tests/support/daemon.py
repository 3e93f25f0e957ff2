"""``reconciler run`` as a real process for tests: started, its address read, its logs kept.

The log is drained on a thread for the process's whole life, so that a chatty daemon never
blocks on a full pipe, and tests can look at what it wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

RECONCILER = shutil.which("reconciler", path=str(Path(sys.executable).parent)) or "reconciler"


class DaemonProcess:
    def __init__(
        self, args: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [RECONCILER, "run", "--listen", "127.0.0.1:0", *args],
            cwd=cwd,
            env={**os.environ, "NO_COLOR": "1", **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.url = ""
        started = threading.Event()
        threading.Thread(target=self._drain, args=(started,), daemon=True).start()
        if not started.wait(60) or not self.url:
            self.proc.kill()
            raise AssertionError("the daemon did not start:\n" + "".join(self.lines[-20:]))

    def _drain(self, started: threading.Event) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if not self.url and '"daemon started"' in line:
                self.url = "http://" + json.loads(line)["listen"]
                started.set()
        started.set()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
