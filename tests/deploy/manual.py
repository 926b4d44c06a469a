"""Run docs/operations.md section 0 as written: its `deploy-test` blocks, with paths, names
and ports rewritten to a temporary site (see the section's first paragraph)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MANUAL = ROOT / "docs" / "operations.md"
UNITS = ROOT / "deploy" / "systemd"
_BLOCK = re.compile(r"<!-- deploy-test: (\S+) -->\n```[a-z]*\n(.*?)\n```", re.S)


def blocks(text: str | None = None) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, body in _BLOCK.findall(MANUAL.read_text() if text is None else text):
        assert name not in found, f"two deploy-test blocks named {name}"
        found[name] = body
    return found


@dataclass
class Site:
    """One host's file system root and the site's ports."""

    root: Path
    https_port: int
    turn_port: int
    metrics_port: int

    def rewrite(self, text: str) -> str:
        table = {
            "/opt/p2pmed/.venv/bin/p2pmed": f"{sys.executable} -m p2pmed",
            "/opt/p2pmed/": f"{ROOT}/",
            "/var/backups/": f"{self.root}/var/backups/",
            "/etc/p2pmed": f"{self.root}/etc/p2pmed",
            "/var/lib/": f"{self.root}/var/lib/",
            "/run/": f"{self.root}/run/",
            "signal.example.org": "127.0.0.1",
            "turn.example.org": "127.0.0.1",
            "8443": str(self.https_port),
            "3478": str(self.turn_port),
            "9464": str(self.metrics_port),
        }
        pattern = re.compile("|".join(re.escape(k) for k in table))
        return pattern.sub(lambda m: table[m.group(0)], text)

    def env(self) -> dict[str, str]:
        """A root shell's environment: the venv's `p2pmed` on PATH, no P2PMED_* leftovers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2PMED_")}
        env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["P2PMED_TURN_RUNDIR"] = f"{self.root}/run/p2pmed-turn"
        return env


async def run_block(site: Site, body: str, cwd: Path = ROOT, rewrite: bool = True) -> str:
    """Run a shell block to completion (bash -e); return its stdout, fail with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", site.rewrite(body) if rewrite else body,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=str(cwd), env=site.env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"block failed ({proc.returncode}):\n{body}\n{err.decode()}"
    return out.decode()


async def start_block(site: Site, body: str) -> asyncio.subprocess.Process:
    """Start a long-running shell block in its own process group (stop it with `stop`)."""
    return await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", site.rewrite(body),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, cwd=str(ROOT), env=site.env(),
        start_new_session=True,
    )  # fmt: skip


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> int:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    return proc.returncode or 0


def parse_unit(text: str) -> dict[str, list[str]]:
    """[Service] keys -> values in order; an empty value resets the list (as systemd does
    for ExecStart= in a drop-in)."""
    section = ""
    out: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if section == "Service":
            if value.strip():
                out.setdefault(key.strip(), []).append(value.strip())
            else:
                out[key.strip()] = []
    return out


def unit_command(site: Site, unit: dict[str, list[str]]) -> tuple[list[str], dict[str, str]]:
    """The unit's ExecStart and environment (Environment=, then EnvironmentFile=), rewritten."""
    (exec_start,) = unit["ExecStart"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    # LoadCredential=NAME:PATH: systemd copies PATH (readable by root only) into a private
    # directory of the service, named by %d; do the same
    creds = site.root / "run" / "credentials"
    for value in unit.get("LoadCredential", []):
        name, _, src = value.partition(":")
        creds.mkdir(parents=True, exist_ok=True, mode=0o700)
        (creds / name).write_bytes(Path(site.rewrite(src)).read_bytes())
        (creds / name).chmod(0o400)
    for value in unit.get("Environment", []):
        for item in shlex.split(site.rewrite(value).replace("%d", str(creds))):
            key, _, val = item.partition("=")
            env[key] = val
    for name in unit.get("EnvironmentFile", []):
        path = Path(site.rewrite(name.lstrip("-")))
        if not path.exists() and name.startswith("-"):
            continue
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, val = line.partition("=")
                env[key] = val
    return shlex.split(site.rewrite(exec_start).replace("%d", str(creds))), env
