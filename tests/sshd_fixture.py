"""A real OpenSSH server on a loopback port, standing in for a pod's sshd.

It runs ``/usr/sbin/sshd`` (Debian's ``openssh-server``; ``.ci/run`` installs
it) as the current user, with a throwaway host key, an ``authorized_keys``
file the fake API fills with each pod's ``PUBLIC_KEY``, and a
``ForceCommand`` playing the pod's container: every session starts in the
pod's home folder (``home``) with ``bin`` (shims a test puts there) first on
the ``PATH``, then runs the client's command with ``/bin/sh``.

Without sshd the tests that need it skip locally, and fail under CI (``CI`` set).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
MISSING = "needs OpenSSH's server at /usr/sbin/sshd (apt-get install openssh-server; .ci/run installs it)"


def require_sshd() -> str:
    """The sshd path; a failure under CI, a skip elsewhere, when it is missing."""
    found = SSHD if os.access(SSHD, os.X_OK) else None
    if found and shutil.which("ssh") and shutil.which("ssh-keygen"):
        return found
    if os.environ.get("CI"):
        pytest.fail(MISSING)
    pytest.skip(MISSING)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited {proc.returncode}: {log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on port {port} within {timeout_s} s: {log.read_text()}")


class Sshd:
    """``with Sshd(tmp_path) as sshd:`` -> ``sshd.port``, ``sshd.home``, ``sshd.bin``, ``sshd.authorized_keys``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.home, self.bin = self.root / "pod_home", self.root / "pod_bin"
        self.authorized_keys = self.root / "authorized_keys"
        self.port = _free_port()
        self.log = self.root / "sshd.log"
        self._proc = None

    def _configure(self) -> Path:
        for folder in (self.home, self.bin):
            folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.root / "host_key")], check=True)
        self.authorized_keys.touch()
        shell = self.root / "pod_shell"
        # The command lines the pod received, to check that no secret travels on one.
        self.commands = self.root / "commands.log"
        shell.write_text(f'#!/bin/sh\nprintf "%s\\n---\\n" "$SSH_ORIGINAL_COMMAND" >> "{self.commands}"\n'
                         f'export PATH="{self.bin}:$PATH"\ncd "{self.home}" || exit 1\n'
                         'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n')
        shell.chmod(0o755)
        config = self.root / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.root / 'host_key'}",
            f"PidFile {self.root / 'sshd.pid'}", f"AuthorizedKeysFile {self.authorized_keys}",
            "UsePAM no", "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", f"ForceCommand {shell}",
            "LogLevel VERBOSE", "",
        ]))
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation folder, as root
        return config

    def __enter__(self) -> "Sshd":
        sshd = require_sshd()
        config = self._configure()
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_listening(self.port, self._proc, self.log)
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
