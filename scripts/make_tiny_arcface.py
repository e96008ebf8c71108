"""Write tests/assets/tiny_arcface.onnx: a random stand-in with ArcFace's interface (input
1x3x112x112 float in [-1, 1], output 1x512), for the face-similarity test of the ArcFace path.

It needs the `onnx` package, whose protobuf>=6 clashes with mediapipe 0.10.14's protobuf<5, so
run it in a separate environment:  python -m venv /tmp/onnxenv && /tmp/onnxenv/bin/pip install
onnx numpy && /tmp/onnxenv/bin/python scripts/make_tiny_arcface.py
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
# 28x28 average pooling (112 -> 4), flatten the 3x4x4 grid, project to 512: a crude "embedding"
# that changes with the face chip's content, so alignment and pre-processing are exercised.
weight = numpy_helper.from_array(rng.normal(0, 0.1, (3 * 4 * 4, 512)).astype(np.float32), "w")
graph = helper.make_graph(
    [helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]),
     helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
     helper.make_node("MatMul", ["flat", "w"], ["embedding"])],
    "tiny_arcface",
    [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
    [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 512])],
    initializer=[weight])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
onnx.checker.check_model(model)
out = Path(__file__).resolve().parent.parent / "tests" / "assets" / "tiny_arcface.onnx"
out.write_bytes(model.SerializeToString())
print(f"wrote {out} ({out.stat().st_size} bytes)")
