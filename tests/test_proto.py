"""The wire contract: committed stubs are current, and our KServe v2 subset is Triton's."""

import json
import subprocess
import sys

from proto import kserve_pb2
from proto.generate import ROOT, generate

# Dumps every message of a file descriptor as {message: {field: [number, type, label, type name]}}.
DUMP = """
def dump(descriptor):
    out = {}
    def walk(message):
        out[message.full_name] = {
            f.name: [f.number, f.type, f.is_repeated, getattr(f.message_type, "full_name", "")]
            for f in message.fields
        }
        for nested in message.nested_types:
            walk(nested)
    for message in descriptor.message_types_by_name.values():
        walk(message)
    services = {
        s.full_name: {m.name: [m.input_type.full_name, m.output_type.full_name] for m in s.methods}
        for s in descriptor.services_by_name.values()
    }
    return {"messages": out, "services": services}
"""


def _dump_in_subprocess(module: str) -> dict:
    # A fresh interpreter: tritonclient's and our descriptors cannot share one descriptor pool.
    code = f"{DUMP}\nimport json, {module} as m\nprint(json.dumps(dump(m.DESCRIPTOR)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout)


def test_committed_stubs_are_current(tmp_path):
    for fresh in generate(tmp_path):
        committed = ROOT / "proto" / fresh.name
        assert committed.exists(), f"{committed.name} missing: run `make proto`"
        assert committed.read_bytes() == fresh.read_bytes(), (
            f"{committed.name} is out of date: run `make proto`"
        )


def test_kserve_subset_matches_triton_client_wire_format():
    ours = _dump_in_subprocess("proto.kserve_pb2")
    triton = _dump_in_subprocess("tritonclient.grpc.service_pb2")
    assert ours["messages"], "no messages in proto/kserve.proto"
    for message, fields in ours["messages"].items():
        assert message in triton["messages"], f"{message} is not a Triton message"
        for name, spec in fields.items():
            assert triton["messages"][message].get(name) == spec, f"{message}.{name} differs"
    service = "inference.GRPCInferenceService"
    for method, types in ours["services"][service].items():
        assert triton["services"][service][method] == types, f"{method} differs"
    assert set(ours["services"][service]) >= {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }


def test_kserve_module_is_importable_beside_ours():
    assert kserve_pb2.ModelInferRequest(model_name="khmer-correct").model_name == "khmer-correct"
