"""Minimal safetensors reader/writer (the `safetensors` package is not installed here).

Format: u64-LE header length N | N bytes UTF-8 JSON | data. Tensors are written like the official writer: ordered by
dtype alignment (8-byte dtypes first) then by name, contiguous, header padded with spaces to a multiple of 8.
"""
import json
import os
import struct
import tempfile

import numpy as np
import torch

_DT = {
    torch.float32: ("F32", np.float32),
    torch.float64: ("F64", np.float64),
    torch.int32: ("I32", np.int32),
    torch.int64: ("I64", np.int64),
}
_NP = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}


def serialize(tensors, metadata=None):
    items = []
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype not in _DT:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        code, npdt = _DT[t.dtype]
        items.append((name, code, list(t.shape), t.numpy().astype(npdt).astype("<" + np.dtype(npdt).str[1:]).tobytes()))
    items.sort(key=lambda it: (-np.dtype(_NP[it[1]]).itemsize, it[0]))
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    off = 0
    for name, code, shape, b in items:
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [off, off + len(b)]}
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(it[3] for it in items)


def save(path, tensors, metadata=None):
    data = serialize(tensors, metadata)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_st_")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        arr = np.frombuffer(raw[base + b:base + e], dtype=np.dtype(_NP[info["dtype"]]).newbyteorder("<"))
        out[name] = torch.from_numpy(arr.copy().reshape(info["shape"]))
    return out, meta
