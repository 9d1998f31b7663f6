#!/usr/bin/env python3
"""Write what gguf-py (the reference reader from llama.cpp) sees in the real models, as JSON
fixtures for gguf/tests/real_models.rs. The tests only read the committed JSON; run this again
after changing the models:

    pip install gguf numpy
    python3 scripts/gen-gguf-fixtures.py [FERRO_HOME]
"""
import collections
import hashlib
import json
import os
import sys

from gguf import GGUFReader, GGUFValueType

MODELS = ["smollm2-135m-instruct", "gemma3-270m"]
OUT = os.path.join(os.path.dirname(__file__), "..", "gguf", "tests", "fixtures")
# Tensors whose shape, type and placement the tests check (first, some middle, last are added).
WANTED = ["token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight"]


def scalar(field, idx):
    v = field.parts[idx]
    return v.tolist()[0]


def value_of(field):
    """(type name, json value) of one metadata field, mirroring ferro's Value."""
    t = field.types[0]
    if t == GGUFValueType.STRING:
        raw = bytes(field.parts[field.data[0]])
        out = {"type": "string", "len": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        if len(raw) <= 200:
            out["value"] = raw.decode("utf-8", errors="replace")
        return out
    if t == GGUFValueType.ARRAY:
        et = field.types[1] if len(field.types) > 1 else None
        n = len(field.data)
        out = {"type": "array", "elem_type": et.name.lower() if et is not None else None, "len": n}
        head = []
        for i in field.data[:5]:
            if et == GGUFValueType.STRING:
                head.append(bytes(field.parts[i]).decode("utf-8", errors="replace"))
            elif et == GGUFValueType.ARRAY:
                break
            else:
                head.append(field.parts[i].tolist()[0])
        out["head"] = head
        return out
    return {"type": t.name.lower(), "value": scalar(field, field.data[0])}


def describe(path):
    r = GGUFReader(path)
    meta = {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue
        meta[name] = value_of(field)
    hist = collections.Counter(t.tensor_type.name.lower().replace("_k", "_K") for t in r.tensors)
    names = [t.name for t in r.tensors]
    wanted = [n for n in WANTED if n in names] + [names[0], names[len(names) // 2], names[-1]]
    tensors = []
    for t in r.tensors:
        if t.name in wanted:
            tensors.append(
                {
                    "name": t.name,
                    "dims": [int(d) for d in t.shape],
                    "type": t.tensor_type.name.lower().replace("_k", "_K"),
                    "offset": int(t.data_offset),
                    "n_bytes": int(t.n_bytes),
                    "n_elements": int(t.n_elements),
                }
            )
    return {
        "file_bytes": os.path.getsize(path),
        "version": scalar(r.fields["GGUF.version"], 0),
        "n_kv": len(meta),
        "n_tensors": len(r.tensors),
        "data_offset": int(r.data_offset),
        "alignment": int(r.alignment),
        "architecture": meta["general.architecture"]["value"],
        "tensor_types": dict(sorted(hist.items())),
        "total_elements": int(sum(int(t.n_elements) for t in r.tensors)),
        "metadata": meta,
        "tensors": tensors,
    }


def main():
    home = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FERRO_HOME", os.path.expanduser("~/.cache/ferro"))
    os.makedirs(OUT, exist_ok=True)
    for m in MODELS:
        path = os.path.join(home, "models", m + ".gguf")
        d = describe(path)
        with open(os.path.join(OUT, m + ".json"), "w") as f:
            json.dump(d, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"{m}: {d['n_tensors']} tensors, {d['n_kv']} keys, types {d['tensor_types']}")


if __name__ == "__main__":
    main()
