"""Recurrent layers (LSTM, GRU, RNN) rewritten so that their weight matrices go on crossbars.

    LSTM(X, W, R, B, _, initial_h, initial_c)
      -> per direction d:
           XW_d = MatMul(X_d, W_d^T) + (Wb_d + Rb_d)     # a crossbar layer over the whole
                                                         # sequence: one [T*B, in] product
           Loop(T, true, h0_d, c0_d) body(t, cond, h, c):
               g = Gather(XW_d, t) + MatMul(h, R_d^T)    # R: a crossbar layer, run once per
               i, o, f, c~ = gates of g                  # time step inside the Loop region
               c' = f * c + i * c~;  h' = o * tanh(c')
           -> h_T, c_T, Y_d [T, B, H]
      -> Y = Concat_d(Y_d as [T, 1, B, H]), Y_h = Concat_d(h_T), Y_c = Concat_d(c_T)

The gates, activations and the state stay digital (ops of the Loop body); only the input
and recurrent matrices W and R become crossbar layers. The semantics are ONNX's:
directions forward, reverse (the sequence taken back to front, its outputs put back in
order) and bidirectional; initial states; biases; LSTM peepholes; GRU's
linear_before_reset; `layout` 1 (batch first). Refused with a message naming the node:
`sequence_lens` that differ from the sequence length, `clip`, LSTM `input_forget`,
activations other than Sigmoid, Tanh and Relu (or with alpha/beta), and non-float32
weights. A layer whose weights are computed at run time, or whose input sequence has no
static shape (e.g. in a branch that is not valid for the given input shapes and so never
runs), stays a digital op.

Only opset-stable ops are used (Gather, MatMul, Add, Mul, Sub, the activations, Identity,
Reshape with a constant shape, Concat, Transpose, Loop), so the rewrite means the same at
every opset from 9 on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import GraphProto, NodeProto, TensorProto, helper

from xbarc.diagnostics import XbarcError
from xbarc.ir.graph import Graph, Node, node_from_proto, unique_name

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {
    "LSTM": ("Sigmoid", "Tanh", "Tanh"),
    "GRU": ("Sigmoid", "Tanh"),
    "RNN": ("Tanh",),
}
ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}


def expand_recurrent_layers(graph: Graph, where: str) -> bool:
    """Rewrite every LSTM, GRU and RNN with constant weights as above; True if any."""
    changed = False
    for node in graph.live_nodes():
        if node.op_type not in RECURRENT_OPS or not node.is_default_domain:
            continue
        weight, recurrence = graph.constants.get(node.input(1)), graph.constants.get(node.input(2))
        if weight is None or recurrence is None:
            continue  # weights computed at run time: the layer stays digital
        known = graph.type_of(node.input(0))
        if known is None or not known.is_static or len(known.static_shape()) != 3:
            # a sequence of unknown shape (or of a branch not valid for these input
            # shapes, which never runs) stays a digital op
            continue
        _Expansion(graph, node, where).expand(weight, recurrence)
        changed = True
    return changed


class _Expansion:
    """The nodes, constants and names of one recurrent layer's rewrite."""

    def __init__(self, graph: Graph, node: Node, where: str):
        self.graph = graph
        self.node = node
        self.where = where
        self.op_type = node.op_type
        self.hidden = int(node.attribute("hidden_size", 0))
        self.taken = graph.value_names() | {n.name for n in graph.nodes()}
        self.nodes: list[NodeProto] = []

    # --- the whole layer ---------------------------------------------------------------

    def expand(self, weight: np.ndarray, recurrence: np.ndarray) -> None:
        node = self.node
        self._check(weight)
        directions = weight.shape[0]
        steps, batch = self._sequence_shape()
        hidden = self.hidden = recurrence.shape[-1]
        gates = GATES[self.op_type]
        bias = self._constant(3, (directions, 2 * gates * hidden))
        if bias is None:
            bias = np.zeros((directions, 2 * gates * hidden), np.float32)
        initial_h = node.input(5)
        initial_c = node.input(6) if self.op_type == "LSTM" else ""
        peepholes = self._constant(7, (directions, 3 * hidden)) if self.op_type == "LSTM" else None
        activations = self._activations(directions)
        layout = int(node.attribute("layout", 0))
        x = node.input(0)
        if layout == 1:
            x = self._op("Transpose", [x], perm=[1, 0, 2])
        reverse_order = self._const("time_reversed", np.arange(steps - 1, -1, -1, dtype=np.int64))
        ys, finals_h, finals_c = [], [], []
        for d in range(directions):
            backward = self._is_backward(d, directions)
            x_d = self._op("Gather", [x, reverse_order], axis=0) if backward else x
            step = _Step(self, d, weight[d], recurrence[d], bias[d], activations[d], batch)
            h0 = self._initial(initial_h, d, batch)
            c0 = self._initial(initial_c, d, batch) if self.op_type == "LSTM" else None
            p = None if peepholes is None else peepholes[d]
            h_last, c_last, y = step.loop(x_d, steps, h0, c0, p)
            if backward:
                y = self._op("Gather", [y, reverse_order], axis=0)
            ys.append(self._reshape(y, (steps, 1, batch, hidden)))
            finals_h.append(self._reshape(h_last, (1, batch, hidden)))
            if c_last is not None:
                finals_c.append(self._reshape(c_last, (1, batch, hidden)))
        outputs = list(node.outputs) + [""] * (3 - len(node.outputs))
        y_all = self._concat(ys, 1)
        h_all = self._concat(finals_h, 0)
        if layout == 1:
            y_all = self._op("Transpose", [y_all], perm=[2, 0, 1, 3])
            h_all = self._op("Transpose", [h_all], perm=[1, 0, 2])
        results = [y_all, h_all]
        if self.op_type == "LSTM":
            c_all = self._concat(finals_c, 0)
            if layout == 1:
                c_all = self._op("Transpose", [c_all], perm=[1, 0, 2])
            results.append(c_all)
        position = self.graph.remove(node.name)
        for result, output in zip(results, outputs, strict=False):
            if output:
                self.nodes.append(helper.make_node("Identity", [result], [output]))
        for index, proto in enumerate(self.nodes):
            name = unique_name(f"{node.name}/{proto.op_type}_{index}", self.taken)
            self.taken.add(name)
            self.graph.add(node_from_proto(proto, name), position)

    # --- checks ----------------------------------------------------------------------

    def _check(self, weight: np.ndarray) -> None:
        node = self.node
        if weight.dtype != np.float32:
            self._refuse(f"its weights are {weight.dtype}, not float32", "export it in float32")
        if node.attribute("clip") is not None:
            self._refuse("it clips its cell inputs (attribute clip)", "export it without clip")
        if node.attribute("input_forget", 0):
            self._refuse("it couples the input and forget gates (input_forget)", "")
        for name in ("activation_alpha", "activation_beta"):
            if node.attribute(name) is not None:
                self._refuse(f"its activations take parameters ({name})", "")
        lengths = node.input(4)
        if lengths:
            steps, _ = self._sequence_shape()
            given = self.graph.constants.get(lengths)
            if given is None or not np.all(given == steps):
                self._refuse(
                    "its sequences have lengths (sequence_lens) other than the full length",
                    "pad the sequences to one length, or drop sequence_lens",
                )

    def _refuse(self, why: str, hint: str) -> None:
        raise XbarcError(
            f"node {self.node.label}: cannot map the {self.op_type} onto crossbars: {why}",
            where=self.where,
            hint=hint or "export the layer without that option",
        )

    def _sequence_shape(self) -> tuple[int, int]:
        known = self.graph.type_of(self.node.input(0))
        assert known is not None  # checked by expand_recurrent_layers
        first, second, _ = known.static_shape()
        return (second, first) if self.node.attribute("layout", 0) == 1 else (first, second)

    def _activations(self, directions: int) -> list[tuple[str, ...]]:
        default = DEFAULT_ACTIVATIONS[self.op_type]
        given = self.node.attribute("activations")
        if given is None:
            return [default] * directions
        names = [a.decode() if isinstance(a, bytes) else str(a) for a in given]
        if len(names) != len(default) * directions:
            self._refuse(f"it lists {len(names)} activations", "")
        unknown = [name for name in names if name.lower() not in ACTIVATIONS]
        if unknown:
            self._refuse(
                f"activation {unknown[0]} is not one of Sigmoid, Tanh, Relu",
                "export the layer with those activations",
            )
        ops = [ACTIVATIONS[name.lower()] for name in names]
        per = len(default)
        return [tuple(ops[d * per : (d + 1) * per]) for d in range(directions)]

    def _is_backward(self, d: int, directions: int) -> bool:
        direction = self.node.attribute("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        if direction not in ("forward", "reverse", "bidirectional"):
            self._refuse(f"unknown direction {direction!r}", "")
        if (direction == "bidirectional") != (directions == 2):
            self._refuse(f"direction {direction} with weights for {directions} directions", "")
        return direction == "reverse" or (direction == "bidirectional" and d == 1)

    def _constant(self, index: int, shape: tuple[int, ...]) -> np.ndarray | None:
        name = self.node.input(index)
        if not name:
            return None
        value = self.graph.constants.get(name)
        if value is None:
            what = {3: "bias", 7: "peepholes"}.get(index, f"input {index}")
            self._refuse(f"its {what} are computed at run time", "")
        assert value is not None
        return value.reshape(shape).astype(np.float32)

    # --- building nodes ----------------------------------------------------------------

    def name(self, base: str) -> str:
        name = unique_name(f"{self.node.name}/{base}", self.taken)
        self.taken.add(name)
        return name

    def _const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.graph.constants[name] = value
        return name

    def _op(self, op_type: str, inputs: list[str], **attributes: Any) -> str:
        output = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output

    def _reshape(self, value: str, shape: tuple[int, ...]) -> str:
        return self._op("Reshape", [value, self._const("shape", np.array(shape, np.int64))])

    def _concat(self, values: list[str], axis: int) -> str:
        return values[0] if len(values) == 1 else self._op("Concat", values, axis=axis)

    def _initial(self, state: str, d: int, batch: int) -> str:
        if not state:
            return self._const("zeros", np.zeros((batch, self.hidden), np.float32))
        index = self._const("direction", np.array(d, np.int64))
        # initial states are [directions, batch, H], or [batch, directions, H] in layout 1
        axis = 1 if self.node.attribute("layout", 0) == 1 else 0
        return self._op("Gather", [state, index], axis=axis)


class _Step:
    """One direction of a recurrent layer: its input product over the whole sequence and
    the Loop whose body is one time step."""

    def __init__(
        self,
        layer: _Expansion,
        d: int,
        weight: np.ndarray,
        recurrence: np.ndarray,
        bias: np.ndarray,
        activations: tuple[str, ...],
        batch: int,
    ):
        self.layer = layer
        self.d = d
        self.weight = weight  # [gates * H, in]
        self.recurrence = recurrence  # [gates * H, H]
        self.bias = bias  # [2 * gates * H]: Wb then Rb
        self.activations = activations
        self.batch = batch
        self.hidden = layer.hidden
        self.body: list[NodeProto] = []

    def loop(
        self, x: str, steps: int, h0: str, c0: str | None, peepholes: np.ndarray | None
    ) -> tuple[str, str | None, str]:
        layer, hidden = self.layer, self.hidden
        input_bias, recurrent_bias = np.split(self.bias, 2)
        # biases that add to the input product go into it once, for the whole sequence
        folded = input_bias + recurrent_bias
        if layer.op_type == "GRU":
            folded[2 * hidden :] = input_bias[2 * hidden :]  # Rb_h sits inside the reset
            if not layer.node.attribute("linear_before_reset", 0):
                folded[2 * hidden :] += recurrent_bias[2 * hidden :]
        weight_t = layer._const(f"W{self.d}_t", np.ascontiguousarray(self.weight.T))
        product = layer._op("MatMul", [x, weight_t])
        projected = layer._op("Add", [product, layer._const(f"bias{self.d}", folded)])
        body = self._body(projected, recurrent_bias, peepholes)
        state = [h0] if c0 is None else [h0, c0]
        trip = layer._const("steps", np.array(steps, np.int64))
        always = layer._const("true", np.array(True))
        outputs = [layer.name("h_last")]
        if c0 is not None:
            outputs.append(layer.name("c_last"))
        outputs.append(layer.name("y"))
        layer.nodes.append(helper.make_node("Loop", [trip, always, *state], outputs, body=body))
        h_last = outputs[0]
        c_last = outputs[1] if c0 is not None else None
        return h_last, c_last, outputs[-1]

    # --- the body: one time step ------------------------------------------------------

    def _body(
        self, projected: str, recurrent_bias: np.ndarray, peepholes: np.ndarray | None
    ) -> GraphProto:
        layer, hidden = self.layer, self.hidden
        step, cond, h = layer.name("t"), layer.name("cond"), layer.name("h")
        inputs = [
            helper.make_tensor_value_info(step, TensorProto.INT64, []),
            helper.make_tensor_value_info(cond, TensorProto.BOOL, []),
            helper.make_tensor_value_info(h, TensorProto.FLOAT, [self.batch, hidden]),
        ]
        c = None
        if layer.op_type == "LSTM":
            c = layer.name("c")
            inputs.append(helper.make_tensor_value_info(c, TensorProto.FLOAT, [self.batch, hidden]))
        x_t = self._node("Gather", [projected, step], axis=0)
        if layer.op_type == "LSTM":
            assert c is not None
            h_new, c_new = self._lstm(x_t, h, c, peepholes)
            carried = [h_new, c_new]
        elif layer.op_type == "GRU":
            h_new = self._gru(x_t, h, recurrent_bias)
            carried = [h_new]
        else:
            h_new = self._node(self.activations[0], [self._node("Add", [x_t, self._rec(h)])])
            carried = [h_new]
        cond_out = self._node("Identity", [cond])
        scan = self._node("Identity", [h_new])
        state = [self.batch, hidden]
        outputs = [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, [])]
        outputs += [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, state)
            for name in (*carried, scan)
        ]
        return helper.make_graph(self.body, layer.name("step"), inputs, outputs)

    def _lstm(self, x_t: str, h: str, c: str, peepholes: np.ndarray | None) -> tuple[str, str]:
        f_act, g_act, h_act = self.activations
        total = self._node("Add", [x_t, self._rec(h)])
        i_pre, o_pre, f_pre, g_pre = (self._gate(total, k) for k in range(4))
        if peepholes is not None:
            p_i, p_o, p_f = np.split(peepholes, 3)
            i_pre = self._node("Add", [i_pre, self._node("Mul", [c, self._c("p_i", p_i)])])
            f_pre = self._node("Add", [f_pre, self._node("Mul", [c, self._c("p_f", p_f)])])
        i_gate = self._node(f_act, [i_pre])
        f_gate = self._node(f_act, [f_pre])
        candidate = self._node(g_act, [g_pre])
        kept = self._node("Mul", [f_gate, c])
        c_new = self._node("Add", [kept, self._node("Mul", [i_gate, candidate])])
        if peepholes is not None:
            o_pre = self._node("Add", [o_pre, self._node("Mul", [c_new, self._c("p_o", p_o)])])
        o_gate = self._node(f_act, [o_pre])
        h_new = self._node("Mul", [o_gate, self._node(h_act, [c_new])])
        return h_new, c_new

    def _gru(self, x_t: str, h: str, recurrent_bias: np.ndarray) -> str:
        f_act, g_act = self.activations
        hidden = self.hidden
        z_x, r_x, h_x = (self._gate(x_t, k) for k in range(3))
        if self.layer.node.attribute("linear_before_reset", 0):
            rec = self._rec(h)  # all three gates in one read
            z_h, r_h, h_h = (self._gate(rec, k) for k in range(3))
            h_h = self._node("Add", [h_h, self._c("rb_h", recurrent_bias[2 * hidden :])])
            z = self._node(f_act, [self._node("Add", [z_x, z_h])])
            r = self._node(f_act, [self._node("Add", [r_x, r_h])])
            candidate_in = self._node("Add", [h_x, self._node("Mul", [r, h_h])])
        else:
            rec = self._rec(h, rows=slice(0, 2 * hidden))  # update and reset gates
            z_h, r_h = (self._gate(rec, k) for k in range(2))
            z = self._node(f_act, [self._node("Add", [z_x, z_h])])
            r = self._node(f_act, [self._node("Add", [r_x, r_h])])
            reset = self._node("Mul", [r, h])
            rec_h = self._rec(reset, rows=slice(2 * hidden, 3 * hidden))
            candidate_in = self._node("Add", [h_x, rec_h])
        candidate = self._node(g_act, [candidate_in])
        # (1 - z) * candidate + z * h = candidate + z * (h - candidate)
        blend = self._node("Mul", [z, self._node("Sub", [h, candidate])])
        return self._node("Add", [candidate, blend])

    def _rec(self, h: str, rows: slice = slice(None)) -> str:
        """h @ R[rows]^T: the recurrent matrix (rows of it), a crossbar layer per step."""
        matrix = np.ascontiguousarray(self.recurrence[rows].T)
        return self._node("MatMul", [h, self.layer._const(f"R{self.d}_t", matrix)])

    def _gate(self, value: str, k: int) -> str:
        indices = np.arange(k * self.hidden, (k + 1) * self.hidden, dtype=np.int64)
        return self._node("Gather", [value, self._c("gate", indices)], axis=1)

    def _c(self, base: str, value: np.ndarray) -> str:
        return self.layer._const(base, np.asarray(value))

    def _node(self, op_type: str, inputs: list[str], **attributes: Any) -> str:
        output = self.layer.name(op_type.lower())
        self.body.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output
