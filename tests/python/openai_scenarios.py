"""Scenarios run by tests/tests/server_openai.rs against a running `ferro serve`, with the
official `openai` client unmodified. Usage: openai_scenarios.py BASE_URL MODEL SCENARIO...
Each scenario raises on failure; the script prints `ok <scenario>` for each that passed."""

import json
import sys

import openai

BASE, MODEL = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=BASE, api_key="sk-test", max_retries=0, timeout=120)
USER = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def models():
    ms = client.models.list()
    ids = [m.id for m in ms.data]
    check(ids == [MODEL], f"models: {ids}")


def chat():
    r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=8, temperature=0)
    c = r.choices[0]
    check(r.object == "chat.completion", r.object)
    check(c.message.role == "assistant", c.message.role)
    check(isinstance(c.message.content, str) and c.message.content.strip(), f"content {c.message.content!r}")
    check(c.finish_reason in ("stop", "length"), c.finish_reason)
    check(r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 8, str(r.usage))
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, "total")
    # Content as an array of text parts gives the same prompt.
    parts = [{"role": "user", "content": [{"type": "text", "text": USER[0]["content"]}]}]
    r2 = client.chat.completions.create(model=MODEL, messages=parts, max_tokens=8, temperature=0)
    check(r2.choices[0].message.content == c.message.content, "parts differ from string content")
    check(r2.usage.prompt_tokens_details.cached_tokens > 0, "prefix cache not used for the same prompt")


def stream():
    full = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=12, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=USER, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )
    check(chunks[0].choices[0].delta.role == "assistant", "first delta carries the role")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(text == full.choices[0].message.content, f"stream {text!r} != {full.choices[0].message.content!r}")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(finishes == [full.choices[0].finish_reason], f"finish reasons {finishes}")
    check(chunks[-1].usage is not None and chunks[-1].choices == [], "usage chunk last")
    check(chunks[-1].usage.completion_tokens == full.usage.completion_tokens, "usage counts")


def completions():
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0)
    check(r.object == "text_completion", r.object)
    check(len(r.choices[0].text) > 0, "empty text")
    check(r.usage.completion_tokens <= 6, str(r.usage))
    s = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, stream=True)
    text = "".join(c.choices[0].text for c in s if c.choices)
    check(text == r.choices[0].text, f"stream {text!r} != {r.choices[0].text!r}")
    two = client.completions.create(model=MODEL, prompt=["One, two,", "A, B,"], max_tokens=3, temperature=0)
    check(len(two.choices) == 2 and [c.index for c in two.choices] == [0, 1], "two prompts")


def embeddings():
    r = client.embeddings.create(model=MODEL, input=["hello world", "the cat sat on the mat", "hello world"])
    check(len(r.data) == 3, "three vectors")
    vs = [d.embedding for d in r.data]
    check(all(len(v) == len(vs[0]) and len(v) > 100 for v in vs), "dimensions")
    norm = sum(x * x for x in vs[0]) ** 0.5
    check(abs(norm - 1) < 1e-3, f"norm {norm}")
    same = sum(a * b for a, b in zip(vs[0], vs[2]))
    check(same > 0.9999, f"same input, cosine {same}")
    f = client.embeddings.create(model=MODEL, input="hello world", encoding_format="float")
    check(max(abs(a - b) for a, b in zip(f.data[0].embedding, vs[0])) < 1e-5, "float and base64 agree")
    check(r.usage.prompt_tokens > 0, "usage")


def json_mode():
    for fmt in (
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "city", "schema": {
            "type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
            "required": ["city", "population"]}}},
    ):
        r = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Describe Paris as JSON with keys city and population."}],
            max_tokens=60, temperature=0, response_format=fmt,
        )
        c = r.choices[0]
        check(c.finish_reason == "stop", f"finish {c.finish_reason}: {c.message.content!r}")
        v = json.loads(c.message.content)
        check(isinstance(v, dict), f"not an object: {c.message.content!r}")


def tool_call():
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(
        model=MODEL, messages=msgs, tools=tools, max_tokens=40, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    c = r.choices[0]
    check(c.finish_reason == "tool_calls", f"finish {c.finish_reason}")
    call = c.message.tool_calls[0]
    check(call.type == "function" and call.function.name == "get_weather", str(call))
    args = json.loads(call.function.arguments)
    check(isinstance(args, dict), f"arguments {call.function.arguments!r}")
    # Streamed: the same call arrives as tool_calls deltas.
    s = list(client.chat.completions.create(
        model=MODEL, messages=msgs, tools=tools, max_tokens=40, temperature=0, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ))
    name, arg_text = None, ""
    for ch in s:
        for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            if tc.function and tc.function.name:
                name = tc.function.name
            if tc.function and tc.function.arguments:
                arg_text += tc.function.arguments
    check(name == "get_weather", f"streamed name {name}")
    check(json.loads(arg_text) == args, f"streamed arguments {arg_text!r}")
    check(s[-1].choices[0].finish_reason == "tool_calls", "streamed finish")
    # The tool's answer goes back in a `tool` message.
    msgs2 = msgs + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "{\"temperature\": 21}"},
    ]
    r2 = client.chat.completions.create(model=MODEL, messages=msgs2, tools=tools, max_tokens=10, temperature=0, tool_choice="none")
    check(r2.choices[0].message.content is not None, "answer after the tool")


def stop():
    base = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
    text = base.choices[0].text
    check("6" in text, f"counting: {text!r}")
    r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=["6"])
    check(r.choices[0].text == text[: text.index("6")], f"{r.choices[0].text!r} vs {text!r}")
    check(r.choices[0].finish_reason == "stop", r.choices[0].finish_reason)
    s = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=["6", "zz"], stream=True)
    check("".join(c.choices[0].text for c in s if c.choices) == r.choices[0].text, "streamed stop")


def logprobs():
    r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs.content
    check(len(lp) == r.usage.completion_tokens, "one entry per token")
    for e in lp:
        check(e.logprob <= 0 and len(e.top_logprobs) == 3, str(e))
        # Greedy: the chosen token is the most likely one.
        check(abs(e.top_logprobs[0].logprob - e.logprob) < 1e-4, str(e))
    check("".join(e.token for e in lp) == r.choices[0].message.content, "tokens spell the content")
    c = client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, temperature=0, logprobs=2)
    check(len(c.choices[0].logprobs.token_logprobs) == c.usage.completion_tokens, "completion logprobs")


for name in sys.argv[3:]:
    globals()[name]()
    print("ok", name, flush=True)
