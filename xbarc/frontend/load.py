"""Load an ONNX file safely, check it, fix its input shapes and infer value types.

The file is read once and never written. External data is read only from the model's own
folder. Shape inference always runs on a skeleton model rebuilt from the working graph
(large constants declared by type only), so it is cheap and can be repeated as folding
makes more shapes known.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnx import (
    AttributeProto,
    GraphProto,
    ModelProto,
    SparseTensorProto,
    TensorProto,
    TypeProto,
    ValueInfoProto,
    external_data_helper,
    helper,
    numpy_helper,
)

from xbarc.diagnostics import XbarcError
from xbarc.files import check_regular_file
from xbarc.ir.graph import Graph, Node, node_from_proto, unique_name
from xbarc.ir.tensors import element_type
from xbarc.ir.tile import Program
from xbarc.ir.types import ONNX_DTYPES, TensorType, onnx_dtype_name

OLDEST_OPSET = 9
# Constants up to this many elements go to shape inference as initializers, so that
# data propagation sees shape tensors; bigger ones (weights) are declared by type only.
INFERENCE_CONSTANT_LIMIT = 4096
EXAMPLE_SHAPE = "1x3x224x224"
# The symbolic dimension that stands for an input's batch (its leading dimension) while
# folding: one name for all inputs, so that shape inference sees they share it.
BATCH_DIM = "batch"


# --- loading ---------------------------------------------------------------------------


def load_model(path: str | Path) -> ModelProto:
    """The checked model of the ONNX file `path`, external data included."""
    where = str(path)
    path = Path(path)
    if not path.exists():
        raise XbarcError("no such file", where=where, hint="check the path of the ONNX model")
    if path.is_dir():
        raise XbarcError(
            "is a directory, not an ONNX file", where=where, hint="give the path of a .onnx file"
        )
    check_regular_file(path, "model file")  # a device or a pipe would be read forever
    model = _read_model(path, where)
    _check_opsets(model, where)
    _load_external_data(model, path, where)
    _check_model(model, path, where)
    return _upgraded(model, where)


def _read_model(path: Path, where: str) -> ModelProto:
    not_onnx_hint = "the file is truncated or not an ONNX model; export the model again"
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError, RuntimeWarning, ...
        raise XbarcError(
            f"not a readable ONNX model ({_first_line(error)})", where=where, hint=not_onnx_hint
        ) from None
    if model.ir_version == 0 or not model.HasField("graph"):
        raise XbarcError(
            "not an ONNX model (no IR version or no graph)", where=where, hint=not_onnx_hint
        )
    return model


def _check_opsets(model: ModelProto, where: str) -> None:
    newest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain not in ("", "ai.onnx"):
            continue
        if opset.version > newest:
            raise XbarcError(
                f"the model uses ONNX opset {opset.version}, newer than opset {newest} that "
                "the installed onnx package knows",
                where=where,
                hint=f"upgrade the onnx package, or export the model with opset {newest} or older",
            )


def _default_opset(model: ModelProto) -> int | None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    return None


def _upgraded(model: ModelProto, where: str) -> ModelProto:
    """Models older than opset 9 converted by onnx's version converter (in memory)."""
    version = _default_opset(model)
    if version is None or version >= OLDEST_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, OLDEST_OPSET)
    except Exception as error:  # the converter raises plain RuntimeErrors
        raise XbarcError(
            f"the model uses ONNX opset {version}, and converting it to opset "
            f"{OLDEST_OPSET} failed ({_first_line(error)})",
            where=where,
            hint="export the model with opset 9 or newer",
        ) from None


def _load_external_data(model: ModelProto, path: Path, where: str) -> None:
    external = [t for t in _all_tensors(model) if external_data_helper.uses_external_data(t)]
    if not external:
        return
    folder = path.parent.resolve()
    for tensor in external:
        location = external_data_helper.ExternalDataInfo(tensor).location
        _check_external_location(tensor.name, location, folder, where)
    try:
        external_data_helper.load_external_data_for_model(model, str(folder))
    except Exception as error:
        raise XbarcError(
            f"cannot read the external data of the model ({_first_line(error)})",
            where=where,
            hint="keep the external data files next to the model, as exported",
        ) from None


def _check_external_location(tensor: str, location: str, folder: Path, where: str) -> None:
    normalized = os.path.normpath(location) if location else ""
    escapes = (
        not location
        or os.path.isabs(location)
        or normalized == ".."
        or normalized.startswith(".." + os.sep)
        # a symbolic link may still lead out of the folder
        or not (folder / normalized).resolve().is_relative_to(folder)
    )
    if escapes:
        raise XbarcError(
            f"tensor {tensor!r} has its external data at {location!r}, outside the model's folder",
            where=where,
            hint="external data must be a file in the model's own folder; re-export the model",
        )
    if not (folder / normalized).is_file():
        raise XbarcError(
            f"tensor {tensor!r} has its external data in {location!r}, which does not exist",
            where=where,
            hint="copy the external data file next to the model",
        )


def _all_tensors(model: ModelProto) -> Iterator[TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _attribute_tensors(node.attribute)


def _graph_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _attribute_tensors(node.attribute)


def _attribute_tensors(attributes) -> Iterator[TensorProto]:
    for attr in attributes:
        if attr.type == AttributeProto.TENSOR:
            yield attr.t
        elif attr.type == AttributeProto.TENSORS:
            yield from attr.tensors
        elif attr.type == AttributeProto.GRAPH:
            yield from _graph_tensors(attr.g)
        elif attr.type == AttributeProto.GRAPHS:
            for graph in attr.graphs:
                yield from _graph_tensors(graph)


def _check_model(model: ModelProto, path: Path, where: str) -> None:
    # The checker wants a shape field on every graph input and output, which exporters and
    # onnx.helper users often leave out and onnxruntime does not need: an empty one stands
    # in while checking (inputs without a shape are reported later, with a better hint).
    shapeless = [
        value.type.tensor_type
        for value in (*model.graph.input, *model.graph.output)
        if value.type.WhichOneof("value") == "tensor_type"
        and not value.type.tensor_type.HasField("shape")
    ]
    for tensor in shapeless:
        tensor.shape.SetInParent()
    try:
        _run_checker(model, path, where)
    finally:
        for tensor in shapeless:
            tensor.ClearField("shape")


def _run_checker(model: ModelProto, path: Path, where: str) -> None:
    try:
        onnx.checker.check_model(model, full_check=False)
    except ValueError as error:
        if "2GB" not in str(error):
            raise XbarcError(f"invalid ONNX model: {_first_line(error)}", where=where) from None
        _check_model_file(path, where)  # too big for an in-memory check
    except Exception as error:
        raise XbarcError(
            f"invalid ONNX model: {_first_line(error)}",
            where=where,
            hint="fix the exporter or the model; onnx.checker.check_model reports the same",
        ) from None


def _check_model_file(path: Path, where: str) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as error:
        raise XbarcError(f"invalid ONNX model: {_first_line(error)}", where=where) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# --- inputs and their shapes -----------------------------------------------------------


def real_inputs(model: ModelProto) -> list[ValueInfoProto]:
    """The graph inputs that are not initializers (IR 3 models list weights as inputs too;
    later ones may give an input a default, which xbarc treats as a constant)."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {t.values.name for t in model.graph.sparse_initializer}
    return [value for value in model.graph.input if value.name not in constants]


def input_types(
    model: ModelProto, overrides: Mapping[str, tuple[int, ...]], where: str
) -> dict[str, TensorType]:
    """The static type of every real input, after the user's shape overrides."""
    inputs = real_inputs(model)
    names = [value.name for value in inputs]
    unknown = [name for name in overrides if name not in names]
    if unknown:
        raise XbarcError(
            f"--input-shape names {', '.join(map(repr, unknown))}, "
            "which is not an input of the model",
            where=where,
            hint=f"the inputs are: {', '.join(names) or '(none)'}",
        )
    types = {}
    for value in inputs:
        declared = _declared_type(value, where)
        if declared.shape is not None:  # -1: how some exporters (Paddle) write "unknown"
            dims = tuple(None if d == -1 else d for d in declared.shape)
            declared = TensorType(declared.dtype, dims)
        negative = [d for d in declared.shape or () if d is not None and d < 0]
        if negative and value.name not in overrides:
            raise XbarcError(
                f"input {value.name!r} has a negative dimension {negative[0]} in its shape "
                f"{_show_dims(value.type)}",
                where=where,
                hint=f"fix the model's input, or use --input-shape {value.name}="
                f"{_example_shape(declared)}",
            )
        if value.name in overrides:
            declared = _override(value.name, declared, overrides[value.name], where)
        if not declared.is_static:
            raise XbarcError(
                f"input {value.name!r} has shape {_show_dims(value.type)} with unknown dimensions",
                where=where,
                hint=f"use --input-shape {value.name}={_example_shape(declared)}",
            )
        types[value.name] = declared
    return types


def _declared_type(value: ValueInfoProto, where: str) -> TensorType:
    if value.type.WhichOneof("value") != "tensor_type":
        raise XbarcError(
            f"input {value.name!r} is not a tensor; xbarc compiles models with tensor inputs",
            where=where,
        )
    return tensor_type(value.type)  # type: ignore[return-value]


def _override(name: str, declared: TensorType, dims: tuple[int, ...], where: str) -> TensorType:
    dims = tuple(dims)
    if not all(isinstance(d, int | np.integer) and d >= 0 for d in dims):
        raise XbarcError(
            f"--input-shape {name}: dimensions must be whole numbers, got {list(dims)}",
            where=where,
            hint=f"use --input-shape {name}={EXAMPLE_SHAPE}",
        )
    if declared.shape is not None and len(declared.shape) != len(dims):
        raise XbarcError(
            f"--input-shape {name} gives {len(dims)} dimensions but the input has rank "
            f"{len(declared.shape)}",
            where=where,
            hint=f"use --input-shape {name}={_example_shape(declared)}",
        )
    return TensorType(declared.dtype, tuple(int(d) for d in dims))


def _show_dims(type_proto: TypeProto) -> str:
    if not type_proto.tensor_type.HasField("shape"):
        return "[*] (unknown rank)"
    dims = []
    for dim in type_proto.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(str(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    return f"[{','.join(dims)}]"


def _example_shape(declared: TensorType) -> str:
    if declared.shape is None:
        return EXAMPLE_SHAPE
    dims = ("1" if d is None or d < 0 else str(d) for d in declared.shape)
    return "x".join(dims) or EXAMPLE_SHAPE


def tensor_type(type_proto: TypeProto) -> TensorType | None:
    """The TensorType of an ONNX type, or None for non-tensors (sequences, maps...)."""
    if type_proto.WhichOneof("value") != "tensor_type":
        return None
    tensor = type_proto.tensor_type
    dtype = onnx_dtype_name(tensor.elem_type)
    if not tensor.HasField("shape"):
        return TensorType(dtype, None)
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return TensorType(dtype, dims)


# --- the working graph -----------------------------------------------------------------


def build_graph(model: ModelProto, inputs: dict[str, TensorType], where: str) -> Graph:
    """The working graph of `model`: unique node names, initializers as numpy constants."""
    _check_names(model.graph, where)
    constants = _read_initializers(model.graph, where)
    opsets = {opset.domain: opset.version for opset in model.opset_import}
    graph = Graph(inputs, (out.name for out in model.graph.output), constants, opsets)
    taken: set[str] = set()
    for index, proto in enumerate(model.graph.node):
        name = unique_name(proto.name or f"{proto.op_type}_{index}", taken)
        taken.add(name)
        graph.add(node_from_proto(proto, name))
    return graph


def _check_names(graph: GraphProto, where: str) -> None:
    """Every name is UTF-8 text without a NUL: xbarc's names become tensor names, which
    name the members of a program's sidecar, and a zip member name ends at a NUL (so the
    tensor would be lost). (protobuf hands a name that is not UTF-8 over as bytes, or
    raises when it is read, depending on its implementation and warning filters.)"""
    hint = "rename it in the model; ONNX names are UTF-8 text without NUL characters"
    for index, node in enumerate(graph.node):
        names, problem = _read_names(node, "name", "input", "output")
        for name in names:
            problem = problem or _name_problem(name)
            if problem:
                break
        if problem:
            label = names[0] if names and isinstance(names[0], str) else f"#{index}"
            raise XbarcError(
                f"ONNX node {label!r} ({node.op_type}): {problem}", where=where, hint=hint
            )
        for attr in node.attribute:
            for body in [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs):
                _check_names(body, where)
    for value in (*graph.input, *graph.output, *graph.initializer):
        names, problem = _read_names(value, "name")
        problem = problem or _name_problem(names[0])
        if problem:
            raise XbarcError(f"graph {graph.name!r}: {problem}", where=where, hint=hint)


def _read_names(proto, *fields: str) -> tuple[tuple, str]:
    """The names in `fields` of `proto` (a name, or a list of names each), or why not."""
    try:
        names: list = []
        for field in fields:
            value = getattr(proto, field)
            names.extend([value] if isinstance(value, str | bytes) else value)
        return tuple(names), ""
    except Exception:  # TypeError, UnicodeDecodeError, a warning made an error
        return (), "a name is not UTF-8 text"


def _name_problem(name: str | bytes) -> str:
    if not isinstance(name, str):
        return f"name {name!r} is not UTF-8 text"
    if "\x00" in name:
        return f"name {name!r} holds a NUL"
    return ""


def check_mapped_weights(graph: Graph, where: str) -> None:
    """The weights and biases of the nodes lowering maps onto crossbars hold finite numbers
    and at least one element: a NaN or an infinity cannot be quantized to levels, and an
    empty matrix is no layer. Errors name the ONNX node, its op and the tensor."""
    from xbarc.frontend.mapping import is_crossbar_layer  # mapping imports fold, fold this

    for node in graph.nodes():
        if not is_crossbar_layer(graph, node):
            continue
        weight = graph.constants[node.input(1)]
        if weight.size == 0:
            raise _node_error(
                node,
                f"its weight {node.input(1)!r} has no elements (shape {list(weight.shape)})",
                where,
                "a layer needs at least one input and one output; remove the node",
            )
        _check_finite(node, "weight", node.input(1), weight, where)
        bias = node.input(2) if len(node.inputs) > 2 else ""
        if bias in graph.constants:
            _check_finite(node, "bias", bias, graph.constants[bias], where)


def check_layer_weights(program: Program, where: str) -> None:
    """The same for every crossbar layer of the lowered program (control-flow regions and
    recurrent layers included), by the ONNX node(s) each came from."""
    for layer in program.layers():
        for what, tensor in (("weight", layer.weight), ("bias", layer.bias)):
            data = None if tensor is None else program.store.get(tensor)
            if data is not None and data.dtype.kind == "f" and not np.isfinite(data).all():
                raise XbarcError(
                    f"ONNX node {layer.source or layer.name}: its {what} holds NaN or infinite "
                    "values, which crossbars cannot hold",
                    where=where,
                    hint="fix the model's weights (a NaN often comes from a diverged training run)",
                )


def _check_finite(node: Node, what: str, name: str, data: np.ndarray, where: str) -> None:
    if data.dtype.kind in "fc" and not np.isfinite(data).all():
        at = [int(i) for i in np.argwhere(~np.isfinite(data))[0]]
        raise _node_error(
            node,
            f"its {what} {name!r} holds NaN or infinite values ({data[tuple(at)]} at {at})",
            where,
            "fix the model's weights (a NaN often comes from a diverged training run)",
        )


def _node_error(node: Node, message: str, where: str, hint: str) -> XbarcError:
    return XbarcError(
        f"ONNX node {node.name!r} ({node.op_type}): {message}", where=where, hint=hint
    )


def _read_initializers(graph: GraphProto, where: str) -> dict[str, np.ndarray]:
    constants: dict[str, np.ndarray] = {}
    name = ""
    try:
        for tensor in graph.initializer:
            name = tensor.name
            constants[name] = to_array(tensor)
        for sparse in graph.sparse_initializer:
            name = sparse.values.name
            constants[name] = _dense(sparse)
    except Exception as error:  # a wrong data size, bad sparse indices, an unknown type...
        raise XbarcError(
            f"initializer {name!r} cannot be read ({_first_line(error)})",
            where=where,
            hint="the model is corrupt; export it again",
        ) from None
    return constants


def to_array(tensor: TensorProto) -> np.ndarray:
    """The numpy array of an ONNX tensor; strings become numpy unicode, not objects."""
    array = numpy_helper.to_array(tensor)
    if array.dtype != object:
        return array
    texts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.flat]
    return np.array(texts, dtype=str).reshape(array.shape)


def _dense(sparse: SparseTensorProto) -> np.ndarray:
    values = to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dense = np.zeros(tuple(sparse.dims), dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


# --- shape inference -------------------------------------------------------------------


def infer_types(graph: Graph, model: ModelProto, where: str) -> dict[str, TensorType]:
    """Types of all values of `graph` that ONNX shape inference can find."""
    skeleton = _skeleton(graph, model)
    try:
        inferred = onnx.shape_inference.infer_shapes(
            skeleton, check_type=False, strict_mode=False, data_prop=True
        )
    except Exception as error:
        raise XbarcError(
            f"ONNX shape inference failed: {_first_line(error)}",
            where=where,
            hint="check that the model runs in onnxruntime",
        ) from None
    types = dict(graph.inputs)
    for value in (*inferred.graph.value_info, *inferred.graph.output):
        found = tensor_type(value.type)
        if found is not None:
            types[value.name] = found
    for value in _subgraph_values(inferred.graph):  # for the size of the work inside
        found = tensor_type(value.type)
        if found is not None:
            types.setdefault(value.name, found)
    return types


def _subgraph_values(graph: GraphProto) -> Iterator[ValueInfoProto]:
    """The typed values inside the subgraphs of `graph`'s nodes, at any depth."""
    for node in graph.node:
        for attr in node.attribute:
            bodies = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            for body in bodies:
                yield from (*body.input, *body.value_info, *body.output)
                yield from _subgraph_values(body)


def _skeleton(graph: Graph, model: ModelProto) -> ModelProto:
    """A model with the graph's nodes whose large constants are typed inputs, not data."""
    nodes = graph.nodes()
    used = {v for node in nodes for v in (*node.inputs, *node.implicit_inputs) if v}
    used |= set(graph.outputs)
    inputs = [_input_value_info(name, t) for name, t in graph.inputs.items()]
    initializers = []
    for name, array in graph.constants.items():
        if name not in used:
            continue
        initializer = _small_initializer(name, array)
        if initializer is None:
            inputs.append(_value_info(name, TensorType(element_type(array), array.shape)))
        else:
            initializers.append(initializer)
    outputs = [ValueInfoProto(name=name) for name in graph.outputs]
    body = helper.make_graph(
        [node.to_proto() for node in nodes], "skeleton", inputs, outputs, initializers
    )
    return helper.make_model(
        body,
        ir_version=max(model.ir_version, 4),  # from IR 4 initializers need not be inputs
        opset_imports=list(model.opset_import),
        functions=list(model.functions),
    )


def _small_initializer(name: str, array: np.ndarray) -> TensorProto | None:
    if array.size > INFERENCE_CONSTANT_LIMIT:
        return None
    try:
        return numpy_helper.from_array(np.asarray(array), name)
    except Exception:  # exotic element types: declare them by type instead
        return None


def _input_value_info(name: str, declared: TensorType) -> ValueInfoProto:
    """A graph input's type; an unknown leading dimension is the batch (`BATCH_DIM`)."""
    if not declared.shape or declared.shape[0] is not None:
        return _value_info(name, declared)
    shape = (BATCH_DIM, *declared.shape[1:])
    return helper.make_tensor_value_info(name, onnx_code(declared.dtype), shape)


def batch_free(inputs: Mapping[str, TensorType]) -> dict[str, TensorType]:
    """The inputs with their leading (batch) dimension unknown, so that folding keeps what
    depends on the batch (`Shape(x)[0:1]`) as computation and the program runs any batch."""
    return {
        name: TensorType(t.dtype, (None, *t.shape[1:])) if t.shape else t
        for name, t in inputs.items()
    }


def _value_info(name: str, declared: TensorType) -> ValueInfoProto:
    return helper.make_tensor_value_info(name, onnx_code(declared.dtype), declared.shape)


def onnx_code(dtype: str) -> int:
    """The ONNX data type of an xbarc element type name."""
    if dtype in ONNX_DTYPES:
        return ONNX_DTYPES[dtype]
    return int(dtype.removeprefix("onnx"))
