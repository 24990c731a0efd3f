#!/usr/bin/python3
"""Writes the element-wise mean of several trained model directories' fp32
weights (a "model soup"): models fine-tuned from one start stay in one basin
of the loss, and their mean answers better than any of them (recipe.sh's
last step; tools/train/README.md, 2026-12-06).

usage: tools/train/average_weights.py OUT_DIR MODEL_DIR MODEL_DIR...

Every source must hold the same tensors (names, shapes, F32) and the same
config.json; OUT_DIR gets their mean in model.safetensors (the first
source's layout and header, its metadata's "step" the largest of the
sources', "averaged_from" their count) and the first source's config.json
and tokenizer.json. Standard library only: the sum runs in double, in the
sources' order, then rounds once to fp32.
"""

import array
import json
import os
import shutil
import struct
import sys

WEIGHTS = "model.safetensors"


class AverageError(Exception):
    pass


def read_safetensors(path):
    """(header dict, raw tensor bytes) of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise AverageError(f"{path}: too short for a safetensors file")
    header_bytes = struct.unpack("<Q", data[:8])[0]
    if 8 + header_bytes > len(data):
        raise AverageError(f"{path}: header runs past the end of the file")
    try:
        header = json.loads(data[8:8 + header_bytes])
    except ValueError as e:
        raise AverageError(f"{path}: header is not JSON ({e})")
    return header, data[8 + header_bytes:]


def tensors(header):
    return {name: spec for name, spec in header.items()
            if name != "__metadata__"}


def check_same_tensors(paths, headers):
    """Every source holds the first's tensors, all F32, of its shapes."""
    first = tensors(headers[0])
    for name, spec in first.items():
        if spec["dtype"] != "F32":
            raise AverageError(f"{paths[0]}: {name} is {spec['dtype']}; "
                               "only F32 weights are averaged")
    for path, header in zip(paths[1:], headers[1:]):
        other = tensors(header)
        if other.keys() != first.keys():
            missing = sorted(first.keys() ^ other.keys())
            raise AverageError(f"{path}: tensors differ from {paths[0]}'s "
                               f"(e.g. {missing[0]})")
        for name, spec in first.items():
            if (other[name]["dtype"], other[name]["shape"]) != (
                    spec["dtype"], spec["shape"]):
                raise AverageError(f"{path}: {name} is {other[name]['dtype']}"
                                   f" {other[name]['shape']}, {paths[0]} "
                                   f"has {spec['dtype']} {spec['shape']}")


def tensor_values(data, spec):
    start, end = spec["data_offsets"]
    values = array.array("f")
    values.frombytes(data[start:end])
    if sys.byteorder != "little":
        values.byteswap()
    return values


def mean_tensor(name, sources):
    """The mean of tensor `name` over (header, data) sources, as fp32."""
    total = [0.0] * (len(tensor_values(sources[0][1],
                                       tensors(sources[0][0])[name])))
    for header, data in sources:
        for i, v in enumerate(tensor_values(data, tensors(header)[name])):
            total[i] += v
    mean = array.array("f", (t / len(sources) for t in total))
    if sys.byteorder != "little":
        mean.byteswap()
    return mean.tobytes()


def averaged_header(headers):
    header = json.loads(json.dumps(headers[0]))
    metadata = header.setdefault("__metadata__", {})
    steps = [h.get("__metadata__", {}).get("step") for h in headers]
    if all(s is not None and str(s).isdigit() for s in steps):
        metadata["step"] = str(max(int(s) for s in steps))
    metadata["averaged_from"] = str(len(headers))
    return header


def write_safetensors(path, header, data):
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # 8-byte aligned data
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        f.write(data)


def check_same_config(model_dirs):
    configs = []
    for d in model_dirs:
        with open(os.path.join(d, "config.json")) as f:
            configs.append(json.load(f))
    for d, config in zip(model_dirs[1:], configs[1:]):
        if config != configs[0]:
            raise AverageError(f"{d}/config.json differs from "
                               f"{model_dirs[0]}'s")


def average(out_dir, model_dirs):
    if len(model_dirs) < 2:
        raise AverageError("give at least two model directories")
    check_same_config(model_dirs)
    paths = [os.path.join(d, WEIGHTS) for d in model_dirs]
    sources = [read_safetensors(p) for p in paths]
    headers = [h for h, _ in sources]
    check_same_tensors(paths, headers)
    header = averaged_header(headers)
    data = bytearray(len(sources[0][1]))
    for name, spec in tensors(headers[0]).items():
        start, end = spec["data_offsets"]
        data[start:end] = mean_tensor(name, sources)
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, WEIGHTS), header, bytes(data))
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(os.path.join(model_dirs[0], name),
                        os.path.join(out_dir, name))


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    try:
        average(sys.argv[1], sys.argv[2:])
    except (AverageError, OSError) as e:
        sys.exit(f"average_weights: {e}")
    print(f"wrote {sys.argv[1]}: the mean of {len(sys.argv) - 2} models")


if __name__ == "__main__":
    main()
