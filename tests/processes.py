"""Real `consent-gateway` processes for end-to-end tests: spawned on loopback, logged to files,
waited on with deadlines, and always killed when the test ends (even when it fails)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import httpx

CLI = str(Path(sys.executable).with_name("consent-gateway"))


def free_port() -> int:
    """A loopback port nobody listens on right now (bind port 0, read it back, release it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any CONSENT_GATEWAY_* setting (the test decides), plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONSENT_GATEWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Process:
    """One child process; stdout and stderr go to one log file so a failure can show its tail."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.log = log
        self._file = log.open("wb")
        self.popen = subprocess.Popen(args, env=dict(env), cwd=cwd, stdout=self._file, stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            self.popen.send_signal(signum)

    async def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running when ``timeout`` runs out (it is not killed)."""
        deadline = time.monotonic() + timeout
        while self.popen.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.popen.poll()

    def kill(self) -> None:
        if self.alive:
            self.popen.kill()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not get ignored
            pass
        self._file.close()

    def tail(self, lines: int = 40) -> str:
        if not self._file.closed:  # a killed process's log is closed, and whole
            self._file.flush()
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (pid {self.pid}, exit {self.popen.poll()}) log tail ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )


class Processes:
    """Starts processes and kills every one still running on :meth:`close`."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.all: list[Process] = []

    def start(self, name: str, args: list[str], env: Mapping[str, str], cwd: Path | None = None) -> Process:
        process = Process(name, args, env, self.logdir / f"{name}-{len(self.all)}.log", cwd)
        self.all.append(process)
        return process

    def close(self) -> None:
        for process in self.all:
            process.kill()

    def logs(self) -> str:
        return "\n".join(process.tail() for process in self.all)

    async def simulators(self, *, timeout: float = 15.0, extra: list[str] | None = None) -> str:
        """`consent-gateway simulate` on a free loopback port; returns its base URL once it answers."""
        last = "never tried"
        for _ in range(3):  # another process may grab the free port before uvicorn binds it
            port = free_port()
            args = [CLI, "simulate", "--host", "127.0.0.1", "--port", str(port), *(extra or [])]
            process = self.start("simulate", args, clean_env())
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout
            async with httpx.AsyncClient(base_url=base, timeout=2) as client:
                while process.alive and time.monotonic() < deadline:
                    try:
                        if (await client.get("/masivo/_inspect")).status_code == 200:
                            return base
                    except httpx.TransportError as error:
                        last = repr(error)
                    await asyncio.sleep(0.05)
            process.kill()
        raise AssertionError(f"the simulators did not come up ({last})\n{self.logs()}")


async def until(
    condition: Callable[[], Awaitable[bool]],
    timeout: float,
    what: str,
    *,
    every: float = 0.05,
    why: Callable[[], str] = lambda: "",
) -> float:
    """Poll ``condition`` until true; fails naming ``what`` after ``timeout`` s. Returns the seconds waited."""
    began = time.monotonic()
    deadline = began + timeout
    while not await condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{why()}")
        await asyncio.sleep(every)
    return time.monotonic() - began


__all__ = ["CLI", "Process", "Processes", "clean_env", "free_port", "until"]
