"""Control flow and recurrent layers: If (constant and data-dependent condition), Loop and
Scan holding crossbar layers, LSTM/GRU/RNN whose W and R go on crossbars.

Each model is built here with onnx.helper; `ideal` is checked against onnxruntime (the
onnx reference evaluator for layout 1, which onnxruntime does not run), every profile
runs, and in `quant` every call of every crossbar layer (once per branch taken, once per
loop iteration) is checked bit for bit against the independent numpy reference of
tests/test_runtime.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_models import make_model, random, run_onnxruntime, save, tanh_loop_model
from tests.test_runtime import quant_layer_reference
from xbarc.cli import main
from xbarc.compiler import CompileOptions, compile_onnx
from xbarc.diagnostics import XbarcError
from xbarc.ir.parser import parse_program
from xbarc.ir.printer import print_program
from xbarc.ir.tile import CrossbarLayer, DigitalOp
from xbarc.ir.verifier import verify
from xbarc.runtime.executor import Executor
from xbarc.runtime.noise import Seeds, noise_settings

PIPELINE = "quantize{weight-bits=8,cell-bits=2},tile{rows=16,cols=8},allocate{tiles=64}"
FLOAT = TensorProto.FLOAT


def branch(name, nodes, output) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, FLOAT, None)])


def compiled(model, tmp_path, pipeline=PIPELINE):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return compile_onnx(save(model, tmp_path), CompileOptions(pipeline=pipeline))


def recorded_layer_calls(executor: Executor, monkeypatch) -> list:
    """(layer, input, output) of every crossbar layer the executor runs."""
    calls = []
    run_layer = executor.run_layer

    def recording(layer, x):
        y = run_layer(layer, x)
        calls.append((layer, np.array(x), np.array(y)))
        return y

    monkeypatch.setattr(executor, "run_layer", recording)
    return calls


def check_every_profile(program, model, feeds, monkeypatch, reference=None):
    """ideal equals onnxruntime (or `reference`); quant equals the numpy reference layer
    call by layer call; rram runs, deterministically from its seed. The layer calls."""
    want = reference if reference is not None else run_onnxruntime(model, feeds)
    ideal = Executor(program).run(feeds)
    for name, expected in zip(program.outputs, want, strict=True):
        scale = np.abs(expected).max()
        np.testing.assert_allclose(ideal[name], expected, rtol=1e-4, atol=1e-5 * scale)
    quant = Executor(program, noise_settings("quant"))
    calls = recorded_layer_calls(quant, monkeypatch)
    quantized = quant.run(feeds)
    assert calls
    for layer, x, y in calls:
        expected_y = quant_layer_reference(program, layer, x, 8)
        np.testing.assert_array_equal(y, expected_y, err_msg=layer.name)
    for name, expected in zip(program.outputs, want, strict=True):
        assert quantized[name].shape == expected.shape
        error = np.abs(quantized[name] - expected).max() / np.abs(expected).max()
        assert 0 < error < 0.2, name
    first = Executor(program, noise_settings("rram"), Seeds.derive(3)).run(feeds)
    again = Executor(program, noise_settings("rram"), Seeds.derive(3)).run(feeds)
    for name in program.outputs:
        assert np.isfinite(first[name]).all()
        np.testing.assert_array_equal(first[name], again[name])
    return calls


# --- If ------------------------------------------------------------------------------------


def if_model(condition_nodes) -> onnx.ModelProto:
    """y = If(c) { GlobalAveragePool(Relu(Conv(x, w))) } else { Flatten(x) @ m }."""
    then_branch = branch(
        "then",
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["t"]),
        ],
        "t",
    )
    else_branch = branch(
        "else",
        [
            helper.make_node("Flatten", ["x"], ["flat"]),
            helper.make_node("MatMul", ["flat", "m"], ["e"]),
        ],
        "e",
    )
    nodes = [
        *condition_nodes,
        helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    weights = {"w": random((5, 2, 3, 3), 1), "m": random((2 * 4 * 4, 5), 2), "zero": np.float32(0)}
    return make_model(nodes, [("x", [2, 2, 4, 4])], ["y"], weights)


DATA_CONDITION = [
    helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
    helper.make_node("Greater", ["s", "zero"], ["c"]),
]


def test_if_with_a_constant_condition_is_inlined(tmp_path, monkeypatch):
    # the condition folds: the channels (a static dim, not the batch) equal 2
    condition = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one_index"], ["channels"], axis=0),
        helper.make_node("Equal", ["channels", "two"], ["c"]),
    ]
    model = if_model(condition)
    for name, value in {"one_index": np.int64(1), "two": np.int64(2)}.items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    program = compiled(model, tmp_path)
    assert not any(isinstance(op, DigitalOp) and op.regions for op in program.ops)
    assert [layer.name for layer in program.layers()] == ["If_3/Conv_0"]
    assert [op.op_type for op in program.ops if isinstance(op, DigitalOp)] == [
        "Relu",
        "GlobalAveragePool",
        "Flatten",
    ]
    feeds = {"x": random((2, 2, 4, 4), 5)}
    check_every_profile(program, model, feeds, monkeypatch)


def test_inlining_reads_outer_values_and_names_nodes_after_the_if(tmp_path):
    """The taken branch's nodes read the enclosing values, its initializer becomes a
    constant, the value it returns is the If's output, and its nodes are named
    "<If>/<node>"."""
    then_branch = helper.make_graph(
        [helper.make_node("Add", ["x", "k"], ["inner"]), helper.make_node("Neg", ["inner"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", FLOAT, None)],
        [numpy_helper.from_array(random((3,), 3), "k")],
    )
    else_branch = branch("else", [helper.make_node("Identity", ["x"], ["e"])], "e")
    nodes = [
        helper.make_node("Neg", ["x"], ["n"], name="neg"),
        helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Add", ["y", "n"], ["z"], name="add"),
    ]
    for taken, name in ((True, "then"), (False, "else")):
        model = make_model(nodes, [("x", [3])], ["z"], {"c": np.array(taken)})
        program = compiled(model, tmp_path / name, "quantize")
        verify(program)
        results = {output: op.name for op in program.ops for output in op.outputs}
        if taken:
            assert results["inner"] == "If_1/Add_0" and results["y"] == "If_1/Neg_1"
        assert "t" not in results and "e" not in results
        feeds = {"x": random((3,), 4)}
        got = Executor(program).run(feeds)["z"]
        np.testing.assert_allclose(got, run_onnxruntime(model, feeds)[0], rtol=1e-6)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_if_with_a_data_condition_runs_the_taken_branch_on_the_chip(sign, tmp_path, monkeypatch):
    model = if_model(DATA_CONDITION)
    program = compiled(model, tmp_path)
    (op,) = [op for op in program.ops if isinstance(op, DigitalOp) and op.regions]
    assert [region.name for region in op.regions] == ["then_branch", "else_branch"]
    layers = {layer.name: layer for layer in program.layers()}
    assert set(layers) == {"If_2/then_branch/Conv_0", "If_2/else_branch/MatMul_1"}
    assert all(program.weights_of(name) is not None for name in layers)
    feeds = {"x": (sign * np.abs(random((2, 2, 4, 4), 6))).astype(np.float32)}
    calls = check_every_profile(program, model, feeds, monkeypatch)
    taken = "If_2/then_branch/Conv_0" if sign > 0 else "If_2/else_branch/MatMul_1"
    assert [layer.name for layer, _, _ in calls] == [taken]


def test_program_with_regions_round_trips_and_inspect_lists_their_layers(tmp_path, capsys):
    model = if_model(DATA_CONDITION)
    path = save(model, tmp_path)
    output = tmp_path / "if.xbar"
    assert main(["compile", str(path), "--tiles", "64", "-o", str(output)]) == 0
    text = output.read_text()
    assert "region then_branch () {" in text and "region else_branch () {" in text
    parsed = parse_program(text).program
    assert print_program(parsed) == text
    capsys.readouterr()
    assert main(["inspect", str(output)]) == 0
    table = capsys.readouterr().out
    rows = [line.split() for line in table.split("\ntotal")[0].splitlines()]
    names = {row[0]: row[1] for row in rows if row and row[0].startswith("If_2/")}
    assert names == {"If_2/then_branch/Conv_0": "conv", "If_2/else_branch/MatMul_1": "matmul"}
    # ReduceSum, Greater, If; Relu, GlobalAveragePool, Flatten; Flatten
    assert "2 crossbar layers, 7 digital ops" in table


def test_verifier_checks_region_scopes(tmp_path):
    program = compiled(if_model(DATA_CONDITION), tmp_path, "quantize")
    (op,) = [op for op in program.ops if isinstance(op, DigitalOp) and op.regions]
    then_branch = op.region("then_branch")
    broken = dataclasses.replace(then_branch, outputs=("e",))  # the other branch's value
    bad_op = dataclasses.replace(op, regions=(broken, op.region("else_branch")))
    ops = tuple(bad_op if o is op else o for o in program.ops)
    with pytest.raises(XbarcError, match="region then_branch returns %e, which it cannot see"):
        verify(dataclasses.replace(program, ops=ops))
    renamed = dataclasses.replace(op, regions=(dataclasses.replace(then_branch, name="body"),))
    ops = tuple(renamed if o is op else o for o in program.ops)
    with pytest.raises(XbarcError, match="op If cannot hold a region named 'body'"):
        verify(dataclasses.replace(program, ops=ops))


# --- Loop and Scan ---------------------------------------------------------------------------


def test_loop_runs_its_matmul_once_per_iteration(tmp_path, monkeypatch):
    """h_{k+1} = Tanh(h_k @ w + x) for 3 iterations, every h_k a scan output."""
    model = tanh_loop_model(random((6, 6), 7))
    program = compiled(model, tmp_path)
    (layer,) = program.layers()
    assert layer.name == "Loop_0/body/MatMul_0" or layer.name.endswith("MatMul_0")
    feeds = {"x": random((2, 6), 8), "h0": random((2, 6), 9)}
    calls = check_every_profile(program, model, feeds, monkeypatch)
    assert [call[0].name for call in calls] == [layer.name] * 3


def test_scan_runs_its_matmul_per_slice_in_both_directions(tmp_path, monkeypatch):
    """s_t = Tanh(x_t @ w + s_{t-1}) over a forward and a reversed scan input."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_t", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "s"], ["pre"]),
            helper.make_node("Add", ["pre", "r_t"], ["pre2"]),
            helper.make_node("Tanh", ["pre2"], ["s_next"]),
            helper.make_node("Identity", ["s_next"], ["out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("s", FLOAT, [1, 4]),
            helper.make_tensor_value_info("x_t", FLOAT, [1, 5]),
            helper.make_tensor_value_info("r_t", FLOAT, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("s_next", FLOAT, [1, 4]),
            helper.make_tensor_value_info("out", FLOAT, [1, 4]),
        ],
    )
    scan = helper.make_node(
        "Scan",
        ["s0", "xs", "rs"],
        ["s_last", "outs"],
        body=body,
        num_scan_inputs=2,
        scan_input_directions=[0, 1],
        scan_output_axes=[1],
    )
    inputs = [("s0", [1, 4]), ("xs", [6, 1, 5]), ("rs", [6, 1, 4])]
    model = make_model([scan], inputs, ["s_last", "outs"], {"w": random((5, 4), 10)})
    program = compiled(model, tmp_path)
    (layer,) = program.layers()
    feeds = {"s0": random((1, 4), 11), "xs": random((6, 1, 5), 12), "rs": random((6, 1, 4), 13)}
    calls = check_every_profile(program, model, feeds, monkeypatch)
    assert len(calls) == 6


# --- LSTM, GRU, RNN -------------------------------------------------------------------------


def recurrent_model(op_type, direction="forward", layout=0, initial=True, **attrs):
    steps, batch, size, hidden = 5, 2, 6, 4
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op_type]
    directions = 2 if direction == "bidirectional" else 1
    weights = {
        "W": 0.5 * random((directions, gates * hidden, size), 20),
        "R": 0.5 * random((directions, gates * hidden, hidden), 21),
        "B": 0.5 * random((directions, 2 * gates * hidden), 22),
    }
    sequence = [steps, batch, size] if layout == 0 else [batch, steps, size]
    state = [directions, batch, hidden] if layout == 0 else [batch, directions, hidden]
    inputs = [("x", sequence)]
    node_inputs = ["x", "W", "R", "B", "", "h0" if initial else ""]
    if initial:
        inputs.append(("h0", state))
    outputs = ["y", "y_h"]
    if op_type == "LSTM":
        node_inputs.append("c0" if initial else "")
        if initial:
            inputs.append(("c0", state))
        outputs.append("y_c")
    node = helper.make_node(
        op_type, node_inputs, outputs, hidden_size=hidden, direction=direction, **attrs
    )
    if layout:
        node.attribute.append(helper.make_attribute("layout", layout))
    return make_model([node], inputs, outputs, weights, opset=14)


def feeds_for(model) -> dict[str, np.ndarray]:
    return {
        value.name: random(tuple(d.dim_value for d in value.type.tensor_type.shape.dim), 30 + i)
        for i, value in enumerate(model.graph.input)
    }


RECURRENT_CASES = {
    "lstm forward": ("LSTM", {}),
    "lstm bidirectional": ("LSTM", {"direction": "bidirectional"}),
    "lstm reverse, no initial state": ("LSTM", {"direction": "reverse", "initial": False}),
    "gru forward": ("GRU", {}),
    "gru bidirectional, linear before reset": (
        "GRU",
        {"direction": "bidirectional", "linear_before_reset": 1},
    ),
    "rnn forward": ("RNN", {}),
    "rnn reverse, relu": ("RNN", {"direction": "reverse", "activations": ["Relu"]}),
}


@pytest.mark.parametrize("case", RECURRENT_CASES)
def test_recurrent_layers_map_w_and_r_onto_crossbars(case, tmp_path, monkeypatch):
    op_type, options = RECURRENT_CASES[case]
    model = recurrent_model(op_type, **options)
    program = compiled(model, tmp_path)
    layers = list(program.layers())
    directions = 2 if options.get("direction") == "bidirectional" else 1
    # W over the whole sequence, R inside the Loop (GRU: R of the update and reset gates,
    # then R of the candidate on the reset state, unless linear_before_reset)
    per_direction = 3 if op_type == "GRU" and not options.get("linear_before_reset") else 2
    assert len(layers) == per_direction * directions
    loops = [op for op in program.ops if isinstance(op, DigitalOp) and op.op_type == "Loop"]
    assert len(loops) == directions
    in_loops = {op.name for loop in loops for op in loop.region("body").ops}
    assert sum(layer.name in in_loops for layer in layers) == (per_direction - 1) * directions
    top = [op for op in program.ops if isinstance(op, CrossbarLayer)]
    assert [layer.rows for layer in top] == [6] * directions  # W: [input size, gates*H]
    feeds = feeds_for(model)
    calls = check_every_profile(program, model, feeds, monkeypatch)
    assert len(calls) == directions * (1 + 5 * (per_direction - 1))  # R once per step


@pytest.mark.parametrize("op_type", ["LSTM", "GRU"])
def test_recurrent_layout_1_matches_the_onnx_reference(op_type, tmp_path, monkeypatch):
    from onnx.reference import ReferenceEvaluator

    model = recurrent_model(op_type, direction="bidirectional", layout=1)
    feeds = feeds_for(model)
    want = ReferenceEvaluator(model).run(None, feeds)
    program = compiled(model, tmp_path)
    check_every_profile(program, model, feeds, monkeypatch, reference=want)


def test_lstm_with_peepholes_matches_onnxruntime(tmp_path, monkeypatch):
    model = recurrent_model("LSTM")
    node = model.graph.node[0]
    node.input.append("P")
    model.graph.initializer.append(numpy_helper.from_array(random((1, 12), 23), "P"))
    program = compiled(model, tmp_path)
    check_every_profile(program, model, feeds_for(model), monkeypatch)


@pytest.mark.parametrize(
    "attrs, fragment",
    [
        ({"clip": 1.0}, "it clips its cell inputs"),
        ({"input_forget": 1}, "input_forget"),
        ({"activations": ["Sigmoid", "HardSigmoid", "Tanh"]}, "activation HardSigmoid"),
    ],
)
def test_unsupported_recurrent_options_are_refused_naming_the_node(attrs, fragment, tmp_path):
    model = recurrent_model("LSTM", **attrs)
    model.graph.node[0].name = "encoder_lstm"
    with pytest.raises(XbarcError, match=fragment) as error:
        compiled(model, tmp_path)
    message = str(error.value)
    assert '"encoder_lstm" (LSTM)' in message and len(message.splitlines()) == 1


def test_sequence_lens_equal_to_the_length_are_accepted_others_refused(tmp_path):
    model = recurrent_model("GRU")
    model.graph.node[0].input[4] = "lens"
    model.graph.initializer.append(numpy_helper.from_array(np.array([5, 5], np.int32), "lens"))
    program = compiled(model, tmp_path / "full")
    feeds = feeds_for(model)
    got = Executor(program).run(feeds)
    for name, want in zip(program.outputs, run_onnxruntime(model, feeds), strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5)
    short = numpy_helper.from_array(np.array([5, 3], np.int32), "lens")
    model.graph.initializer[-1].CopyFrom(short)
    with pytest.raises(XbarcError, match="sequence_lens"):
        compiled(model, tmp_path / "short")


# --- a Silero-VAD-like stand-in: the whole network inside an If on an input ---------------


def lstm_branch(name: str, seed: int) -> tuple[onnx.GraphProto, dict[str, np.ndarray]]:
    """p = Sigmoid(last h of LSTM(x) @ head), with a shape If inside that folds away."""
    prefix = f"{name}_"
    nodes = [
        helper.make_node("Shape", ["x"], [prefix + "shape"]),
        helper.make_node("Gather", [prefix + "shape", "zero_index"], [prefix + "t"], axis=0),
        helper.make_node("Equal", [prefix + "t", "five"], [prefix + "is_five"]),
        helper.make_node(
            "If",
            [prefix + "is_five"],
            [prefix + "seq"],
            then_branch=branch(
                prefix + "then",
                [helper.make_node("Identity", ["x"], [prefix + "same"])],
                prefix + "same",
            ),
            else_branch=branch(
                prefix + "else", [helper.make_node("Neg", ["x"], [prefix + "neg"])], prefix + "neg"
            ),
        ),
        helper.make_node(
            "LSTM",
            [prefix + "seq", prefix + "W", prefix + "R", prefix + "B"],
            ["", prefix + "h"],
            hidden_size=4,
        ),
        helper.make_node("Reshape", [prefix + "h", "flat_shape"], [prefix + "flat"]),
        helper.make_node("MatMul", [prefix + "flat", prefix + "head"], [prefix + "logit"]),
        helper.make_node("Sigmoid", [prefix + "logit"], [prefix + "p"]),
    ]
    weights = {
        prefix + "W": 0.5 * random((1, 16, 6), seed),
        prefix + "R": 0.5 * random((1, 16, 4), seed + 1),
        prefix + "B": 0.5 * random((1, 32), seed + 2),
        prefix + "head": random((4, 1), seed + 3),
    }
    graph = branch(name, nodes, prefix + "p")
    return graph, weights


def test_network_inside_an_if_on_an_input_runs_either_branch_on_the_chip(tmp_path, monkeypatch):
    then_branch, then_weights = lstm_branch("fast", 40)
    else_branch, else_weights = lstm_branch("slow", 50)
    nodes = [
        helper.make_node("Equal", ["sr", "rate"], ["c"]),
        helper.make_node("If", ["c"], ["p"], then_branch=then_branch, else_branch=else_branch),
    ]
    constants = {
        **then_weights,
        **else_weights,
        "rate": np.int64(16000),
        "zero_index": np.int64(0),
        "five": np.int64(5),
        "flat_shape": np.array([2, 4], np.int64),
    }
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", FLOAT, [5, 2, 6]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("p", FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    program = compiled(model, tmp_path)
    (op,) = [op for op in program.ops if isinstance(op, DigitalOp) and op.regions]
    for region in op.regions:
        # the shape If folded away; W and the head on crossbars, R inside the Loop
        assert not any(isinstance(o, DigitalOp) and o.op_type == "If" for o in region.ops)
        (loop,) = [o for o in region.ops if isinstance(o, DigitalOp) and o.op_type == "Loop"]
        assert sum(isinstance(o, CrossbarLayer) for o in loop.region("body").ops) == 1
        assert sum(isinstance(o, CrossbarLayer) for o in region.ops) == 2
    assert len(list(program.layers())) == 6
    for rate in (16000, 8000):
        feeds = {"x": random((5, 2, 6), 60), "sr": np.array(rate, np.int64)}
        calls = check_every_profile(program, model, feeds, monkeypatch)
        branch_name = "then_branch" if rate == 16000 else "else_branch"
        names = {o.name for o in op.region(branch_name).ops} | {
            o.name
            for loop in op.region(branch_name).ops
            if isinstance(loop, DigitalOp) and loop.regions
            for o in loop.region("body").ops
        }
        assert {layer.name for layer, _, _ in calls} <= names
        assert len(calls) == 1 + 5 + 1  # W, R per step, the head


def test_calibration_measures_the_layers_of_the_branches_taken(tmp_path):
    from xbarc.calibrate import calibrate

    program = compiled(if_model(DATA_CONDITION), tmp_path)
    positive = np.abs(random((8, 2, 4, 4), 70))
    calibrated = calibrate(program, {"x": positive}, batch_size=2)
    assert calibrated.calibration is not None
    ranges = {entry.layer: entry for entry in calibrated.calibration.layers}
    assert set(ranges) == {layer.name for layer in program.layers()}
    taken = ranges["If_2/then_branch/Conv_0"]
    assert taken.input_range == pytest.approx(np.percentile(positive, 99.99), rel=0.05)
    assert ranges["If_2/else_branch/MatMul_1"].input_range == 1.0  # never ran


def test_effective_model_holds_regions_as_subgraphs(tmp_path):
    """The programmed chip as one ONNX model: regions become the If's subgraphs, holding
    their layers' effective weights; onnxruntime runs it to the same answers."""
    import onnxruntime

    from xbarc.runtime.effective import effective_model

    model = if_model(DATA_CONDITION)
    program = compiled(model, tmp_path)
    executor = Executor(program)
    exported = effective_model(program, executor.effective_weights)
    (if_node,) = [node for node in exported.graph.node if node.op_type == "If"]
    subgraphs = {attr.name: attr.g for attr in if_node.attribute}
    assert [n.op_type for n in subgraphs["else_branch"].node] == ["Flatten", "MatMul"]
    session = onnxruntime.InferenceSession(
        exported.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for sign in (1.0, -1.0):
        x = (sign * np.abs(random((2, 2, 4, 4), 80))).astype(np.float32)
        (got,) = session.run(None, {"x": x})
        (want,) = run_onnxruntime(model, {"x": x})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("op_type", ["LSTM", "GRU", "RNN"])
def test_recurrent_rewrite_means_the_same_at_opset_9(op_type, tmp_path):
    model = recurrent_model(op_type, direction="bidirectional")
    model.opset_import[0].version = 9
    program = compiled(model, tmp_path)
    assert all(op.opset == 9 for op in program.ops if isinstance(op, DigitalOp))
    feeds = feeds_for(model)
    got = Executor(program).run(feeds)
    for name, want in zip(program.outputs, run_onnxruntime(model, feeds), strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5)


def test_sibling_branches_defining_the_same_names_get_them_apart(tmp_path):
    """Value names are unique in the whole program: the second branch's clashing values
    are renamed, and both branches still compute what onnxruntime does."""
    flatten = helper.make_node("Flatten", ["x"], ["flat"])
    then_branch = branch(
        "then", [flatten, helper.make_node("MatMul", ["flat", "m"], ["out"])], "out"
    )
    else_nodes = [
        flatten,
        helper.make_node("Neg", ["flat"], ["n"]),
        helper.make_node("MatMul", ["n", "m"], ["out"]),
    ]
    else_branch = branch("else", else_nodes, "out")
    nodes = [
        *DATA_CONDITION,
        helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    weights = {"m": random((32, 5), 2), "zero": np.float32(0)}
    model = make_model(nodes, [("x", [2, 2, 4, 4])], ["y"], weights)
    program = compiled(model, tmp_path)
    verify(program)
    (op,) = [op for op in program.ops if isinstance(op, DigitalOp) and op.regions]
    assert op.region("then_branch").outputs == ("out",)
    assert op.region("else_branch").outputs == ("out_1",)
    for sign in (1.0, -1.0):
        x = (sign * np.abs(random((2, 2, 4, 4), 3))).astype(np.float32)
        (want,) = run_onnxruntime(model, {"x": x})
        np.testing.assert_allclose(Executor(program).run({"x": x})["y"], want, rtol=1e-5)


# --- the host's control-flow semantics, on their own ------------------------------------------


def control(op_type, inputs, regions, outputs, output_types=None, **attributes):
    from xbarc.ir.tile import Attribute, GraphInput, Region
    from xbarc.ir.types import TensorType

    f32 = TensorType("f32", (2,))
    made = [
        Region(name, tuple(GraphInput(i, f32) for i in formal), (), returned)
        for name, formal, returned in regions
    ]
    return DigitalOp(
        name="c",
        op_type=op_type,
        domain="",
        opset=17,
        inputs=(),
        outputs=outputs,
        output_types=output_types or (None,) * len(outputs),
        attributes=tuple(
            Attribute(k, "ints" if isinstance(v, tuple) else "int", v)
            for k, v in attributes.items()
        ),
        regions=tuple(made),
    )


def test_loop_stops_on_its_condition_and_stacks_scan_outputs():
    from xbarc.runtime.control import run_control

    op = control("Loop", [], [("body", ("i", "cond", "v"), ("c", "v2", "s"))], ("v", "s"))

    def body(region, bound):
        i, _, v = bound
        return [np.array(i < 2), v * 2, np.full(2, float(i))]

    v, s = run_control(op, [None, np.array(True), np.ones(2)], body)
    np.testing.assert_array_equal(v, [8.0, 8.0])  # iterations 0, 1, 2: the third stops it
    np.testing.assert_array_equal(s, [[0, 0], [1, 1], [2, 2]])
    with pytest.raises(XbarcError, match="neither a trip count nor a condition"):
        run_control(op, [None, None, np.ones(2)], body)


def test_loop_with_no_iteration_gives_empty_scan_outputs_of_the_declared_shape():
    from xbarc.ir.types import TensorType
    from xbarc.runtime.control import run_control

    types = (TensorType("f32", (2,)), TensorType("f32", (None, 3)))
    op = control("Loop", [], [("body", ("i", "cond", "v"), ("c", "v2", "s"))], ("v", "s"), types)
    v, s = run_control(op, [np.array(0, np.int64), None, np.ones(2)], lambda r, b: [])
    np.testing.assert_array_equal(v, [1.0, 1.0])
    assert s.shape == (0, 3) and s.dtype == np.float32


def test_scan_takes_slices_along_its_axes_and_directions():
    from xbarc.runtime.control import run_control

    op = control(
        "Scan",
        [],
        [("body", ("state", "x", "y"), ("state2", "out"))],
        ("state", "outs"),
        num_scan_inputs=2,
        scan_input_axes=(1, 0),
        scan_input_directions=(0, 1),
        scan_output_directions=(1,),
    )
    xs = np.arange(6.0).reshape(2, 3)  # scanned along axis 1: columns 0, 1, 2
    ys = np.arange(3.0) * 10  # scanned backwards: 20, 10, 0
    seen = []

    def body(region, bound):
        state, x, y = bound
        seen.append((x.tolist(), float(y)))
        return [state + x.sum() + y, state]

    state, outs = run_control(op, [np.array(0.0), xs, ys], body)
    assert seen == [([0.0, 3.0], 20.0), ([1.0, 4.0], 10.0), ([2.0, 5.0], 0.0)]
    assert float(state) == 3 + 20 + 5 + 10 + 7 + 0
    np.testing.assert_array_equal(outs, [38.0, 23.0, 0.0])  # states before each step, reversed


def test_layers_in_regions_spread_over_phases_still_compute_the_model(tmp_path, monkeypatch):
    """With too few tiles for all layers at once, the regions' layers sit in different
    phases (all programmed before the graph runs, each read from its own phase's tiles)."""
    model = recurrent_model("GRU", direction="bidirectional")
    pipeline = "quantize{weight-bits=8,cell-bits=2},tile{rows=8,cols=8},allocate{tiles=4}"
    program = compiled(model, tmp_path, pipeline)
    assert len(program.phases) > 1
    phases_of = {run.layer: phase.index for phase in program.phases for run in phase.runs}
    assert len(set(phases_of.values())) > 1
    check_every_profile(program, model, feeds_for(model), monkeypatch)
