"""Generate the Python stubs of proto/*.proto with grpcio-tools (`make proto`).

The stubs are committed, so serving needs no compiler; tests/test_proto.py regenerates them
into a temporary folder and fails when the committed ones are out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = sorted((ROOT / "proto").glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Write <name>_pb2.py, <name>_pb2.pyi and <name>_pb2_grpc.py under out_dir/proto/."""
    from grpc_tools import protoc

    (out_dir / "proto").mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *map(str, PROTOS),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {', '.join(p.name for p in PROTOS)}")
    return sorted((out_dir / "proto").glob("*_pb2*.py*"))


if __name__ == "__main__":
    written = generate(ROOT)
    print("\n".join(str(p.relative_to(ROOT)) for p in written))
    sys.exit(0)
