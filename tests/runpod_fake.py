"""A fake RunPod REST API on 127.0.0.1, with faults injected on demand.

It implements what :class:`multireward_grpo.runpod.RunPodClient` calls:
``POST /pods``, ``GET /pods``, ``GET /pods/{id}``, ``DELETE /pods/{id}``,
all under the bearer key :data:`KEY`. A created pod is ``PROVISIONING`` for
``polls_until_running`` status polls, then ``RUNNING`` with its port 22
published at ``ssh_endpoint`` (a real sshd from ``sshd_fixture`` when a test
needs one). Like RunPod's images, a pod installs the ``PUBLIC_KEY`` it was
created with: ``authorized_keys`` (when set) receives it.

Faults (set the attributes before the client runs):

- ``create_faults``: one entry per POST, consumed in order: an HTTP status
  (500, 429, ...) answered without creating a pod; ``"drop"``: the pod is
  created and the connection closed before any answer; ``"malformed"``: the
  pod is created and the answer is truncated JSON.
  ``"echo"``: 400 with the request's Authorization header quoted in the body.
- ``no_capacity``: GPU type ids answered 400 "no capacity".
- ``get_faults``: the same kinds, one per ``GET /pods/{id}``.
- ``never_running``: pods stay ``PROVISIONING``.
- ``delete_failures``: the first N DELETEs answer 500.
- ``retry_after``: seconds sent as ``Retry-After`` with a 429.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

KEY = "rpa_TESTKEY_0123456789abcdefXYZ"
PRICE = 0.69  # USD per hour, reported as adjustedCostPerHr


class FakeRunPod:
    def __init__(self, *, ssh_endpoint: tuple[str, int] = ("127.0.0.1", 1), authorized_keys: Optional[Path] = None):
        self.ssh_endpoint = ssh_endpoint
        self.authorized_keys = authorized_keys
        self.create_faults: list = []
        self.get_faults: list = []
        self.no_capacity: set[str] = set()
        self.never_running = False
        self.polls_until_running = 1
        self.delete_failures = 0
        self.retry_after = None  # seconds sent in Retry-After with every 429
        self.pods: dict[str, dict] = {}
        self.deleted: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[dict] = []
        self.bad_auth = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeRunPod":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def live_pods(self) -> list[str]:
        """Pods created and not deleted: must be empty after every run."""
        with self._lock:
            return [pod_id for pod_id in self.pods if pod_id not in self.deleted]

    def count(self, method: str, prefix: str = "/pods") -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))

    # ------------------------------------------------------------------ behaviour

    def _create(self, body: dict) -> dict:
        pod_id = "pod" + uuid.uuid4().hex[:10]
        pod = {"id": pod_id, "name": body.get("name"), "image": body.get("image"), "status": "PROVISIONING",
               "gpu": dict(body.get("gpu") or {}), "adjustedCostPerHr": PRICE, "costPerHr": f"{PRICE + 0.05:.2f}",
               "ports": list(body.get("ports") or []), "env": dict(body.get("env") or {}), "polls": 0}
        public_key = pod["env"].get("PUBLIC_KEY")
        if self.authorized_keys is not None and public_key:
            with open(self.authorized_keys, "a") as fh:
                fh.write(public_key + "\n")
        with self._lock:
            self.pods[pod_id] = pod
        return pod

    def _view(self, pod: dict) -> dict:
        view = {k: v for k, v in pod.items() if k != "polls"}
        if pod["status"] == "RUNNING":
            host, port = self.ssh_endpoint
            view.update(publicIp=host, portMappings={"22": port})
        return view

    def _poll(self, pod: dict) -> dict:
        with self._lock:
            pod["polls"] += 1
            if not self.never_running and pod["polls"] > self.polls_until_running:
                pod["status"] = "RUNNING"
        return self._view(pod)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, status: int, payload=None, raw: Optional[bytes] = None):
                data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
                self.send_response(status)
                if status == 429 and fake.retry_after is not None:
                    self.send_header("Retry-After", str(fake.retry_after))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _drop(self):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _fault(self, fault, make) -> bool:
                """Apply a fault; ``make`` creates what a half-done request creates. True when handled."""
                if fault is None:
                    return False
                if isinstance(fault, int):
                    self._reply(fault, {"error": f"injected {fault}"})
                elif fault == "echo":  # an error page that quotes the request's credentials back
                    self._reply(400, {"error": f"bad request with {self.headers.get('Authorization')}"})
                elif fault == "drop":
                    make()
                    self._drop()
                elif fault == "malformed":
                    text = json.dumps(make())
                    self._reply(200, raw=text[: len(text) // 2].encode())
                return True

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {KEY}":
                    return True
                fake.bad_auth += 1
                self._reply(401, {"error": "invalid api key"})
                return False

            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_POST(self):
                fake.requests.append(("POST", self.path))
                body = self._body()
                if not self._authorized():
                    return None
                if self.path != "/pods":
                    return self._reply(404, {"error": "no such path"})
                fake.bodies.append(body)
                fault = fake.create_faults.pop(0) if fake.create_faults else None
                if self._fault(fault, lambda: fake._view(fake._create(body))):
                    return None
                if (body.get("gpu") or {}).get("id") in fake.no_capacity:
                    return self._reply(400, {"error": "There are no longer any instances available with the requested specifications."})
                self._reply(201, fake._view(fake._create(body)))

            def do_GET(self):
                fake.requests.append(("GET", self.path))
                if not self._authorized():
                    return None
                if self.path == "/pods":
                    with fake._lock:
                        pods = [fake._view(p) for i, p in fake.pods.items() if i not in fake.deleted]
                    return self._reply(200, {"pods": pods})
                pod = fake.pods.get(self.path.rsplit("/", 1)[-1])
                if pod is None or pod["id"] in fake.deleted:
                    return self._reply(404, {"error": "pod not found"})
                fault = fake.get_faults.pop(0) if fake.get_faults else None
                if self._fault(fault, lambda: fake._view(pod)):
                    return None
                self._reply(200, fake._poll(pod))

            def do_DELETE(self):
                fake.requests.append(("DELETE", self.path))
                if not self._authorized():
                    return None
                pod_id = self.path.rsplit("/", 1)[-1]
                if pod_id not in fake.pods or pod_id in fake.deleted:
                    return self._reply(404, {"error": "pod not found"})
                if fake.delete_failures > 0:
                    fake.delete_failures -= 1
                    return self._reply(500, {"error": "injected delete failure"})
                with fake._lock:
                    fake.deleted.add(pod_id)
                self._reply(204)

        return Handler
