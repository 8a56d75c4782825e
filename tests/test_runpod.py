"""The RunPod runner against a fake RunPod API (127.0.0.1) and a real OpenSSH server.

After every fault the tests assert the three promises of ``run_command``:
no pod is left undeleted in the fake API, the API key appears in no output,
log or exception text, and the returned result says what happened.
Commands really run over SSH (``sshd_fixture``): the environment export and
the results copy are real; only the pod is the local machine.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multireward_grpo import runpod as rp
from multireward_grpo.cli import main
from runpod_fake import KEY, PRICE, FakeRunPod
from sshd_fixture import Sshd

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(backoff_s=0.01, max_backoff_s=0.05, poll_interval_s=0.05, delete_timeout_s=5.0, request_timeout_s=5.0)
SECRET = "hf_secret_token_value_42"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with Sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def fake():
    with FakeRunPod() as server:
        yield server


@pytest.fixture
def pod_fake(sshd):
    """A fake API whose pods are reachable over SSH at the test's sshd."""
    with FakeRunPod(ssh_endpoint=("127.0.0.1", sshd.port), authorized_keys=sshd.authorized_keys) as server:
        yield server


@pytest.fixture
def make_client(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("RUNPOD_API_KEY", "RUNPOD_API_URL", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    def make(server, **options):
        settings = dict(api_key=KEY, base_url=server.url, state_file=tmp_path / "pods.json",
                        ssh_user=getpass.getuser(), verbose=True, **FAST)
        settings.update(options)
        return rp.RunPodClient(**settings)

    return make


@pytest.fixture
def leaks(capfd, caplog):
    """Call at the end of a test: asserts the key is in no captured output, log or given text."""
    caplog.set_level(logging.DEBUG, logger="multireward_grpo.runpod")

    def check(*texts):
        out, err = capfd.readouterr()
        for text in (out, err, caplog.text, *map(repr, texts), *map(str, texts)):
            assert KEY not in text
        return out + err

    return check


def _settled(fake: FakeRunPod, result: rp.RunResult) -> None:
    assert fake.live_pods() == [], f"pods left running: {fake.live_pods()}"
    assert result.pod_deleted is True


# --------------------------------------------------------------------------- key, parsing, validation


def test_key_comes_from_argument_then_environment_then_dotenv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    (tmp_path / ".env").write_text("# secrets\nOTHER=1\nexport RUNPOD_API_KEY='from-dotenv-123'  \n")
    assert rp.resolve_api_key() == "from-dotenv-123"
    monkeypatch.setenv("RUNPOD_API_KEY", "from-environment-123")
    assert rp.resolve_api_key() == "from-environment-123"
    assert rp.resolve_api_key("from-argument-123") == "from-argument-123"
    (tmp_path / ".env").write_text('RUNPOD_API_KEY="quoted value 123"\n')
    monkeypatch.delenv("RUNPOD_API_KEY")
    assert rp.resolve_api_key() == "quoted value 123"


def test_missing_key_names_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"api_key=.*RUNPOD_API_KEY environment variable.*\.env"):
        rp.RunPodClient(state_file=tmp_path / "pods.json")
    with pytest.raises(TypeError, match="api_key must be a string"):
        rp.RunPodClient(api_key=123, state_file=tmp_path / "pods.json")


def test_even_a_short_key_is_redacted():
    redact = rp._Redactor()
    redact.add("abc", always=True)
    redact.add("xy")  # other values that short are left alone
    assert redact("key abc, value xy") == "key ***, value xy"


def test_repr_hides_the_key_and_base_url_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_URL", "http://127.0.0.1:9/v2/")
    client = rp.RunPodClient(KEY, state_file=tmp_path / "pods.json")
    assert client.base_url == "http://127.0.0.1:9/v2"
    assert KEY not in repr(client) and "***" in repr(client) and KEY not in str(vars(client).get("_redact"))
    monkeypatch.delenv("RUNPOD_API_URL")
    assert rp.RunPodClient(KEY, state_file=tmp_path / "p.json").base_url == rp.DEFAULT_BASE_URL == "https://api.runpod.io/v2"
    with pytest.raises(ValueError, match="must start with https://"):
        rp.RunPodClient(KEY, "ftp://example.org", state_file=tmp_path / "p.json")
    with pytest.raises(ValueError, match="must use https:// unless it is on this machine"):
        rp.RunPodClient(KEY, "http://example.org/v2", state_file=tmp_path / "p.json")


@pytest.mark.parametrize("pod, endpoint", [
    ({"status": "RUNNING", "ssh": {"host": "1.2.3.4", "port": "2201"}}, ("1.2.3.4", 2201)),
    ({"desiredStatus": "RUNNING", "publicIp": "5.6.7.8", "portMappings": {"22": 40022}}, ("5.6.7.8", 40022)),
    ({"runtime": {"ports": [{"privatePort": 8888, "ip": "9.9.9.9", "publicPort": 1},
                            {"privatePort": 22, "ip": "9.9.9.9", "publicPort": 30022, "isIpPublic": True}]}},
     ("9.9.9.9", 30022)),
    ({"runtime": {"ports": [{"privatePort": 22, "ip": "10.0.0.2", "publicPort": 22, "isIpPublic": False}]}}, None),
    ({"publicIp": "5.6.7.8", "portMappings": {}}, None),
    ({"publicIp": "", "portMappings": {"22": 1}}, None),
])
def test_ssh_endpoint_reads_every_known_shape(pod, endpoint):
    assert rp.ssh_endpoint(pod) == endpoint


def test_status_and_price_parsing():
    assert rp.pod_status({"status": "running"}) == "RUNNING"
    assert rp.pod_status({"desiredStatus": "EXITED"}) == "EXITED"
    assert rp.pod_status({}) == "UNKNOWN"
    assert rp.hourly_price({"adjustedCostPerHr": 0.69, "costPerHr": "0.74"}) == 0.69
    assert rp.hourly_price({"costPerHr": "0.74"}) == 0.74
    assert rp.hourly_price({"cost": 0.25}) == 0.25
    assert rp.hourly_price({"costPerHr": "n/a"}) is None and rp.hourly_price({"cost": float("nan")}) is None


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(cmd=""), ValueError, "cmd must be a non-empty"),
    (dict(wall_clock_cap=0), ValueError, "wall_clock_cap"),
    (dict(gpu_types=[]), ValueError, "gpu_types must be a non-empty"),
    (dict(env={"1BAD": "x"}), ValueError, "environment variable names"),
    (dict(env={"GOOD": 1}), TypeError, "must be a string"),
    (dict(env="A=1"), TypeError, "env must be a mapping"),
    (dict(cloud_type="secured"), ValueError, "unknown cloud_type 'SECURED'"),
    (dict(results_dir="out", wall_clock_cap=10, results_reserve_s=10), ValueError, "less than wall_clock_cap"),
])
def test_bad_arguments_are_refused_before_anything_is_rented(fake, make_client, leaks, kwargs, error, match):
    client = make_client(fake)
    arguments = dict(cmd="true")
    arguments.update(kwargs)
    with pytest.raises(error, match=match) as raised:
        client.run_command(**arguments)
    assert fake.requests == []
    leaks(raised.value)


def test_existing_local_results_dir_is_refused(fake, make_client, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="exists already"):
        make_client(fake).run_command("true", results_dir="out", local_results_dir=tmp_path / "taken")
    assert fake.requests == []


def test_transient_errors_are_retried_with_exponential_backoff(fake, make_client, leaks):
    sleeps = []
    client = make_client(fake, backoff_s=0.5, max_backoff_s=1.5, sleep=sleeps.append)
    pod = fake._create({"name": "x", "gpu": {"id": "A"}})
    fake.get_faults = [500, 429, "malformed", "drop"]
    assert client.get_pod(pod["id"])["id"] == pod["id"]
    assert sleeps == [0.5, 1.0, 1.5, 1.5]  # 0.5 * 2**k, capped at max_backoff_s
    fake.get_faults = [503] * 3
    with pytest.raises(rp.RunPodError, match=r"HTTP 503.*after 3 tries") as raised:
        make_client(fake, max_attempts=3, sleep=lambda s: None).get_pod(pod["id"])
    assert raised.value.status == 503
    assert client.get_pod("nosuchpod") is None  # 404 is an answer, not a failure
    leaks(raised.value)


def test_retry_after_lengthens_the_backoff_up_to_its_maximum(fake, make_client):
    sleeps = []
    client = make_client(fake, backoff_s=0.5, max_backoff_s=3.0, sleep=sleeps.append)
    pod = fake._create({"name": "x", "gpu": {"id": "A"}})
    fake.retry_after, fake.get_faults = 2, [429, 500]
    client.get_pod(pod["id"])
    fake.retry_after, fake.get_faults = 60, [429]
    client.get_pod(pod["id"])
    assert sleeps == [2.0, 1.0, 3.0]  # Retry-After 2 > 0.5; then 0.5 * 2; then 60 capped at 3


# --------------------------------------------------------------------------- the command path, for real over SSH


def test_command_runs_over_ssh_with_env_exported_and_results_copied(pod_fake, sshd, make_client, tmp_path, leaks):
    client = make_client(pod_fake)
    cmd = 'mkdir -p out/sub && printf "%s|%s" "$HF_TOKEN" "$MODE" > out/sub/env.txt && pwd > out/where.txt'
    result = client.run_command(cmd, wall_clock_cap=60, env={"HF_TOKEN": SECRET, "MODE": "it's na"},
                                results_dir="out", local_results_dir=tmp_path / "results")
    assert result.status == "succeeded" and result.ok and result.return_code == 0 and not result.cap_hit
    assert result.gpu_type == rp.DEFAULT_GPU_TYPES[0] and result.pod_id in pod_fake.deleted
    assert (tmp_path / "results" / "sub" / "env.txt").read_text() == f"{SECRET}|it's na"
    assert (tmp_path / "results" / "where.txt").read_text().strip() == str(sshd.home)
    assert result.results_path == tmp_path / "results"
    # Cost: the reported price times the billed time, which is within the call's own duration.
    assert result.cost_per_hour_usd == PRICE
    assert 0 < result.estimated_cost_usd <= PRICE * result.elapsed_s / 3600
    # Only the public key travels in the pod's configuration; the secret never rides a command line.
    (body,) = pod_fake.bodies
    assert body["env"].keys() == {"PUBLIC_KEY"} and body["env"]["PUBLIC_KEY"].startswith("ssh-ed25519 ")
    assert body["ports"] == ["22/tcp"] and body["gpu"] == {"id": rp.DEFAULT_GPU_TYPES[0], "count": 1}
    assert SECRET not in sshd.commands.read_text()
    assert SECRET not in result.message and KEY not in json.dumps(body)
    _settled(pod_fake, result)
    assert client._record.entries() == {}
    output = leaks(result)
    assert SECRET not in output


def test_failed_command_returns_its_exit_code_and_still_copies_results(pod_fake, make_client, tmp_path, leaks):
    result = make_client(pod_fake).run_command("mkdir -p out && echo partial > out/log.txt && exit 3",
                                               wall_clock_cap=60, results_dir="out",
                                               local_results_dir=tmp_path / "r")
    assert (result.status, result.return_code, result.cap_hit) == ("command_failed", 3, False)
    assert "exited 3" in result.message and (tmp_path / "r" / "log.txt").read_text() == "partial\n"
    _settled(pod_fake, result)
    leaks(result)


def test_missing_results_folder_is_reported_not_raised(pod_fake, make_client, leaks):
    result = make_client(pod_fake).run_command("true", wall_clock_cap=60, results_dir="never_made")
    assert result.status == "succeeded" and result.results_path is None
    assert "could not copy never_made back" in leaks(result)
    _settled(pod_fake, result)


def test_gpu_types_fall_back_in_order(pod_fake, make_client, leaks):
    pod_fake.no_capacity = {"GPU-A", "GPU-B"}
    result = make_client(pod_fake).run_command("true", wall_clock_cap=60, gpu_types=["GPU-A", "GPU-B", "GPU-C"])
    assert result.ok and result.gpu_type == "GPU-C"
    assert [b["gpu"]["id"] for b in pod_fake.bodies] == ["GPU-A", "GPU-B", "GPU-C"]
    _settled(pod_fake, result)
    leaks(result)


def test_500_and_429_on_create_are_retried(pod_fake, make_client, leaks):
    pod_fake.create_faults = [500, 429]
    result = make_client(pod_fake).run_command("true", wall_clock_cap=60)
    assert result.ok and pod_fake.count("POST") == 3 and len(pod_fake.pods) == 1
    _settled(pod_fake, result)
    leaks(result)


@pytest.mark.parametrize("fault", ["drop", "malformed"])
def test_a_creation_whose_answer_is_lost_leaves_no_pod(pod_fake, make_client, leaks, fault):
    """The first POST creates a pod the client never hears of; it is found by name and deleted."""
    pod_fake.create_faults = [fault]
    pod_fake.get_faults = ["malformed", "drop", 502]
    result = make_client(pod_fake).run_command("true", wall_clock_cap=60)
    assert result.ok and len(pod_fake.pods) == 2
    assert pod_fake.deleted == set(pod_fake.pods)
    _settled(pod_fake, result)
    leaks(result)


def test_create_failing_for_good_is_a_result(fake, make_client, leaks):
    fake.create_faults = [500] * 4
    result = make_client(fake, max_attempts=2).run_command("true", wall_clock_cap=60, gpu_types=["GPU-A", "GPU-B"])
    assert (result.status, result.pod_id, result.return_code, result.estimated_cost_usd) == ("create_failed", None, None, None)
    assert "GPU-B: POST /pods: HTTP 500" in result.message
    assert fake.requests[-1] == ("GET", "/pods")  # a 500 may hide a created pod: looked up by name
    _settled(fake, result)
    leaks(result)


def test_wrong_key_stops_at_the_first_refusal_and_is_never_shown(fake, make_client, leaks):
    wrong = "rpa_WRONGKEY_abcdefghijklmnop"
    result = make_client(fake, api_key=wrong).run_command("true", wall_clock_cap=60, gpu_types=["GPU-A", "GPU-B"])
    assert result.status == "create_failed" and "HTTP 401" in result.message and "check the API key" in result.message
    assert fake.count("POST") == 1 and fake.requests == [("POST", "/pods")] and result.pod_deleted
    output = leaks(result)
    assert wrong not in output + repr(result)


def test_an_error_page_quoting_the_key_is_redacted(fake, make_client, leaks):
    fake.create_faults = ["echo"]
    result = make_client(fake).run_command("true", wall_clock_cap=60, gpu_types=["GPU-A"])
    assert result.status == "create_failed" and "Bearer ***" in result.message
    leaks(result)


def test_ctrl_c_during_a_lost_creation_still_deletes_the_pod(fake, make_client, leaks):
    """The POST made a pod and its answer was lost; Ctrl-C comes during the retry's backoff."""
    fake.create_faults = ["drop"]

    def interrupted(seconds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_client(fake, sleep=interrupted).run_command("true", wall_clock_cap=60)
    assert len(fake.pods) == 1 and fake.live_pods() == []
    assert "interrupted" in leaks()


def test_pod_that_never_runs_is_deleted_at_the_cap(fake, make_client, leaks):
    fake.never_running = True
    result = make_client(fake).run_command("true", wall_clock_cap=1.0)
    assert (result.status, result.cap_hit, result.return_code) == ("not_running", True, None)
    assert "not ready within the cap (last status PROVISIONING)" in result.message
    assert 1.0 <= result.elapsed_s < 6.0
    billed_s = result.estimated_cost_usd * 3600 / PRICE  # creation request -> confirmed deletion
    assert result.elapsed_s - 2.0 < billed_s <= result.elapsed_s  # the 2 s: key generation before the request
    _settled(fake, result)
    leaks(result)


def test_deletion_failing_twice_is_retried_until_confirmed(fake, make_client, leaks):
    fake.never_running, fake.delete_failures = True, 2
    result = make_client(fake).run_command("true", wall_clock_cap=0.3)
    assert fake.count("DELETE") == 3 and result.pod_deleted
    _settled(fake, result)
    leaks(result)


def test_unconfirmed_deletion_stays_recorded_until_cleanup(fake, make_client, leaks):
    fake.never_running, fake.delete_failures = True, 10_000
    client = make_client(fake, delete_timeout_s=0.3)
    result = client.run_command("true", wall_clock_cap=0.3)
    assert result.pod_deleted is False and "runpod cleanup" in result.message
    assert fake.live_pods() == [result.pod_id]
    assert [e["pod_id"] for e in client._record.entries().values()] == [result.pod_id]
    assert client.cleanup() == []  # its creator (this process) is alive
    fake.delete_failures = 0
    assert len(client.cleanup(include_live=True)) == 1
    assert fake.live_pods() == [] and client._record.entries() == {}
    leaks(result)


def test_command_past_the_cap_is_stopped_and_reported(pod_fake, make_client, leaks):
    started = time.monotonic()
    result = make_client(pod_fake).run_command("sleep 30", wall_clock_cap=5)
    assert (result.status, result.cap_hit, result.return_code) == ("cap_hit", True, None)
    assert 5 <= result.elapsed_s < 12 and time.monotonic() - started < 12
    _settled(pod_fake, result)
    leaks(result)


# --------------------------------------------------------------------------- dying processes


def _child_env(fake: FakeRunPod, tmp_path: Path) -> dict:
    env = dict(os.environ, RUNPOD_API_KEY=KEY, RUNPOD_API_URL=fake.url, XDG_CACHE_HOME=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    return env


def _wait_for(condition, timeout_s: float = 30.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_pods_of_a_killed_process_are_reaped_at_the_next_start(fake, tmp_path, leaks):
    fake.never_running = True
    script = ("from multireward_grpo.runpod import RunPodClient\n"
              "RunPodClient(poll_interval_s=0.05).run_command('true', wall_clock_cap=600)\n")
    child = subprocess.Popen([sys.executable, "-c", script], env=_child_env(fake, tmp_path), cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = tmp_path / "cache" / "multireward-grpo" / "runpod_pods.json"
    _wait_for(lambda: fake.count("GET", "/pods/") >= 2)
    child.send_signal(signal.SIGKILL)
    out, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    (entry,) = json.loads(state.read_text())["pods"].values()
    assert fake.live_pods() == [entry["pod_id"]] and entry["pid"] == child.pid
    client = rp.RunPodClient(KEY, fake.url, state_file=state, **FAST)  # the next start reaps
    assert fake.live_pods() == [] and json.loads(state.read_text())["pods"] == {}
    assert KEY not in (out + err).decode()
    leaks(repr(client))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_the_cli_deletes_the_pod(fake, tmp_path, sig):
    fake.never_running = True
    child = subprocess.Popen([sys.executable, "-m", "multireward_grpo", "runpod", "run", "sleep 60", "--cap", "600"],
                             env=_child_env(fake, tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: fake.count("GET", "/pods/") >= 1)
    child.send_signal(sig)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err.decode()
    assert fake.pods and fake.live_pods() == []
    assert "interrupted" in err.decode() and KEY not in (out + err).decode()


# --------------------------------------------------------------------------- the README's snippet and the CLI


def _readme_runpod_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    (block,) = [b for b in blocks if "RunPodClient" in b]
    return block


def test_readme_snippet_runs_as_written(pod_fake, sshd, tmp_path, monkeypatch, leaks):
    """The seed snippet, unchanged, with the key in ``.env``.

    The pod is the local machine, so ``pip`` and ``multireward-grpo`` there are
    shims (first on the pod's PATH) that record their arguments: installing
    and training for real is not what this test is about; the command line
    reaching the pod's shell, the token export and the exit code are.
    """
    calls = tmp_path / "calls.txt"
    for tool in ("pip", "multireward-grpo"):
        shim = sshd.bin / tool
        shim.write_text(f'#!/bin/sh\necho "{tool} $* token=$HF_TOKEN" >> "{calls}"\n')
        shim.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"RUNPOD_API_KEY={KEY}\n")
    for name, value in (("RUNPOD_API_URL", pod_fake.url), ("XDG_CACHE_HOME", str(tmp_path / "cache")),
                        ("RUNPOD_SSH_USER", getpass.getuser()), ("HF_TOKEN", SECRET)):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    results = []
    original = rp.RunPodClient.run_command
    monkeypatch.setattr(rp.RunPodClient, "run_command", lambda self, *a, **k: results.append(original(self, *a, **k)))
    monkeypatch.setattr(rp.RunPodClient, "__init__", _fast_init(rp.RunPodClient.__init__))
    exec(compile(_readme_runpod_block(), "README.md", "exec"), {})
    (result,) = results
    assert result.ok and result.return_code == 0, result.message
    assert calls.read_text().splitlines() == [f"pip install multireward-grpo[llm] token={SECRET}",
                                              f"multireward-grpo train --mode na token={SECRET}"]
    _settled(pod_fake, result)
    leaks(result)


def _fast_init(init):
    def fast(self, *args, **kwargs):
        init(self, *args, **{**FAST, **kwargs})

    return fast


def test_cli_run_reports_the_result(pod_fake, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.setenv("RUNPOD_API_URL", pod_fake.url)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("RUNPOD_SSH_USER", getpass.getuser())
    monkeypatch.setattr(rp.RunPodClient, "__init__", _fast_init(rp.RunPodClient.__init__))
    code = main(["runpod", "run", "mkdir -p o && echo $GREETING > o/g.txt && exit 4", "--cap", "60",
                 "--gpu-type", "GPU-X", "--gpu-type", "GPU-Y", "--env", "GREETING=hi there",
                 "--results-dir", "o", "--json"])
    assert code == 4
    payload = json.loads(capsys.readouterr().out)
    assert payload["status"] == "command_failed" and payload["return_code"] == 4 and payload["gpu_type"] == "GPU-X"
    assert (Path(payload["results_path"]) / "g.txt").read_text() == "hi there\n"
    assert pod_fake.live_pods() == []


@pytest.mark.parametrize("argv, match", [
    (["runpod", "run", "true", "--env", "NOEQUALS"], "expected NAME=VALUE"),
    (["runpod", "run", "true", "--cap", "-5"], "--cap"),
    (["runpod", "run", "true", "--cloud", "MOON"], "invalid choice"),
    (["runpod", "run", "   "], "cmd must be a non-empty"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, match, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.setenv("RUNPOD_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as exited:
        sys.exit(main(argv))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(match, err) and KEY not in err


def test_cli_missing_key_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    assert main(["runpod", "cleanup"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "RUNPOD_API_KEY" in err


def test_cli_cleanup_deletes_recorded_pods(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.setenv("RUNPOD_API_URL", fake.url)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pod = fake._create({"name": "multireward-grpo-abc", "gpu": {"id": "A"}})
    record = rp._PodRecord(rp.default_state_file())
    record.put("multireward-grpo-abc", pod_id=pod["id"], pid=os.getpid(), host=socket.gethostname(), base_url=fake.url)
    assert main(["runpod", "cleanup"]) == 0  # its creator (this process) is alive: left alone
    assert fake.live_pods() == [pod["id"]]
    assert main(["runpod", "cleanup", "--all"]) == 0
    assert fake.live_pods() == [] and record.entries() == {}
    assert "deleted 1" in capsys.readouterr().out


def test_runpod_without_an_action_prints_help_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    assert main(["runpod"]) == 2
    err = capsys.readouterr().err
    assert "run" in err and "cleanup" in err


def test_runpod_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["runpod", "run", "--help"])
    text = capsys.readouterr().out
    for flag in ("--cap", "--gpu-type", "--image", "--env", "--results-dir", "--local-results-dir", "--workdir",
                 "--cloud", "--json"):
        assert flag in text
