"""Limits on every size xbarc reads from a file or an option before it allocates anything.

A program, a sidecar, a profile or an option can ask for any size; xbarc checks each
against the program it belongs to and against these ceilings first, so that a hostile or
corrupt file gets a one-line error instead of exhausting memory. The ceilings sit far
above any real chip or network (ResNet-50 on 128 tiles of 256x256 needs a few thousand
virtual tiles and a 100 MB sidecar) and far below what would take a machine down.
"""

from __future__ import annotations

from xbarc.diagnostics import XbarcError

# chips: tiles, their sizes and the virtual tiles and blocks of a program
MAX_TILES = 1 << 20  # physical tiles of a chip
MAX_TILE_DIM = 1 << 14  # rows or columns of one crossbar
MAX_TILE_CELLS = 1 << 24  # rows x columns of one crossbar
MAX_IDS = 1 << 24  # entities of one kind in a program (virtual tiles, blocks, arrays, ...)

# files
MAX_PROGRAM_TEXT_BYTES = 1 << 30  # an .xbar text
MAX_PROFILE_BYTES = 1 << 20  # a noise profile (.toml)
MAX_HARDWARE_FILE_BYTES = 1 << 20  # a hardware file (.toml: --hw)
MAX_TENSOR_BYTES = 1 << 34  # all tensors of one sidecar together, inflated

# sizes inside a program or a data file
MAX_BITS = 64  # bits of a cell, converter, weight, slice shift or coefficient
MAX_DIM = 1 << 40  # one dimension of a tensor type, a layer or an array
MAX_ELEMENTS = 1 << 40  # elements of one tensor type (the product of its dimensions)
MAX_SCHEDULE_ENTRIES = 1 << 22  # tile writes and block reads of a program, ranges expanded
MAX_INT64 = (1 << 63) - 1  # attribute integers, opsets, sample counts: what ONNX can hold
MAX_NPY_HEADER_BYTES = 1 << 16  # the header of one .npy member of a sidecar or data file
MAX_DEFLATE_RATIO = 1032  # the most bytes deflate can inflate one byte into
MAX_DATA_BYTES = 1 << 34  # all arrays of one data file (--input, --data) together, inflated
MAX_PROGRAMMED_CELLS = 1 << 27  # cells of the physical tiles a run programs (the simulator
# holds each written tile whole: 8192 tiles of 128x128, 1 GB of float64 cells)


def check_product(what: str, dims: tuple[int, ...], limit: int, *, hint: str = "") -> int:
    """The product of `dims` (each already checked) if at most `limit`, else an error; stops
    multiplying as soon as the product passes the limit, so absurd shapes cost nothing."""
    product = 1
    for dim in dims:
        product *= dim
        if product > limit:
            shape = "x".join(str(d) for d in dims)
            raise XbarcError(f"{what} {shape} is more than xbarc supports ({limit})", hint=hint)
    return product


def check_count(what: str, value: int, limit: int, *, hint: str = "") -> int:
    """`value` if 0 <= value <= limit, else an error naming `what`."""
    if value < 0:
        raise XbarcError(f"{what} is negative ({value})", hint=hint)
    if value > limit:
        raise XbarcError(f"{what} is {value}, more than xbarc supports ({limit})", hint=hint)
    return value


# running programs
MAX_LOOP_ITERATIONS = 1 << 20  # iterations of one Loop run (a million time steps)
