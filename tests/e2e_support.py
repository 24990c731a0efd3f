"""What the Python end-to-end tests share: named checks that are all run
and counted (not stopped at the first failure), and Python gRPC stubs
generated from our proto at run time."""
import importlib
import subprocess
import sys

PASSED, FAILED = [], []


def check(name, condition, detail=""):
    (PASSED if condition else FAILED).append(name)
    print(("ok   " if condition else "FAIL ") + name +
          ("" if condition else f": {detail}"), flush=True)


def generate_stubs(source, out_dir):
    """(moondream_pb2, moondream_pb2_grpc) for the repository at `source`."""
    subprocess.run(
        ["protoc", f"-I{source}/proto", f"--python_out={out_dir}",
         f"--grpc_python_out={out_dir}",
         "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
         f"{source}/proto/moondream/v1/moondream.proto"],
        check=True)
    sys.path.insert(0, out_dir)
    return (importlib.import_module("moondream.v1.moondream_pb2"),
            importlib.import_module("moondream.v1.moondream_pb2_grpc"))
