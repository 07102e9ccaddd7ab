"""The cost model against hand-computed figures from the ISAAC constants."""

from __future__ import annotations

import numpy as np
import pytest

from tests.programs import layers_program
from xbarc.cost import (
    CoefficientTable,
    combine_energy_per_mac_pj,
    pipelined_ns,
    program_cost,
    union_length,
)
from xbarc.passes.manager import parse_pipeline, run_pipeline
from xbarc.report import report


def one_layer(tiles: int):
    weight = np.random.default_rng(0).normal(size=(1, 128, 128))
    program = layers_program([weight], tiles=tiles)
    pipeline = "quantize{weight-bits=8,cell-bits=2},tile,allocate"
    return run_pipeline(program, parse_pipeline(pipeline))


def test_one_layer_energy_latency_and_area_by_hand():
    program = one_layer(tiles=8)
    cost = program_cost(program, {"fc0": 1})
    # 8 slices on 8 tiles read in one cycle, for each of 8 bit-serial input slices
    assert cost.layers[0].read_energy_pj == pytest.approx(8 * 8 * 30.0)
    assert cost.layers[0].adc_energy_pj == pytest.approx(8 * 8 * 128 * 1.56)
    # a 1-bit DAC at 3.9 uW for a 100 ns read: 0.39 pJ per driven row
    assert cost.layers[0].dac_energy_pj == pytest.approx(8 * 8 * 128 * 0.39)
    assert cost.layers[0].latency_ns == pytest.approx(8 * 100.0)
    # one phase: programming is paid once, not per pass
    assert not cost.writes_per_pass
    assert cost.energy_pj == pytest.approx(cost.compute_energy_pj)
    assert cost.write_energy_pj == pytest.approx(8 * 128 * 128 * 10 * 1.0)
    assert cost.write_latency_ns == pytest.approx(128 * 10 * 60.0)
    tile_um2 = 25.0 + 1200.0 + 128 * 0.166 + 60.0
    # per-column scales: 128 of 2 bytes in the buffer (1.27 um^2 a byte) and one 830 um^2
    # multiplier for the 8 tiles (a tile finishes its columns every 8 input slices)
    scales_um2 = 128 * 2 * 1.27 + 830.0
    assert cost.area_mm2 == pytest.approx((8 * tile_um2 + scales_um2) * 1e-6)
    assert cost.tops_per_watt == pytest.approx(2 * 128 * 128 / cost.energy_pj)


def test_phases_make_writes_recur_on_every_pass():
    program = one_layer(tiles=2)
    assert len(program.phases) == 4
    cost = program_cost(program, {"fc0": 1})
    assert cost.writes_per_pass
    assert cost.energy_pj == pytest.approx(cost.compute_energy_pj + cost.write_energy_pj)
    # four phases, each writing two full tiles in parallel
    assert cost.write_latency_ns == pytest.approx(4 * 128 * 10 * 60.0)
    # four runs of one cycle each now serialize
    assert cost.layers[0].latency_ns == pytest.approx(4 * 8 * 100.0)


def test_report_totals_add_up_over_layers():
    rng = np.random.default_rng(1)
    program = layers_program([rng.normal(size=(1, 300, 70)), rng.normal(size=(1, 70, 9))], tiles=7)
    program = run_pipeline(program, parse_pipeline("quantize,tile,allocate"))
    result = report(program)
    assert result.weights == 300 * 70 + 70 * 9
    assert result.cell_writes == sum(layer.cell_writes for layer in result.layers)
    assert result.cycles == sum(layer.cycles for layer in result.layers)
    layer_energy = sum(layer.energy_nj for layer in result.layers) * 1e-3
    assert result.energy_uj == pytest.approx(layer_energy + result.write_energy_uj)


def test_union_length():
    assert union_length({(0, 10), (5, 10), (30, 2)}) == 17
    assert union_length(set()) == 0


def test_index_tables_are_read_once_per_patch_at_edram_cost():
    # rows 1, 4, 6, 7 and columns 1, 5 all zero: one column group of 8 keeps a 6-entry
    # row-gather table (4-bit entries for 10 rows) and a 6-entry column-scatter table
    # (3-bit entries for 8 columns), shared by the 8 slices that sit on one tile
    weight = np.zeros((1, 10, 8))
    kept_rows, kept_cols = [0, 2, 3, 5, 8, 9], [0, 2, 3, 4, 6, 7]
    weight[0][np.ix_(kept_rows, kept_cols)] = np.arange(1, 37).reshape(6, 6)
    program = layers_program([weight], tiles=4)
    pipeline = "quantize,tile{rows=64,cols=64,mapping=sparse,group-cols=8},allocate"
    program = run_pipeline(program, parse_pipeline(pipeline))
    assert [len(run.cycles) for run in program.phases[0].runs] == [1]
    cost = program_cost(program, {"fc0": 3})
    bits = 6 * 4 + 6 * 3
    assert cost.layers[0].index_energy_pj == pytest.approx(3 * bits / 256 * 17.2)
    assert report(program).index_energy_uj == pytest.approx(bits / 256 * 17.2 * 1e-6)  # 1 patch
    dense = layers_program([weight], tiles=4)
    dense = run_pipeline(dense, parse_pipeline("quantize,tile,allocate"))
    assert program_cost(dense, {"fc0": 3}).layers[0].index_energy_pj == 0.0


def test_writes_split_into_deployment_and_per_inference():
    one_phase = program_cost(one_layer(tiles=8), {"fc0": 1})
    assert one_phase.cell_writes == 8 * 128 * 128
    assert one_phase.deployment_cell_writes == 8 * 128 * 128
    assert one_phase.cell_writes_per_inference == 0
    assert one_phase.write_energy_per_inference_pj == 0.0
    assert one_phase.write_latency_per_inference_ns == 0.0
    phased = program_cost(one_layer(tiles=2), {"fc0": 1})
    assert phased.cell_writes == 8 * 128 * 128  # four phases of two tiles
    assert phased.deployment_cell_writes == 0
    assert phased.cell_writes_per_inference == 8 * 128 * 128
    assert phased.write_latency_per_inference_ns == pytest.approx(4 * 128 * 10 * 60.0)


def test_pipelined_stages():
    # 3 items, stages of 5 and 2 ns: 5 + 2 + 2 x 5; the slower stage sets the pace
    assert pipelined_ns(3, 5.0, 2.0) == pytest.approx(17.0)
    assert pipelined_ns(3, 2.0, 5.0) == pytest.approx(17.0)
    assert pipelined_ns(1, 2.0, 5.0) == pytest.approx(7.0)
    assert pipelined_ns(0, 2.0, 5.0) == 0.0


def test_combine_mac_energy_scales_with_operand_widths():
    hardware = one_layer(tiles=8).hardware  # 8-bit ADC
    # Horowitz 45 nm: 8-bit x 8-bit multiply 0.2 pJ, 32-bit add 0.1 pJ
    assert combine_energy_per_mac_pj(hardware, 8) == pytest.approx(0.3)
    assert combine_energy_per_mac_pj(hardware, 4) == pytest.approx(0.2)


def test_coefficient_table_stored_dense_or_as_its_nonzeros():
    dense = CoefficientTable("fc", 1, 2, 16, 10, bits=8, nonzeros=300)
    assert dense.entries == 320
    assert dense.stored_bits == 320 * 8  # 300 x (8 + 4) would be more
    sparse = CoefficientTable("fc", 1, 2, 16, 10, bits=8, nonzeros=40)
    assert sparse.stored_bits == 40 * (8 + 4)  # a 4-bit k index beside each non-zero


def test_layers_read_inputs_and_write_outputs_through_the_buffer():
    cost = program_cost(one_layer(tiles=8), {"fc0": 3})
    # per patch: 128 unfolded inputs read and 128 outputs written, 8 bits each (the DAC's
    # input width), at 17.2 pJ per 256-bit access
    assert cost.layers[0].buffer_energy_pj == pytest.approx(3 * (128 + 128) * 8 / 256 * 17.2)
    layer = cost.layers[0]
    parts = (
        layer.read_energy_pj + layer.adc_energy_pj + layer.dac_energy_pj
        + layer.shift_add_energy_pj + layer.index_energy_pj + layer.scale_energy_pj
        + layer.combine_energy_pj + layer.buffer_energy_pj
    )  # fmt: skip
    assert layer.energy_pj == pytest.approx(parts)


def relu_between(program):
    """`program` (two layers) with a Relu between its layers: fc0 -> relu -> fc1."""
    from dataclasses import replace

    from xbarc.ir.tile import DigitalOp, Value

    first, second = program.ops
    relu = DigitalOp("relu", "Relu", "", 13, (Value(first.output),), ("r0",), (first.output_type,))
    return replace(program, ops=(first, relu, replace(second, input="r0")))


def test_digital_ops_cost_one_operation_per_input_element():
    rng = np.random.default_rng(2)
    weights = [rng.normal(size=(1, 40, 30)), rng.normal(size=(1, 30, 5))]
    program = relu_between(layers_program(weights, tiles=32))
    program = run_pipeline(program, parse_pipeline("quantize,tile,allocate"))
    cost = program_cost(program, {"fc0": 1, "fc1": 1})
    # the Relu reads fc0's 30 outputs: 30 element operations of a 0.1 pJ 32-bit add
    assert cost.digital_ops == 30
    assert cost.digital_op_energy_pj == pytest.approx(30 * 0.1)
    assert cost.energy_pj == pytest.approx(cost.compute_energy_pj + 30 * 0.1)
    assert report(program).energy_uj == pytest.approx(cost.energy_pj * 1e-6)


def test_used_area_counts_the_tiles_written_not_the_chip():
    small = program_cost(one_layer(tiles=8), {"fc0": 1})
    tile_um2 = 25.0 + 1200.0 + 128 * 0.166 + 60.0
    scales_um2 = 128 * 2 * 1.27 + 830.0  # one multiplier for 8 tiles of 8 input slices
    buffer_um2 = (128 + 128) * 1 * 1.27  # the layer's input and output, a byte each
    expected = (8 * tile_um2 + scales_um2 + buffer_um2 + 840.0) * 1e-6
    assert small.used_area_mm2 == pytest.approx(expected)
    assert small.buffer_area_mm2 == pytest.approx(buffer_um2 * 1e-6)
    assert small.edap_used == pytest.approx(small.energy_pj * small.latency_ns * expected)
    # the same program on a chip of 100 tiles: the chip grows, what it uses does not
    big = program_cost(one_layer(tiles=100), {"fc0": 1})
    assert big.area_mm2 > small.area_mm2
    assert big.used_area_mm2 == pytest.approx(small.used_area_mm2)
    assert big.edap_used < big.edap


def test_inspect_breaks_the_energy_down_into_parts_that_add_up():
    rng = np.random.default_rng(3)
    weights = [rng.normal(size=(1, 40, 30)), rng.normal(size=(1, 30, 5))]
    program = relu_between(layers_program(weights, tiles=32))
    program = run_pipeline(program, parse_pipeline("quantize,tile,allocate"))
    result = report(program)
    parts = (
        result.read_energy_uj + result.adc_energy_uj + result.dac_energy_uj
        + result.shift_add_energy_uj + result.buffer_energy_uj + result.index_energy_uj
        + result.scale_energy_uj + result.digital_op_energy_uj
    )  # fmt: skip
    assert parts == pytest.approx(result.energy_uj)
    assert result.digital_op_energy_uj == pytest.approx(30 * 0.1 * 1e-6)
    from xbarc.report import format_report

    text = format_report(result)
    assert "energy by part: arrays" in text and "digital ops 0.003 nJ" in text
    assert f"EDAP over it {result.edap_used:.4g}" in text


def test_input_bit_density_scales_the_array_and_dac_energy_only():
    from dataclasses import replace

    from xbarc.hardware import with_overrides

    program = one_layer(tiles=8)
    full = program_cost(program, {"fc0": 1}).layers[0]
    sparse_inputs = replace(
        program, hardware=with_overrides(program.hardware, ["cost.input_bit_density=0.25"])
    )
    quarter = program_cost(sparse_inputs, {"fc0": 1}).layers[0]
    # a quarter of the input bits are ones: the DACs drive, and the cells conduct, on a
    # quarter of the rows; conversions and shift-and-adds happen on every column still
    assert quarter.read_energy_pj == pytest.approx(full.read_energy_pj / 4)
    assert quarter.dac_energy_pj == pytest.approx(full.dac_energy_pj / 4)
    assert quarter.adc_energy_pj == pytest.approx(full.adc_energy_pj)
    assert quarter.shift_add_energy_pj == pytest.approx(full.shift_add_energy_pj)
