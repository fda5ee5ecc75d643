"""Small passes over an exported ONNX graph: constant folding and removal of unused nodes.

Why we fold ourselves: the TorchScript tracer records the image size as shape arithmetic (``Shape``, ``Mod``,
``Div``, ``Cast``, ``Unsqueeze`` …) and its own folder leaves part of it (it has no rule for ``Mod``), so the crop
after the network's padding gets computed ``Slice`` bounds. ONNX shape inference then cannot tell that the outputs
have static shapes, and every runtime re-derives numbers that are fixed at export. For a fixed image size all of it
is constant: each node whose inputs are all known is evaluated once with ONNX's reference implementation
(``onnx.reference``, the operators' specification in code) and replaced by its value.
"""

from __future__ import annotations

import numpy as np

# Folding an Expand or ConstantOfShape that makes a full-resolution map would only make the file larger.
FOLD_MAX_ELEMENTS = 1 << 16
_NEVER_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}


def _static_shapes(model) -> dict[str, tuple[int, ...]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = inferred.graph
    shapes = {}
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(dim.HasField("dim_value") for dim in dims):
            shapes[value.name] = tuple(dim.dim_value for dim in dims)
    return shapes


def _opset(model) -> int:
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def _constant_value(node) -> np.ndarray | None:
    from onnx import numpy_helper

    if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def _evaluate(node, inputs: dict[str, np.ndarray], opset: int) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return [np.asarray(value) for value in ReferenceEvaluator(node, opsets={"": opset}).run(None, inputs)]


def fold_constants(model, max_rounds: int = 20):
    """``model`` with every node of constant inputs (and every ``Shape`` of a static tensor) replaced by a Constant.

    Rounds repeat until nothing changes: folding a ``Shape`` lets shape inference see further, which lets the next
    round fold more. Unused nodes and initializers are removed at the end. Returns a new ModelProto.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    opset = _opset(model)
    for _ in range(max_rounds):
        shapes = _static_shapes(model)
        known = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        new_nodes, folded = [], 0
        for node in model.graph.node:
            constant = _constant_value(node)
            if constant is not None:
                known[node.output[0]] = constant
                new_nodes.append(node)
                continue
            outputs = None
            if node.op_type == "Shape" and node.input[0] in shapes:
                attributes = {attribute.name: attribute.i for attribute in node.attribute}
                dims = shapes[node.input[0]][attributes.get("start", 0):attributes.get("end", None)]
                outputs = [np.array(dims, dtype=np.int64)]
            elif (node.op_type not in _NEVER_FOLD and node.domain in ("", "ai.onnx")
                  and all(name in known for name in node.input if name)
                  and not any(attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                              for attribute in node.attribute)):
                outputs = _evaluate(node, {name: known[name] for name in node.input if name}, opset)
            if outputs is None or any(value.size > FOLD_MAX_ELEMENTS for value in outputs):
                new_nodes.append(node)
                continue
            for name, value in zip(node.output, outputs):
                known[name] = value
                new_nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name)))
            folded += 1
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        remove_unused(model)
        if not folded:
            break
    return model


def remove_unused(model) -> None:
    """Drop, in place, nodes none of whose outputs is used and initializers nothing reads."""
    graph = model.graph
    used = {value.name for value in graph.output}
    kept = []
    for node in reversed(graph.node):  # nodes are in topological order, so consumers come first in reverse
        if any(name in used for name in node.output):
            kept.append(node)
            used.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def op_types(model) -> set[str]:
    """The operator types a graph uses (top-level nodes; our graphs have no subgraphs)."""
    return {node.op_type for node in model.graph.node}
