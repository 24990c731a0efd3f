#!/usr/bin/python3
"""tools/train/average_weights.py: the mean of models' fp32 weights, and a
clear refusal of sources that do not match.

usage: average_weights_test.py SOURCE_DIR
"""

import array
import json
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
from e2e_support import FAILED, PASSED, check  # noqa: E402

SCRIPT = os.path.join(sys.argv[1], "tools", "train", "average_weights.py")


def write_model(directory, tensors, step, config=None):
    """A model directory whose model.safetensors holds `tensors`
    ({name: (shape, [values])}) as F32."""
    os.makedirs(directory)
    header, data = {"__metadata__": {"step": str(step)}}, b""
    for name, (shape, values) in tensors.items():
        raw = array.array("f", values).tobytes()
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header_bytes = json.dumps(header).encode()
    with open(os.path.join(directory, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)) + header_bytes + data)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config or {"text": {"dim": 2}}, f)
    with open(os.path.join(directory, "tokenizer.json"), "w") as f:
        f.write("{}")


def read_model(directory):
    with open(os.path.join(directory, "model.safetensors"), "rb") as f:
        data = f.read()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    values = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        values[name] = array.array("f", data[8 + size + start:
                                             8 + size + end]).tolist()
    return header, values


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        a, b, c = (os.path.join(tmp, n) for n in "abc")
        write_model(a, {"w": ([2, 2], [1, 2, 3, 4]), "b": ([1], [0.5])}, 10)
        write_model(b, {"w": ([2, 2], [3, 2, 1, 0]), "b": ([1], [1.5])}, 30)
        write_model(c, {"w": ([2, 2], [2, 2, 2, 2]), "b": ([1], [-2])}, 20)
        out = os.path.join(tmp, "out")
        result = run(out, a, b, c)
        check("three models average", result.returncode == 0, result.stdout)
        header, values = read_model(out)
        check("each weight is the element-wise mean",
              values == {"w": [2, 2, 2, 2], "b": [0]}, str(values))
        check("the step is the largest source's, and the count is noted",
              header["__metadata__"]["step"] == "30" and
              header["__metadata__"]["averaged_from"] == "3",
              str(header["__metadata__"]))
        check("config and tokenizer come along",
              os.path.exists(os.path.join(out, "config.json")) and
              os.path.exists(os.path.join(out, "tokenizer.json")))

        shape = os.path.join(tmp, "shape")
        write_model(shape, {"w": ([4], [1, 2, 3, 4]), "b": ([1], [0])}, 1)
        result = run(os.path.join(tmp, "x"), a, shape)
        check("a tensor of another shape is refused, by name",
              result.returncode != 0 and "w is F32 [4]" in result.stdout,
              result.stdout)
        names = os.path.join(tmp, "names")
        write_model(names, {"w": ([2, 2], [1, 2, 3, 4])}, 1)
        result = run(os.path.join(tmp, "y"), a, names)
        check("a missing tensor is refused",
              result.returncode != 0 and "tensors differ" in result.stdout,
              result.stdout)
        config = os.path.join(tmp, "config")
        write_model(config, {"w": ([2, 2], [1, 2, 3, 4]), "b": ([1], [0])},
                    1, config={"text": {"dim": 3}})
        result = run(os.path.join(tmp, "z"), a, config)
        check("another config is refused",
              result.returncode != 0 and "config.json differs" in
              result.stdout, result.stdout)
        result = run(os.path.join(tmp, "one"), a)
        check("one model is not an average", result.returncode != 0)
        check("no output where refused",
              not any(os.path.exists(os.path.join(tmp, n))
                      for n in ("x", "y", "z", "one")))
    print(f"{len(PASSED)} passed, {len(FAILED)} failed", flush=True)
    return 1 if FAILED or not PASSED else 0


if __name__ == "__main__":
    sys.exit(main())
