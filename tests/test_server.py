"""The local server over real HTTP, serving the real API function, the demo against it, and the commands as a
newcomer runs them: every ordinary mistake is one line, never a traceback."""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import redis

from local import demo
from local.lambda_harness import ROOT
from local.redis_server import RedisServer, free_port
from local.server import make_server, serving


@pytest.fixture
def base_url(redis_server, redis_client, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    with serving(make_server("127.0.0.1", 0)) as url:
        yield url


def send(url: str, method: str = "GET", body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_routes_over_http(base_url):
    status, headers, body = send(
        f"{base_url}/rooms/discord%3A77/messages", "POST", {"role": "user", "content": "[Message ID: 1] hi"}
    )
    assert status == 201 and headers["Content-Type"] == "application/json" and headers["ETag"] == '"1"'
    assert json.loads(body)["messages"][-1] == {"role": "user", "content": "[Message ID: 1] hi"}
    status, _, body = send(f"{base_url}/rooms/discord:77/messages/1/reactions", "PUT", {"reactions": "👍 x1"})
    assert status == 200 and json.loads(body)["messages"][-1]["content"] == "[Message ID: 1] [Reactions: 👍 x1] hi"
    status, _, body = send(f"{base_url}/rooms/discord:77")
    assert status == 200 and json.loads(body)["version"] == 2
    status, _, body = send(f"{base_url}/rooms/discord:77/messages", "POST", None)
    assert status == 400 and json.loads(body)["error"] == "invalid_request"
    status, _, body = send(f"{base_url}/rooms/discord:77", "DELETE", None, {"If-Match": '"2"'})
    assert (status, body) == (204, b"")


def test_concurrent_requests_are_served(base_url):
    results = []

    def append(number: int):
        results.append(
            send(
                f"{base_url}/rooms/discord:88/messages",
                "POST",
                {"role": "user", "content": f"[Message ID: {number}] n"},
            )[0]
        )

    threads = [threading.Thread(target=append, args=(number,)) for number in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [201] * 20
    status, _, body = send(f"{base_url}/rooms/discord:88")
    assert json.loads(body)["message_count"] == 20 and json.loads(body)["version"] == 20


def test_demo_plays_a_conversation(base_url, capsys):
    rendered = demo.play(base_url)
    messages = rendered["messages"]
    assert messages[0]["role"] == "system"
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in messages[1:]]
    assert any("[Reactions: " in text for text in texts) and any("[deleted at " in text for text in texts)
    assert any(isinstance(m["content"], list) and m["content"][-1]["type"] == "image_url" for m in messages[1:])
    calling = next(m for m in messages if m.get("tool_calls"))
    assert messages[messages.index(calling) + 1] == {
        "role": "tool",
        "tool_call_id": calling["tool_calls"][0]["id"],
        "content": '["Miso", "Smokey", "Ash"]',
    }
    out = capsys.readouterr().out
    assert "GET" in out and "max_tokens=600: ['system', 'assistant', 'tool'], " in out and "truncated: True" in out
    assert out.count("stored 2, duplicates 0, dropped 0") == 2  # two pages of older history
    assert "Older messages were small talk" in messages[0]["content"]  # the compaction's summary
    assert "(older message" not in json.dumps(messages)  # compacted away
    assert "grey cat" in texts[0] and "PUT    /rooms/" in out and "/limit -> 200" in out  # the edit, the limit


# --- the commands, as a newcomer runs them ---------------------------------------------------


def start(tmp_path, module: str, *args: str, **env: str) -> subprocess.Popen:
    """python -m module in its own session (so a Ctrl-C can reach its whole group), temporary files in tmp_path."""
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "TMPDIR": str(tmp_path), **env}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run(tmp_path, module: str, *args: str, **env: str) -> tuple[int, str, str]:
    process = start(tmp_path, module, *args, **env)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def ctrl_c_until_exit(process: subprocess.Popen) -> tuple[str, str]:
    """Press Ctrl-C again and again, as an impatient user does, until the process is gone."""
    for _ in range(3000):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, signal.SIGINT)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    return process.communicate(timeout=30)


def wait_for(condition) -> None:
    for _ in range(3000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met")


def test_serve_on_a_busy_port_is_one_line_naming_the_port_and_the_option(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, out, err = run(tmp_path, "local.server", "--port", str(port))
    assert status == 1 and out == ""
    assert err == f"./dev serve: port {port} on 127.0.0.1 is in use; pick another with --port, e.g. --port {port + 1}\n"
    assert list(tmp_path.iterdir()) == []  # no Redis was started for nothing


@pytest.mark.parametrize(
    ("variable", "value"),
    [("KEY_PREFIX", "a{b}"), ("REDIS_URL", "localhost:6399"), ("MAX_HISTORY", "abc")],
)
def test_a_malformed_setting_is_one_line_naming_the_variable(tmp_path, variable, value):
    status, out, err = run(tmp_path, "local.server", "--port", "0", **{variable: value})
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"./dev serve: {variable} ") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # the Redis it started is gone with its directory


def test_serve_warns_when_no_redis_answers_and_serves_503_until_one_does(tmp_path):
    port = free_port()
    process = start(tmp_path, "local.server", "--port", "0", REDIS_URL=f"redis://127.0.0.1:{port}/0")
    serving_line = process.stdout.readline()
    url = re.match(r"Serving (http://\S+) ", serving_line).group(1)
    status, _, body = send(f"{url}/rooms/r1")
    assert (status, json.loads(body)["error"]) == (503, "redis_unavailable")
    with RedisServer(port=port):
        status, _, _ = send(f"{url}/rooms/r1")
        assert status == 200
        _, err = ctrl_c_until_exit(process)
    assert err.startswith(f"warning: no Redis answers at redis://127.0.0.1:{port}/0 (")
    assert "the API answers 503 until it does" in err.splitlines()[0] and "Traceback" not in err


def test_ctrl_c_twice_stops_without_a_traceback_and_leaves_no_temporary_directory(tmp_path):
    process = start(tmp_path, "local.server", "--port", "0")
    serving_line = process.stdout.readline()
    redis_url = re.search(r"\(Redis (redis://\S+)\)", serving_line).group(1)
    assert [path.name.startswith("redis-local-") for path in tmp_path.iterdir()] == [True]
    out, err = ctrl_c_until_exit(process)
    assert process.returncode == 0 and err.endswith("Stopped.\n")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()


def test_demo_starts_its_own_api_and_cleans_up(tmp_path):
    status, out, err = run(tmp_path, "local.demo")
    assert status == 0, err
    assert out.startswith("Room demo:") and '"role": "system"' in out
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_the_demo_leaves_no_temporary_directory(tmp_path):
    process = start(tmp_path, "local.demo")
    wait_for(lambda: any(tmp_path.glob("redis-local-*/redis-1.log")))  # its own Redis is starting
    out, err = ctrl_c_until_exit(process)
    assert process.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert list(tmp_path.iterdir()) == []


def test_demo_help_says_it_starts_its_own_api_and_starts_nothing(tmp_path):
    status, out, err = run(tmp_path, "local.demo", "--help")
    assert (status, err) == (0, "")
    assert out.startswith("usage: ./dev demo") and "starts a local API of its own" in out and "--url" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["help"], ["--help"], ["-h"]])
def test_dev_help_prints_usage(args):
    result = subprocess.run([ROOT / "dev", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: ./dev COMMAND")
    assert {"serve", "demo", "test", "bench", "lint"} <= {line.split()[0] for line in result.stdout.splitlines()[1:]}


def test_dev_unknown_command_prints_usage_and_fails():
    result = subprocess.run([ROOT / "dev", "frobnicate"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: ./dev COMMAND") and "unknown command: frobnicate" in result.stderr


def bash_block(document: str, heading: str) -> str:
    """The first ```bash block after `heading` in a Markdown file of the repository."""
    text = (ROOT / document).read_text(encoding="utf-8")
    return re.search(r"```bash\n(.*?)```", text[text.index(heading) :], re.S).group(1)


def matches(expected, actual) -> bool:
    """A documented JSON answer, where "…" stands for any value or the rest of a string."""
    if isinstance(expected, str) and "…" in expected:
        return isinstance(actual, str) and actual.startswith(expected.split("…")[0])
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(value, actual[key]) for key, value in expected.items())
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(map(matches, expected, actual))
    return expected == actual


def test_the_readme_curl_examples_work_as_written(base_url):
    lines = bash_block("README.md", "## Using the API").replace("\\\n", " ").splitlines()
    answers = []
    for number, line in enumerate(lines):
        if not line.startswith("curl "):
            continue
        command = line.replace("localhost:3000", base_url.removeprefix("http://"), 1)
        run = subprocess.run(
            [*shlex.split(command), "-s", "--noproxy", "*", "-w", "\n%{http_code}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        body, status = run.stdout.rsplit("\n", 1)
        answers.append(int(status))
        documented = lines[number + 1] if number + 1 < len(lines) else ""
        if documented.startswith("# "):  # "# 201 {…}": the answer the README shows
            expected_status, expected_body = documented[2:].split(" ", 1)
            assert int(status) == int(expected_status)
            assert matches(json.loads(expected_body), json.loads(body)), body
    assert len(answers) >= 5 and all(200 <= status < 300 for status in answers), answers


def test_the_api_reference_quick_start_works_as_written(base_url):
    script = bash_block("docs/API.md", "## Quick start").replace("http://127.0.0.1:3000", base_url, 1)
    report = "curl() { command curl -s -o /dev/null -w '%{http_code}\\n' --noproxy '*' \"$@\"; }\n"
    run = subprocess.run(["bash", "-c", report + script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    # append, its retry, the conditional edit, reactions, delete, the list, the list still current, the state
    assert run.stdout.split() == ["201", "200", "200", "200", "200", "200", "304", "200"]


def test_serve_listens_on_port_3000_unless_told_otherwise():
    """The README's first command: ./dev serve is http://127.0.0.1:3000."""
    from local import server

    assert inspect.signature(server.running_api).parameters["port"].default == 3000
    assert (
        "default: 3000"
        in subprocess.run(
            [sys.executable, "-m", "local.server", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    )
