"""Writes test/fixtures/parity/python_io.safetensors: a small file written by Python, read by the TS tests."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

def main():
    t = {
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "a.f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4 - 0.5,
        "b.f64": torch.tensor([1.0 / 3.0, -2.5e-300, 1e300], dtype=torch.float64),
        "c.i32": torch.tensor([[-7, 0], [2147483647, -2147483648]], dtype=torch.int32),
        "d.i64": torch.tensor([[-100, 0, 5], [127, -1, 2**31 - 1]], dtype=torch.int64),
        "e.i64big": torch.tensor([2**40, -(2**33)], dtype=torch.int64),
        "empty": torch.zeros(0, 4, dtype=torch.float32),
    }
    st_io.save(os.path.join(ROOT, "test/fixtures/parity/python_io.safetensors"), t, {"writer": "st_io.py", "format": "pt"})
    back, meta = st_io.load(os.path.join(ROOT, "test/fixtures/parity/python_io.safetensors"))
    for k, v in t.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    assert meta == {"writer": "st_io.py", "format": "pt"}
    print("ok")

if __name__ == "__main__":
    main()
