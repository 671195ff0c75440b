#!/usr/bin/env python3
"""Writes the small seed inputs of the fuzz corpus (Tests/Fuzz/corpus/<target>/seed-*).

Seeds are kept small (< 4 KB) so that libFuzzer mutates them quickly; the run script adds the fixture
files as extra read-only seeds. A torch-style .pt is built opcode by opcode (no torch needed), like the
PickleBuilder in Tests/DiffuSeqCoreTests/CheckpointIOTests.swift.
"""
import json, os, struct, sys

ROOT = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(ROOT, "..", "DiffuSeqCoreTests", "Fixtures")
DATA = os.path.join(ROOT, "..", "..", "Resources", "data", "kjv2modern")


def put(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- .pt: zip (stored) with archive/data.pkl and archive/data/<key> ---------------------------------
class P:
    def __init__(self): self.b = bytearray(b"\x80\x02")
    def glob(self, m, n): self.b += b"c" + f"{m}\n{n}\n".encode()
    def s(self, x): u = x.encode(); self.b += b"X" + struct.pack("<I", len(u)) + u
    def i(self, x): self.b += b"J" + struct.pack("<i", x)
    def op(self, o): self.b += bytes([o])
    def tup(self, xs):
        self.op(0x28)
        for x in xs: self.i(x)
        self.op(0x74)
    def tensor(self, storage, key, numel, offset, size, stride, param=False):
        if param: self.glob("torch._utils", "_rebuild_parameter"); self.op(0x28)
        self.glob("torch._utils", "_rebuild_tensor_v2"); self.op(0x28)
        self.op(0x28); self.s("storage"); self.glob("torch", storage); self.s(key); self.s("cpu"); self.i(numel); self.op(0x74)
        self.op(0x51); self.i(offset); self.tup(size); self.tup(stride); self.op(0x89)
        self.glob("collections", "OrderedDict"); self.op(0x29); self.op(0x52); self.op(0x74); self.op(0x52)
        if param: self.op(0x88); self.glob("collections", "OrderedDict"); self.op(0x29); self.op(0x52); self.op(0x74); self.op(0x52)


def zipfile_bytes(items):
    out, central = bytearray(), bytearray()
    for name, data in items:
        n = name.encode(); off = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, 0, len(data), len(data), len(n), 0) + n + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, 0, len(data), len(data), len(n),
                               0, 0, 0, 0, 0, off) + n
    cd = len(out); out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(items), len(items), len(central), cd, 0)
    return bytes(out)


def pt(tensors, prefix="archive", wrap=None):
    p = P()
    if wrap: p.op(0x7D); p.s(wrap)  # {"wrap": state_dict}
    p.glob("collections", "OrderedDict"); p.op(0x29); p.op(0x52); p.op(0x28)
    storages = []
    for (name, storage, key, numel, offset, size, stride, param, raw) in tensors:
        p.s(name); p.tensor(storage, key, numel, offset, size, stride, param)
        if raw is not None: storages.append((key, raw))
    p.op(0x75)  # SETITEMS
    if wrap: p.op(0x73)  # SETITEM
    p.op(0x2E)
    items = [(f"{prefix}/data.pkl", bytes(p.b))] + [(f"{prefix}/data/{k}", r) for k, r in storages]
    items.append((f"{prefix}/byteorder", b"little"))
    return zipfile_bytes(items)


f32 = lambda xs: struct.pack(f"<{len(xs)}f", *xs)
put("pt", "two-tensors.pt", pt([("w", "FloatStorage", "0", 6, 0, [2, 3], [3, 1], False, f32(range(6))),
                                ("b", "FloatStorage", "1", 3, 0, [3], [1], True, f32([1, 2, 3]))]))
put("pt", "strided-tied.pt", pt([("a", "FloatStorage", "0", 6, 1, [2, 2], [1, 2], False, f32(range(6))),
                                 ("a2", "FloatStorage", "0", 6, 0, [6], [1], False, None),
                                 ("ids", "LongStorage", "1", 2, 0, [1, 2], [2, 1], False, struct.pack("<2q", 0, 1)),
                                 ("h", "HalfStorage", "2", 2, 0, [2], [1], False, struct.pack("<2e", 1.5, -2.0))],
                                prefix="my_model", wrap="state_dict"))

# --- safetensors ---------------------------------------------------------------------------------
def st(header, data):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data

put("safetensors", "mixed.safetensors", st({"__metadata__": {"format": "pt", "config": "{\"seq_len\": 8}"},
    "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
    "h": {"dtype": "F16", "shape": [2], "data_offsets": [16, 20]},
    "bf": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [20, 24]},
    "ids": {"dtype": "I64", "shape": [1, 1], "data_offsets": [24, 32]},
    "d": {"dtype": "F64", "shape": [], "data_offsets": [32, 40]}},
    f32([1, 2, 3, 4]) + struct.pack("<2e", 0.5, 1) + b"\x80\x3f\x00\x40" + struct.pack("<q", 7) + struct.pack("<d", 2.5)))
put("safetensors", "escapes.safetensors", st({"a\\u00e9\"\n": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
                                             "z": {"dtype": "BOOL", "shape": [0], "data_offsets": [3, 3]}}, b"\x01\x02\x03"))

# --- vocabularies --------------------------------------------------------------------------------
for name in ["vocab.txt", os.path.join("custom-vocab", "vocab.json"), os.path.join("custom-vocab", "vocab_quirks.txt")]:
    with open(os.path.join(FIX, name), "rb") as f: put("vocab", os.path.basename(name), f.read())
put("vocab", "custom-words.txt", "thou 12\nshalt 3\nnot\nsteal\n.\n")
put("vocab", "wordpiece-crlf.txt", "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nthe\r\n##s\r\né\r\n世\r\n")

# --- jsonl ---------------------------------------------------------------------------------------
with open(os.path.join(DATA, "valid.jsonl"), "rb") as f: lines = f.read().split(b"\n")[:4]
put("jsonl", "kjv.jsonl", b"\n".join(lines) + b"\n")
put("jsonl", "odd.jsonl", b'\xef\xbb\xbf{"src": "a\\u0000b", "trg": "\\ud83d\\ude00 x"}\r\n\n{"src": 1, "trg": "y"}\n'
                          b'{"trg": "t", "src": "  s  ", "extra": [1, {"k": null}]}\n[1,2]\n{"src": "\xe2\x80\xae rtl", "trg": "e\xcc\x81"}')

# --- training_args.json --------------------------------------------------------------------------
with open(os.path.join(FIX, "training_args.json"), "rb") as f: put("args", "fixture.json", f.read())
put("args", "ours.json", json.dumps({"hidden_dim": 16, "seq_len": 8, "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 16, "vocab_size": 40,
    "diffusion_steps": 10, "noise_schedule": "sqrt", "config_name": "bert_config.json", "dropout": 0.1}))
