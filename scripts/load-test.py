#!/usr/bin/env python3
"""Load test of an OpenAI-compatible server (ferro serve, llama-server): aggregate generated
tokens per second and time to first token for 1, 4 and 16 concurrent streaming chats.

Bounded and loopback only: it refuses any host but 127.0.0.1/localhost/::1, each level sends a
fixed number of requests with a fixed max_tokens, and every request has a timeout.
Standard library only.

    scripts/load-test.py --url http://127.0.0.1:8080 [--url http://127.0.0.1:8081 ...]
        [--levels 1,4,16] [--max-tokens 64] [--requests-per-stream 2] [--model NAME]

Start the servers with the same parallelism, e.g. `ferro serve -n 16` and
`llama-server -m MODEL -np 16 -c $((16*1024))`. Prints one table row per server and level.
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
PROMPTS = [
    "Write a short story about a robot learning to paint.",
    "Explain how a bicycle works to a child.",
    "List some facts about the Moon.",
    "Describe a walk through a forest in autumn.",
    "What makes a good cup of tea?",
    "Tell me about the history of the printing press.",
    "Give advice for someone learning to cook.",
    "Describe the water cycle.",
]


def stream_chat(host, port, model, prompt, max_tokens, timeout):
    """One streaming chat; returns (time to first token, tokens, total time)."""
    body = json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        # llama-server: do not stop early at EOS so every server makes the same work.
        "ignore_eos": True,
    })
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    ttft, chunks, usage = None, 0, None
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        ev = json.loads(data)
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev.get("choices") or []:
            if (ch.get("delta") or {}).get("content"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
    conn.close()
    tokens = usage["completion_tokens"] if usage else chunks
    return ttft if ttft is not None else time.perf_counter() - t0, tokens, time.perf_counter() - t0


def run_level(url, model, streams, per_stream, max_tokens, timeout):
    u = urllib.parse.urlparse(url)
    results, errors = [], []
    lock = threading.Lock()

    def worker(k):
        for j in range(per_stream):
            prompt = PROMPTS[(k + j) % len(PROMPTS)] + f" (request {k}.{j})"
            try:
                r = stream_chat(u.hostname, u.port or 80, model, prompt, max_tokens, timeout)
                with lock:
                    results.append(r)
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(str(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r[1] for r in results)
    ttfts = sorted(r[0] for r in results)
    return {
        "streams": streams,
        "requests": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "tokens": tokens,
        "tok_per_s": tokens / wall if wall > 0 else 0.0,
        "ttft_p50_ms": 1000 * statistics.median(ttfts) if ttfts else float("nan"),
        "ttft_max_ms": 1000 * ttfts[-1] if ttfts else float("nan"),
        "wall_s": wall,
    }


def model_of(url, timeout):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    conn.request("GET", "/v1/models")
    data = json.loads(conn.getresponse().read())
    conn.close()
    return data["data"][0]["id"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", action="append", required=True, help="server base URL (repeatable)")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--requests-per-stream", type=int, default=2)
    ap.add_argument("--model", default=None, help="model name to send (default: the server's first)")
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",")]
    if any(n < 1 or n > 64 for n in levels) or not 1 <= a.max_tokens <= 1024 or not 1 <= a.requests_per_stream <= 16:
        sys.exit("bounds: 1..64 streams, 1..1024 max tokens, 1..16 requests per stream")
    for url in a.url:
        host = urllib.parse.urlparse(url).hostname
        if host not in LOOPBACK:
            sys.exit(f"refusing {url}: this script only targets loopback servers")
    print(f"| server | streams | requests | errors | tokens | tok/s (aggregate) | x single | TTFT p50 ms | TTFT max ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for url in a.url:
        model = a.model or model_of(url, a.timeout)
        base = None
        for n in levels:
            r = run_level(url, model, n, a.requests_per_stream, a.max_tokens, a.timeout)
            if base is None:
                base = r["tok_per_s"] or 1.0
            print(
                f"| {url} | {n} | {r['requests']} | {r['errors']} | {r['tokens']} | {r['tok_per_s']:.1f} | "
                f"{r['tok_per_s'] / base:.2f} | {r['ttft_p50_ms']:.0f} | {r['ttft_max_ms']:.0f} |",
                flush=True,
            )
            if r["errors"]:
                print(f"  first error: {r['first_error']}", file=sys.stderr)


if __name__ == "__main__":
    main()
