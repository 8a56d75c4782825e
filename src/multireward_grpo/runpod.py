"""Run a command on a RunPod cloud GPU, and never leave a pod billing behind.

:class:`RunPodClient` talks to RunPod's REST API (v2) with the standard
library only: it creates a GPU pod (trying GPU types in order), waits until it
is ``RUNNING``, runs a shell command there over SSH (the system ``ssh``), with
environment variables sent over the SSH session's stdin (never on a command
line), copies a results folder back (``tar`` over SSH) and **always** deletes
the pod: on success, failure, timeout, Ctrl-C, SIGTERM, and, through a local
record of live pods, after the process that created it died (the next client
start, or ``multireward-grpo runpod cleanup``, deletes what it left).

The API key comes from the ``api_key`` argument, the ``RUNPOD_API_KEY``
environment variable or a ``.env`` file in the working directory. It never
appears in any output, log, repr or exception text (HTTP error bodies are
redacted too).

Only the paths in :data:`ENDPOINTS` and the body built by
:meth:`RunPodClient.pod_request_body` depend on the API version, so a path or
field change is one edit. The response fields read (status, SSH endpoint,
hourly price) are parsed by :func:`pod_status`, :func:`ssh_endpoint` and
:func:`hourly_price`, which accept both the v2 and the older v1 shapes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from multireward_grpo._fileio import atomic_write

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_GPU_TYPES",
    "DEFAULT_IMAGE",
    "ENDPOINTS",
    "RunPodClient",
    "RunPodError",
    "RunResult",
    "hourly_price",
    "pod_status",
    "ssh_endpoint",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.runpod.io/v2"
"""RunPod's REST API v2 (v1, ``https://rest.runpod.io/v1``, was retired on 2026-11-15)."""

ENDPOINTS: dict[str, tuple[str, str]] = {
    "create": ("POST", "/pods"),
    "get": ("GET", "/pods/{pod_id}"),
    "delete": ("DELETE", "/pods/{pod_id}"),
    "list": ("GET", "/pods"),
}
"""Operation -> (HTTP method, path under the base URL)."""

DEFAULT_GPU_TYPES: tuple[str, ...] = ("NVIDIA GeForce RTX 4090", "NVIDIA L40S", "NVIDIA A100 80GB PCIe")
"""Tried in this order: a 24 GB card is enough for the 1.5B LoRA runs; the next ones when it is sold out."""

DEFAULT_IMAGE = "runpod/pytorch:2.8.0-py3.11-cuda12.8.1"
"""A RunPod PyTorch image: CUDA, Python and an SSH server that installs the ``PUBLIC_KEY`` variable."""

RUNNING = "RUNNING"
# Statuses after which a pod will never become RUNNING by itself.
_DEAD_STATUSES = frozenset({"EXITED", "ERROR", "TERMINATED", "FAILED", "DELETED"})
# HTTP statuses worth retrying: throttling and server-side failures.
_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
_SSH_FAILURE = 255  # what ssh itself exits with when it cannot connect or authenticate
_NAME_PREFIX = "multireward-grpo-"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class RunPodError(RuntimeError):
    """An API call that failed for good (after retries), with the key redacted from its text.

    Attributes
    ----------
    status : int or None
        The HTTP status, or None when no valid answer came (connection
        dropped, malformed JSON).
    """

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class _Transient(Exception):
    """A failure worth retrying (5xx, 429, dropped connection, malformed JSON).

    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(self, message: str, status: Optional[int] = None, retry_after: Optional[float] = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


@dataclass(frozen=True)
class RunResult:
    """What :meth:`RunPodClient.run_command` did.

    Attributes
    ----------
    status : str
        ``"succeeded"`` (exit code 0), ``"command_failed"`` (nonzero exit
        code), ``"cap_hit"`` (the command was stopped at the wall-clock cap),
        ``"not_running"`` (the pod never became RUNNING and reachable over
        SSH within the cap, or it died), ``"create_failed"`` (no GPU type
        could be rented) or ``"error"`` (anything else; see ``message``).
    message : str
        One line saying what happened, in words.
    return_code : int or None
        The command's exit code; None when it did not run to completion.
    elapsed_s : float
        Wall-clock seconds of the whole call, deletion included.
    estimated_cost_usd : float or None
        ``cost_per_hour_usd`` times the time from the first creation request
        to the confirmed deletion; None when the API reported no price.
    cost_per_hour_usd : float or None
        The pod's hourly price as the API reported it.
    results_path : Path or None
        The local folder the results were copied into; None when nothing was copied.
    cap_hit : bool
        Whether the wall-clock cap ran out before the work was done.
    pod_id : str or None
        The pod that ran the command (None when none was created).
    gpu_type : str or None
        The GPU type that was rented.
    pod_deleted : bool
        Whether the deletion of every pod this call created was confirmed
        (True when none was created). When False, the pod stays in the local
        record and ``multireward-grpo runpod cleanup`` retries.
    """

    status: str
    message: str
    return_code: Optional[int]
    elapsed_s: float
    estimated_cost_usd: Optional[float]
    cost_per_hour_usd: Optional[float]
    results_path: Optional[Path]
    cap_hit: bool
    pod_id: Optional[str]
    gpu_type: Optional[str]
    pod_deleted: bool

    @property
    def ok(self) -> bool:
        """True when the command ran and exited 0."""
        return self.status == "succeeded"


# --------------------------------------------------------------------------- API key


def _read_dotenv(path: Path, name: str) -> Optional[str]:
    """The value of ``name`` in a ``KEY=value`` file (``export``, quotes and ``#`` comments allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, PermissionError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if key.strip() != name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            return value[1:-1]
        return value.split(" #", 1)[0].strip()
    return None


def resolve_api_key(api_key: Optional[str] = None, *, dotenv: str | os.PathLike = ".env") -> str:
    """The RunPod API key: the argument, else ``RUNPOD_API_KEY``, else ``RUNPOD_API_KEY=`` in ``dotenv``.

    Raises
    ------
    TypeError
        When ``api_key`` is given but not a string.
    ValueError
        When none of the three gives a non-empty key; the message names them.
    """
    if api_key is not None and not isinstance(api_key, str):
        raise TypeError(f"api_key must be a string, got {type(api_key).__name__}")
    for candidate in (api_key, os.environ.get("RUNPOD_API_KEY"), _read_dotenv(Path(dotenv), "RUNPOD_API_KEY")):
        if candidate and candidate.strip():
            return candidate.strip()
    raise ValueError(
        "no RunPod API key: pass RunPodClient(api_key=...), set the RUNPOD_API_KEY environment variable, "
        f"or put a line RUNPOD_API_KEY=... in {os.fspath(dotenv)!r} in the working directory "
        "(create a key at https://www.runpod.io/console/user/settings)"
    )


class _Redactor:
    """Replaces every secret (the API key, forwarded values) in a text with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: Optional[str], *, always: bool = False) -> None:
        # Very short values would redact ordinary words; only the API key is redacted whatever its length.
        if secret and (always or len(secret) >= 6) and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: Any) -> str:
        text = str(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


# --------------------------------------------------------------------------- response parsing


def pod_status(pod: Mapping[str, Any]) -> str:
    """The pod's lifecycle status in capitals (v2 ``status``, v1 ``desiredStatus``), ``"UNKNOWN"`` if absent."""
    for key in ("status", "desiredStatus"):
        value = pod.get(key)
        if isinstance(value, str) and value:
            return value.upper()
    return "UNKNOWN"


def _port_number(value: Any) -> Optional[int]:
    try:
        port = int(value)
    except (TypeError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def ssh_endpoint(pod: Mapping[str, Any]) -> Optional[tuple[str, int]]:
    """``(host, port)`` where the pod's port 22 is published, or None while it has none.

    Reads ``ssh: {host, port}``, ``publicIp`` with ``portMappings: {"22": port}``,
    or ``runtime.ports`` / ``ports`` entries ``{privatePort: 22, ip, publicPort}``.
    """
    ssh = pod.get("ssh")
    if isinstance(ssh, Mapping) and ssh.get("host") and _port_number(ssh.get("port")):
        return str(ssh["host"]), _port_number(ssh["port"])
    mappings = pod.get("portMappings")
    if pod.get("publicIp") and isinstance(mappings, Mapping):
        port = _port_number(mappings.get("22", mappings.get(22)))
        if port:
            return str(pod["publicIp"]), port
    runtime = pod.get("runtime")
    entries = runtime.get("ports") if isinstance(runtime, Mapping) else pod.get("ports")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping) and _port_number(entry.get("privatePort")) == 22 and entry.get("ip"):
            if entry.get("isIpPublic", True) and _port_number(entry.get("publicPort")):
                return str(entry["ip"]), _port_number(entry["publicPort"])
    return None


def _price(value: Any) -> Optional[float]:
    try:
        price = float(value)
    except (TypeError, ValueError):
        return None
    return price if math.isfinite(price) and price >= 0 else None


def hourly_price(pod: Mapping[str, Any]) -> Optional[float]:
    """The pod's price in USD per hour as the API reports it (``adjustedCostPerHr``, ``costPerHr``, ``cost``), or None."""
    for key in ("adjustedCostPerHr", "costPerHr", "cost"):
        price = _price(pod.get(key))
        if price is not None:
            return price
    return None


def _pod_list(payload: Any) -> list[dict]:
    """The pods of a list response: a JSON array, or an object holding one under ``pods``/``data``/``items``."""
    if isinstance(payload, Mapping):
        for key in ("pods", "data", "items"):
            if isinstance(payload.get(key), list):
                payload = payload[key]
                break
    if not isinstance(payload, list):
        raise _Transient("the pod list is not a JSON list")
    return [pod for pod in payload if isinstance(pod, dict)]


# --------------------------------------------------------------------------- the local record of live pods


def default_state_file() -> Path:
    """``$XDG_CACHE_HOME/multireward-grpo/runpod_pods.json`` (``~/.cache`` when the variable is unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "multireward-grpo" / "runpod_pods.json"


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class _PodRecord:
    """A JSON file naming the pods this machine created and has not seen deleted yet.

    Entries are keyed by pod name (recorded before the creation request, so a
    pod whose creation answer was lost is found by name), with the pod id once
    known, the creating process id and host, and the API base URL.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _load(self) -> dict:
        try:
            payload = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError):
            log.warning("the RunPod pod record %s is not valid JSON; starting a new one", self.path)
            return {}
        pods = payload.get("pods") if isinstance(payload, dict) else None
        return {k: v for k, v in pods.items() if isinstance(v, dict)} if isinstance(pods, dict) else {}

    def _save(self, pods: dict) -> None:
        atomic_write(self.path, json.dumps({"pods": pods}, indent=2, sort_keys=True) + "\n")

    def entries(self) -> dict:
        with self._locked():
            return self._load()

    def put(self, name: str, **fields) -> None:
        with self._locked():
            pods = self._load()
            pods.setdefault(name, {}).update(fields)
            self._save(pods)

    def drop(self, name: str) -> None:
        with self._locked():
            pods = self._load()
            if pods.pop(name, None) is not None:
                self._save(pods)


# --------------------------------------------------------------------------- signals


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so the same cleanup runs."""


@contextlib.contextmanager
def _termination_as_interrupt():
    """Within the block, SIGTERM/SIGHUP raise :class:`_Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated(f"signal {signum}")

    previous = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _signals_deferred():
    """Ctrl-C and SIGTERM are noted but do not interrupt the block (the pod deletion)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def note(signum, frame):
        received.append(signum)
        sys.stderr.write("runpod: deleting the pod first (it is recorded for `multireward-grpo runpod cleanup`)\n")

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- SSH


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The archive's files and folders, refusing absolute paths, ``..``, links and devices."""
    members = []
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts:
            raise ValueError(f"the results archive holds an unsafe path {member.name!r}")
        if member.isfile() or member.isdir():
            members.append(member)
    return members


class _SSH:
    """The system ``ssh`` pointed at one pod, with our key and a known-hosts file of our own."""

    def __init__(self, host: str, port: int, *, user: str, key: Path, known_hosts: Path, connect_timeout_s: float):
        self.host, self.port = host, port
        self.base = [
            "ssh", "-p", str(port), "-i", os.fspath(key),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={os.fspath(known_hosts)}",
            "-o", f"ConnectTimeout={max(1, int(connect_timeout_s))}",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR",
            f"{user}@{host}",
        ]

    def start(self, remote_command: str, **popen) -> subprocess.Popen:
        # A session of its own: Ctrl-C reaches us, and we decide when ssh stops.
        return subprocess.Popen([*self.base, remote_command], start_new_session=True, **popen)

    def answers(self, timeout_s: float) -> bool:
        proc = self.start("true", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return _wait(proc, timeout_s) == 0


def _wait(proc: subprocess.Popen, timeout_s: float) -> Optional[int]:
    """The exit code, or None after stopping the process when it outlived ``timeout_s``."""
    try:
        return proc.wait(timeout=max(0.0, timeout_s))
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return None
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _env_script(env: Mapping[str, str]) -> bytes:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items()).encode()


def _remote_command(cmd: str, workdir: Optional[str]) -> str:
    # The variables arrive on stdin and are evaluated by the remote shell: no secret on any command line.
    lines = ['eval "$(cat)" || exit 97']
    if workdir:
        lines.append(f"cd {shlex.quote(workdir)} || exit 96")
    return "\n".join([*lines, cmd])


# --------------------------------------------------------------------------- one run's state


@dataclass
class _Run:
    """What one ``run_command`` call has rented so far (mutable; turned into a RunResult at the end)."""

    name: str
    start: float
    deadline: float
    pod_id: Optional[str] = None
    gpu_type: Optional[str] = None
    price: Optional[float] = None
    created_at: Optional[float] = None
    # A creation request that failed without a definite refusal (or was interrupted) may have made a
    # pod whose answer was lost: such pods are found by name and deleted at the end.
    orphans_possible: bool = False
    create_error: str = "no GPU type tried"
    cap_hit: bool = False


_DEFAULT_FORWARD_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY")
_ENV_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _check_env(env: Optional[Mapping[str, str]], forward_env: Sequence[str]) -> dict[str, str]:
    """``env`` plus the forwarded local variables that are set, every name a shell identifier."""
    if env is not None and not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping of names to strings, got {type(env).__name__}")
    if isinstance(forward_env, str):
        raise TypeError("forward_env must be a sequence of variable names, not one string")
    merged = {name: os.environ[name] for name in forward_env if os.environ.get(name)}
    merged.update(env or {})
    for name, value in merged.items():
        if not isinstance(name, str) or not name or name[0].isdigit() or not set(name) <= _ENV_NAME_CHARS:
            raise ValueError(f"environment variable names must be letters, digits and _, not starting with a digit; got {name!r}")
        if not isinstance(value, str):
            raise TypeError(f"the value of environment variable {name} must be a string, got {type(value).__name__}")
    return merged


def _check_positive(name: str, value: Any) -> float:
    from multireward_grpo._validate import check_float

    return check_float(name, value, minimum=0.0, strict_minimum=True)


def _retry_after(headers) -> Optional[float]:
    """``Retry-After`` in seconds (the delay form; an HTTP date is ignored), or None."""
    try:
        seconds = float(headers.get("Retry-After")) if headers is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def _no_redirects() -> urllib.request.HTTPRedirectHandler:
    class Refuse(urllib.request.HTTPRedirectHandler):
        # Following a redirect would send the Authorization header to wherever it points.
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            return None

    return Refuse()


class RunPodClient:
    """A RunPod REST API client that runs commands on a GPU pod and always deletes the pod.

    Parameters
    ----------
    api_key : str, optional
        The API key; default: ``RUNPOD_API_KEY``, else a ``RUNPOD_API_KEY=``
        line in ``dotenv``. Never printed.
    base_url : str, optional
        The API root; default: ``RUNPOD_API_URL``, else :data:`DEFAULT_BASE_URL`.
        Tests point it at a local server.
    state_file : path, optional
        The record of pods created and not yet seen deleted; default
        :func:`default_state_file`. At start, pods it lists whose creating
        process has died are deleted (see ``reap``).
    ssh_key : path, optional
        A private key whose ``.pub`` the pod is given (as ``PUBLIC_KEY``); by
        default a throwaway ed25519 key is made for every run.
    ssh_user : str, optional
        Login on the pod; default ``RUNPOD_SSH_USER``, else ``"root"``.
    dotenv : path
        The ``.env`` file read for the key (default ``.env`` in the working directory).
    request_timeout_s : float
        Seconds one HTTP request may take (default 30).
    max_attempts : int
        Tries per API call on transient failures: 5xx, 429, a dropped
        connection, malformed JSON (default 6).
    backoff_s, max_backoff_s : float
        Exponential backoff between tries: ``backoff_s * 2**attempt`` (or the
        server's ``Retry-After`` when longer), at most ``max_backoff_s``
        (defaults 1 and 30).
    poll_interval_s : float
        Seconds between status polls while a pod starts (default 5).
    delete_timeout_s : float
        How long deletion is retried until confirmed (default 600). Deletion
        runs even after the wall-clock cap: the pod bills until it is gone.
    reap : bool
        Delete the recorded pods of dead processes when the client starts (default True).
    verbose : bool, optional
        Print a progress line on stderr; default: only when stderr is a terminal.
    sleep, clock : callable
        ``time.sleep`` and ``time.monotonic`` unless injected (tests).
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        state_file: str | os.PathLike | None = None,
        ssh_key: str | os.PathLike | None = None,
        ssh_user: Optional[str] = None,
        dotenv: str | os.PathLike = ".env",
        request_timeout_s: float = 30.0,
        max_attempts: int = 6,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        poll_interval_s: float = 5.0,
        delete_timeout_s: float = 600.0,
        reap: bool = True,
        verbose: Optional[bool] = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        from multireward_grpo._validate import check_int

        self._api_key = resolve_api_key(api_key, dotenv=dotenv)
        self._redact = _Redactor()
        self._redact.add(self._api_key, always=True)
        self.base_url = self._check_base_url(base_url if base_url is not None else os.environ.get("RUNPOD_API_URL"))
        self.state_file = Path(state_file) if state_file is not None else default_state_file()
        self._record = _PodRecord(self.state_file)
        self.ssh_key = self._check_ssh_key(ssh_key)
        self.ssh_user = ssh_user or os.environ.get("RUNPOD_SSH_USER") or "root"
        self.request_timeout_s = _check_positive("request_timeout_s", request_timeout_s)
        self.max_attempts = check_int("max_attempts", max_attempts, 1)
        self.backoff_s = _check_positive("backoff_s", backoff_s)
        self.max_backoff_s = _check_positive("max_backoff_s", max_backoff_s)
        self.poll_interval_s = _check_positive("poll_interval_s", poll_interval_s)
        self.delete_timeout_s = _check_positive("delete_timeout_s", delete_timeout_s)
        self.verbose = sys.stderr.isatty() if verbose is None else bool(verbose)
        self._progress_width = 0
        self._sleep, self._clock = sleep, clock
        self._opener = self._build_opener()
        if reap:
            self._reap_at_start()

    def __repr__(self) -> str:
        return f"RunPodClient(base_url={self.base_url!r}, state_file={os.fspath(self.state_file)!r}, api_key=***)"

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _check_base_url(base_url: Optional[str]) -> str:
        if not base_url:
            return DEFAULT_BASE_URL
        from urllib.parse import urlsplit

        if not isinstance(base_url, str) or not base_url.startswith(("https://", "http://")):
            raise ValueError(f"base_url (or RUNPOD_API_URL) must start with https://, got {base_url!r}")
        if base_url.startswith("http://") and urlsplit(base_url).hostname not in _LOOPBACK:
            # Plain HTTP would carry the key in clear text: only a server on this machine may use it.
            raise ValueError(f"base_url (or RUNPOD_API_URL) must use https:// unless it is on this machine, got {base_url!r}")
        return base_url.rstrip("/")

    @staticmethod
    def _check_ssh_key(ssh_key) -> Optional[Path]:
        if ssh_key is None:
            return None
        key = Path(ssh_key).expanduser()
        if not key.is_file():
            raise FileNotFoundError(f"ssh_key {os.fspath(key)!r} does not exist (give the private key's path)")
        if not key.with_name(key.name + ".pub").is_file():
            raise FileNotFoundError(f"ssh_key needs its public half next to it: {os.fspath(key)}.pub is missing")
        return key

    def _build_opener(self) -> urllib.request.OpenerDirector:
        from urllib.parse import urlsplit

        handlers: list = [_no_redirects()]
        if urlsplit(self.base_url).hostname in _LOOPBACK:
            handlers.append(urllib.request.ProxyHandler({}))  # a local server is never behind the proxy
        return urllib.request.build_opener(*handlers)

    def _say(self, text: str, *, progress: bool = False) -> None:
        """A line on stderr when verbose (``progress``: rewritten in place), and in the log."""
        text = self._redact(text)
        log.log(logging.DEBUG if progress else logging.INFO, "%s", text)
        if not self.verbose:
            return
        if progress:
            sys.stderr.write("\r" + text.ljust(self._progress_width))
            self._progress_width = len(text)
        else:
            sys.stderr.write(("\n" if self._progress_width else "") + text + "\n")
            self._progress_width = 0
        sys.stderr.flush()

    # ------------------------------------------------------------------ HTTP

    def _send(self, method: str, url: str, body: Any, parse: bool) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self.request_timeout_s) as response:
                status, raw, retry_after = response.status, response.read(), None
        except urllib.error.HTTPError as err:
            status, raw, retry_after = err.code, self._read_error_body(err), _retry_after(err.headers)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            reason = getattr(err, "reason", None) or err
            raise _Transient(f"connection failed ({self._redact(reason) or type(err).__name__})") from None
        if status >= 300:
            text = self._redact(raw.decode("utf-8", "replace").strip())[:300]
            message = f"HTTP {status}" + (f": {text}" if text else "")
            if status in _TRANSIENT_HTTP:
                raise _Transient(message, status, retry_after)
            raise RunPodError(message, status)
        if not parse or not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _Transient(f"malformed JSON in the answer (HTTP {status})") from None

    @staticmethod
    def _read_error_body(err: urllib.error.HTTPError) -> bytes:
        try:
            return err.read() or b""
        except (OSError, http.client.HTTPException):
            return b""

    def _request(self, op: str, *, pod_id: Optional[str] = None, body: Any = None, parse: bool = True,
                 deadline: Optional[float] = None, attempts: Optional[int] = None,
                 failures: Optional[list] = None) -> Any:
        """One API operation of :data:`ENDPOINTS`, retried with backoff on transient failures.

        Every transient failure is appended to ``failures`` when given: a
        creation retried after one may have made a pod whose answer was lost.

        Raises
        ------
        RunPodError
            On a non-transient HTTP error (``status`` set), or when the tries
            (or the time before ``deadline``) ran out.
        """
        from urllib.parse import quote

        method, path = ENDPOINTS[op]
        path = path.format(pod_id=quote(pod_id or "", safe=""))
        attempts = attempts or self.max_attempts
        for attempt in range(attempts):
            try:
                return self._send(method, self.base_url + path, body, parse)
            except _Transient as err:
                last = err
                if failures is not None:
                    failures.append(str(err))
                wait = min(self.max_backoff_s, max(self.backoff_s * 2 ** attempt, err.retry_after or 0.0))
                if attempt + 1 == attempts or (deadline is not None and self._clock() + wait > deadline):
                    break
                log.info("%s %s: %s; retrying in %.2f s", method, path, err, wait)
                self._sleep(wait)
        raise RunPodError(f"{method} {path}: {last} (after {attempt + 1} tries)", last.status)

    # ------------------------------------------------------------------ pods

    def pod_request_body(self, *, name: str, gpu_type: str, image: str, public_key: str, cloud_type: str,
                         gpu_count: int, disk_gb: int) -> dict:
        """The JSON body of a pod creation: one GPU type, port 22 published, our public key for its sshd."""
        return {
            "name": name,
            "image": image,
            "gpu": {"id": gpu_type, "count": gpu_count},
            "cloud": cloud_type,
            "disk": disk_gb,
            "ports": ["22/tcp"],
            # Only the public key travels in the pod's configuration; secrets go over SSH.
            "env": {"PUBLIC_KEY": public_key},
        }

    def get_pod(self, pod_id: str, *, deadline: Optional[float] = None) -> Optional[dict]:
        """The pod's description, or None when the API says it does not exist (404)."""
        try:
            pod = self._request("get", pod_id=pod_id, deadline=deadline)
        except RunPodError as err:
            if err.status == 404:
                return None
            raise
        if not isinstance(pod, dict):
            raise RunPodError(f"GET pod {pod_id}: the answer is not a JSON object")
        return pod

    def list_pods(self) -> list[dict]:
        """Every pod of the account, as the API lists them."""
        try:
            return _pod_list(self._request("list"))
        except _Transient as err:
            raise RunPodError(f"GET pods: {err}") from None

    def _gone(self, pod_id: str) -> bool:
        try:
            pod = self.get_pod(pod_id, deadline=self._clock())
        except RunPodError:
            return False
        return pod is None or pod_status(pod) in ("TERMINATED", "DELETED")

    def delete_pod(self, pod_id: str, *, timeout_s: Optional[float] = None) -> bool:
        """Delete a pod and retry until the API confirms it is gone; True when confirmed within ``timeout_s``."""
        end = self._clock() + (self.delete_timeout_s if timeout_s is None else timeout_s)
        attempt = 0
        while True:
            try:
                self._request("delete", pod_id=pod_id, parse=False, attempts=1)
            except RunPodError as err:
                if err.status != 404:
                    log.info("DELETE pod %s: %s", pod_id, err)
            if self._gone(pod_id):
                self._say(f"runpod: pod {pod_id} deleted")
                return True
            wait = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
            attempt += 1
            if self._clock() + wait > end:
                self._say(f"runpod: could not confirm the deletion of pod {pod_id}; "
                          "run `multireward-grpo runpod cleanup` (it is recorded)")
                return False
            self._sleep(wait)

    def _delete_named(self, name: str, known_ids: Sequence[str] = ()) -> bool:
        """Delete every pod named ``name`` (a creation whose answer was lost may have made one)."""
        try:
            pods = self.list_pods()
        except RunPodError as err:
            log.warning("could not list pods to find %s: %s", name, err)
            return False
        ids = [str(p["id"]) for p in pods if p.get("name") == name and p.get("id") and str(p["id"]) not in known_ids]
        return all([self.delete_pod(pod_id) for pod_id in ids])

    # ------------------------------------------------------------------ the record of live pods

    def cleanup(self, *, include_live: bool = False) -> list[str]:
        """Delete the recorded pods whose creating process has died (all recorded ones with ``include_live``).

        Only pods recorded by this machine for this client's ``base_url`` are
        touched. Returns the names of the records settled (their pods deleted);
        a pod whose deletion is not confirmed stays recorded.
        """
        settled = []
        for name, entry in self._record.entries().items():
            if entry.get("base_url") != self.base_url or entry.get("host") != socket.gethostname():
                continue
            if not include_live and _process_alive(entry.get("pid")):
                continue
            pod_id = entry.get("pod_id")
            deleted = self.delete_pod(pod_id) if pod_id else True
            deleted = self._delete_named(name, [pod_id] if pod_id else []) and deleted
            if deleted:
                self._record.drop(name)
                settled.append(name)
        return settled

    def _reap_at_start(self) -> None:
        try:
            settled = self.cleanup()
        except (RunPodError, OSError) as err:
            log.warning("could not delete the pods left by an earlier run: %s", self._redact(err))
            return
        if settled:
            self._say(f"runpod: deleted {len(settled)} pod(s) left by a process that died: {', '.join(settled)}")

    # ------------------------------------------------------------------ run a command

    def run_command(
        self,
        cmd: str,
        wall_clock_cap: float = 1800,
        gpu_types: Sequence[str] = DEFAULT_GPU_TYPES,
        image: str = DEFAULT_IMAGE,
        env: Optional[Mapping[str, str]] = None,
        results_dir: Optional[str] = None,
        *,
        local_results_dir: str | os.PathLike | None = None,
        workdir: Optional[str] = None,
        forward_env: Sequence[str] = _DEFAULT_FORWARD_ENV,
        cloud_type: str = "SECURE",
        gpu_count: int = 1,
        disk_gb: int = 50,
        results_reserve_s: Optional[float] = None,
    ) -> RunResult:
        """Run ``cmd`` on a new GPU pod, copy ``results_dir`` back, and delete the pod.

        Parameters
        ----------
        cmd : str
            A shell command line, run by the pod's shell in ``workdir`` (default: its home).
        wall_clock_cap : float
            Seconds of billed time allowed: creation, start-up, the command and
            the copy all count. A command still running at the cap is stopped
            and the result says ``cap_hit``. Deletion always runs, after the cap if need be.
        gpu_types : sequence of str
            RunPod GPU type ids in order of preference; the next is tried when one cannot be rented.
        image : str
            The container image; it must run an SSH server that trusts ``PUBLIC_KEY`` (RunPod's images do).
        env : mapping of str to str, optional
            Variables exported in the command's session. They are sent over the
            SSH connection's stdin, never on a command line nor in the pod's configuration.
        results_dir : str, optional
            A folder on the pod (relative to ``workdir``) copied back after the command, even a failed one.
        local_results_dir : path, optional
            Where the copy lands (must not exist yet); default ``runpod_results/<pod id>``.
        workdir : str, optional
            The folder on the pod the command starts in.
        forward_env : sequence of str
            Local variables exported too when set and not in ``env`` (default: the
            Hugging Face token variables and ``WANDB_API_KEY``).
        cloud_type : {"SECURE", "COMMUNITY"}
            RunPod's cloud to rent from.
        gpu_count, disk_gb : int
            GPUs per pod (default 1) and container disk in GB (default 50).
        results_reserve_s : float, optional
            Seconds of the cap kept for copying results back: the command is
            stopped that much earlier. Default ``min(120, cap / 10)`` with a ``results_dir``, else 0.

        Returns
        -------
        RunResult
            What happened; failures of the pod, the network or the command are
            reported here rather than raised.

        Raises
        ------
        KeyboardInterrupt
            On Ctrl-C (or SIGTERM/SIGHUP), after the pod has been deleted.
        TypeError, ValueError
            On invalid arguments, before anything is rented.
        """
        plan = self._check_run_arguments(cmd, wall_clock_cap, gpu_types, image, env, results_dir,
                                         local_results_dir, workdir, forward_env, cloud_type, gpu_count,
                                         disk_gb, results_reserve_s)
        start = self._clock()
        run = _Run(name=f"{_NAME_PREFIX}{uuid.uuid4().hex[:12]}", start=start, deadline=start + plan["cap"])
        outcome = ("error", "nothing ran", None, None)
        with tempfile.TemporaryDirectory(prefix="mrgrpo-runpod-") as tmp, _termination_as_interrupt():
            try:
                outcome = self._run_on_pod(run, plan, Path(tmp))
            except KeyboardInterrupt:
                self._say(f"runpod: interrupted; deleting {run.pod_id or 'any pod created'}")
                raise
            except (RunPodError, OSError, ValueError, subprocess.SubprocessError) as err:
                outcome = ("error", self._redact(err), None, None)
            finally:
                with _signals_deferred():
                    deleted, ended = self._settle(run)
        return self._result(run, outcome, deleted, ended)

    def _check_run_arguments(self, cmd, cap, gpu_types, image, env, results_dir, local_results_dir, workdir,
                             forward_env, cloud_type, gpu_count, disk_gb, results_reserve_s) -> dict:
        from multireward_grpo._validate import check_choice, check_float, check_int

        if not isinstance(cmd, str) or not cmd.strip():
            raise ValueError(f"cmd must be a non-empty shell command line, got {cmd!r}")
        cap = _check_positive("wall_clock_cap", cap)
        if isinstance(gpu_types, str):
            gpu_types = [gpu_types]
        gpu_types = list(gpu_types or [])
        if not gpu_types or not all(isinstance(g, str) and g.strip() for g in gpu_types):
            raise ValueError(f"gpu_types must be a non-empty list of RunPod GPU type ids, got {gpu_types!r}")
        if not isinstance(image, str) or not image.strip():
            raise ValueError(f"image must be a container image name, got {image!r}")
        for name, value in (("results_dir", results_dir), ("workdir", workdir)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty path on the pod, got {value!r}")
        local = None
        if results_dir is not None:
            local = Path(local_results_dir) if local_results_dir is not None else None
            if local is not None and local.exists():
                raise ValueError(f"local_results_dir {os.fspath(local)!r} exists already; choose a new folder")
            reserve = min(120.0, cap / 10) if results_reserve_s is None else check_float(
                "results_reserve_s", results_reserve_s, minimum=0.0)
            if reserve >= cap:
                raise ValueError(f"results_reserve_s ({reserve:g}) must be less than wall_clock_cap ({cap:g})")
        else:
            reserve = 0.0
        return {
            "cmd": cmd, "cap": cap, "gpu_types": gpu_types, "image": image, "env": _check_env(env, forward_env),
            "results_dir": results_dir, "local": local, "workdir": workdir, "reserve": reserve,
            "cloud_type": check_choice("cloud_type", cloud_type.upper() if isinstance(cloud_type, str) else cloud_type,
                                       ("SECURE", "COMMUNITY")),
            "gpu_count": check_int("gpu_count", gpu_count, 1), "disk_gb": check_int("disk_gb", disk_gb, 1),
        }

    def _run_on_pod(self, run: _Run, plan: dict, tmp: Path) -> tuple:
        """(status, message, return code, results path) of the work on the pod; the caller deletes it."""
        for secret in plan["env"].values():
            self._redact.add(secret)
        key = self._key_pair(tmp)
        pod = self._create(run, plan, key.with_name(key.name + ".pub").read_text().strip())
        if pod is None:
            return ("create_failed", f"no pod could be created: {run.create_error}", None, None)
        ssh, problem = self._wait_ready(run, key, tmp / "known_hosts")
        if ssh is None:
            return ("not_running", problem, None, None)
        code = self._run_remote(run, ssh, plan)
        results = self._fetch_results(run, ssh, plan, tmp) if plan["results_dir"] else None
        if code is None:
            return ("cap_hit", f"the command was stopped at the {plan['cap']:g} s cap", None, results)
        if code == _SSH_FAILURE:
            return ("error", f"ssh to {ssh.host}:{ssh.port} failed (exit 255), or the command exited 255", code, results)
        status = "succeeded" if code == 0 else "command_failed"
        return (status, f"the command exited {code} on pod {run.pod_id} ({run.gpu_type})", code, results)

    def _key_pair(self, tmp: Path) -> Path:
        if self.ssh_key is not None:
            return self.ssh_key
        if shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
            raise FileNotFoundError("the OpenSSH client (ssh, ssh-keygen) is needed: e.g. apt-get install openssh-client")
        key = tmp / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "multireward-grpo-runpod", "-f",
                        os.fspath(key)], check=True, stdin=subprocess.DEVNULL, capture_output=True)
        return key

    def _create(self, run: _Run, plan: dict, public_key: str) -> Optional[dict]:
        """The first pod that could be rented, trying ``gpu_types`` in order; None when none could."""
        self._record.put(run.name, pod_id=None, pid=os.getpid(), host=socket.gethostname(),
                         base_url=self.base_url, created_at=time.time())
        run.created_at = self._clock()
        for gpu_type in plan["gpu_types"]:
            if self._clock() >= run.deadline:
                run.cap_hit = True
                run.create_error += f"; the {plan['cap']:g} s cap ran out"
                return None
            body = self.pod_request_body(name=run.name, gpu_type=gpu_type, image=plan["image"], public_key=public_key,
                                         cloud_type=plan["cloud_type"], gpu_count=plan["gpu_count"],
                                         disk_gb=plan["disk_gb"])
            failures: list = []
            before, run.orphans_possible = run.orphans_possible, True
            try:
                pod = self._request("create", body=body, deadline=run.deadline, failures=failures)
            except RunPodError as err:
                refused = err.status is not None and err.status not in _TRANSIENT_HTTP and not failures
                run.orphans_possible = before if refused else True
                run.create_error = f"{gpu_type}: {self._redact(err)}"
                self._say(f"runpod: could not rent {gpu_type} ({self._redact(err)})")
                if err.status in (401, 403):
                    run.create_error += " (check the API key)"
                    return None
                continue
            run.orphans_possible = before or bool(failures)
            if not isinstance(pod, dict) or not pod.get("id"):
                run.orphans_possible = True
                run.create_error = f"{gpu_type}: the creation answer has no pod id"
                continue
            run.pod_id, run.gpu_type, run.price = str(pod["id"]), gpu_type, hourly_price(pod)
            self._record.put(run.name, pod_id=run.pod_id)
            self._say(f"runpod: created pod {run.pod_id} ({gpu_type}, {self._price_text(run.price)})")
            return pod
        return None

    @staticmethod
    def _price_text(price: Optional[float]) -> str:
        return "price unknown" if price is None else f"${price:.2f}/h"

    def _wait_ready(self, run: _Run, key: Path, known_hosts: Path) -> tuple[Optional[_SSH], str]:
        """Poll until the pod is RUNNING with port 22 published and its sshd answers; (ssh, "") or (None, why)."""
        status, ssh = "UNKNOWN", None
        while True:
            left = run.deadline - self._clock()
            if left <= 0:
                run.cap_hit = True
                where = f" (SSH at {ssh.host}:{ssh.port} did not answer)" if ssh else ""
                return None, f"pod {run.pod_id} was not ready within the cap (last status {status}){where}"
            try:
                pod = self.get_pod(run.pod_id, deadline=run.deadline)
            except RunPodError as err:
                return None, f"pod {run.pod_id}: {self._redact(err)}"
            if pod is None:
                return None, f"pod {run.pod_id} disappeared (the API answers 404)"
            status, endpoint = pod_status(pod), ssh_endpoint(pod)
            run.price = hourly_price(pod) if hourly_price(pod) is not None else run.price
            if status in _DEAD_STATUSES:
                return None, f"pod {run.pod_id} stopped before running the command (status {status})"
            self._say(f"runpod: pod {run.pod_id} {status}, {run.deadline - self._clock():.0f} s of the cap left", progress=True)
            if status == RUNNING and endpoint:
                ssh = _SSH(*endpoint, user=self.ssh_user, key=key, known_hosts=known_hosts,
                           connect_timeout_s=min(10.0, max(1.0, left)))
                if ssh.answers(min(15.0, left)):
                    return ssh, ""
            self._sleep(min(self.poll_interval_s, max(0.0, run.deadline - self._clock())))

    def _run_remote(self, run: _Run, ssh: _SSH, plan: dict) -> Optional[int]:
        """The command's exit code, or None when it was stopped at the cap (minus the results reserve)."""
        self._say(f"runpod: running on {ssh.host}:{ssh.port}: {self._redact(plan['cmd'])}")
        proc = ssh.start(_remote_command(plan["cmd"], plan["workdir"]), stdin=subprocess.PIPE)
        try:
            proc.stdin.write(_env_script(plan["env"]))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        code = _wait(proc, run.deadline - plan["reserve"] - self._clock())
        if code is None:
            run.cap_hit = True
        return code

    def _fetch_results(self, run: _Run, ssh: _SSH, plan: dict, tmp: Path) -> Optional[Path]:
        """Copy ``results_dir`` from the pod (tar over SSH); the local folder, or None when nothing came."""
        local = plan["local"] or Path("runpod_results") / run.pod_id
        archive = tmp / "results.tar"
        remote = _remote_command(f"tar -C {shlex.quote(plan['results_dir'])} -cf - .", plan["workdir"])
        with open(archive, "wb") as out:
            proc = ssh.start(remote, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE)
            proc.stdin.close()
            code = _wait(proc, run.deadline - self._clock())
        if code != 0:
            run.cap_hit = run.cap_hit or code is None
            why = "the cap ran out" if code is None else f"tar exited {code}: {proc.stderr.read().decode(errors='replace').strip()[:200]}"
            self._say(f"runpod: could not copy {plan['results_dir']} back ({self._redact(why)})")
            return None
        staging = Path(tempfile.mkdtemp(prefix=f".{local.name}.", dir=_existing_parent(local)))
        try:
            with tarfile.open(archive) as tar:
                members = _safe_members(tar)
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(staging, members=members, **extra)
            os.replace(staging, local)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._say(f"runpod: results copied to {local}")
        return local

    # ------------------------------------------------------------------ deletion and the result

    def _settle(self, run: _Run) -> tuple[bool, float]:
        """Delete every pod of the run, confirmed; (all confirmed, clock when done)."""
        deleted = True
        if run.pod_id is not None:
            deleted = self.delete_pod(run.pod_id)
        if run.orphans_possible:
            deleted = self._delete_named(run.name, [run.pod_id] if run.pod_id else []) and deleted
        if deleted:
            self._record.drop(run.name)
        return deleted, self._clock()

    def _result(self, run: _Run, outcome: tuple, deleted: bool, ended: float) -> RunResult:
        status, message, code, results = outcome
        cost = None
        if run.price is not None and run.created_at is not None and run.pod_id is not None:
            cost = run.price * (ended - run.created_at) / 3600.0
        if not deleted:
            message += (f"; the deletion of {run.pod_id or run.name} is not confirmed: "
                        "run `multireward-grpo runpod cleanup`")
        return RunResult(status=status, message=self._redact(message), return_code=code, elapsed_s=ended - run.start,
                         estimated_cost_usd=cost, cost_per_hour_usd=run.price, results_path=results,
                         cap_hit=run.cap_hit, pod_id=run.pod_id, gpu_type=run.gpu_type, pod_deleted=deleted)


def _existing_parent(path: Path) -> Path:
    parent = path.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent
