"""The verifier's block-overlap check names the same pair as the plain pairwise search.

`check_no_overlap` counts cells on a grid and, only when some cell is taken twice, looks
for the culprits; the pair it names must be the one the plain search over blocks sorted
by first row and column finds first (`reference_overlap`, the search it replaced)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xbarc.diagnostics import XbarcError
from xbarc.ir.tile import Block, Span
from xbarc.ir.verifier import _Verifier


def reference_overlap(blocks: list[Block]) -> tuple[int, int] | None:
    ordered = sorted(blocks, key=lambda b: (b.row_offset, b.col_offset))
    for i, first in enumerate(ordered):
        for second in ordered[i + 1 :]:
            if second.row_offset >= first.row_offset + len(first.rows):
                break
            first_stop = first.col_offset + len(first.cols)
            second_stop = second.col_offset + len(second.cols)
            if first.col_offset < second_stop and second.col_offset < first_stop:
                return first.index, second.index
    return None


class _Failing:
    """Stands in for the verifier: `fail` raises as the verifier's does."""

    def fail(self, key, message: str, hint: str = "") -> None:
        raise XbarcError(message)


@st.composite
def tile_blocks(draw) -> list[Block]:
    """Blocks on one 16x16 tile: in shelves side by side (mostly apart) or anywhere."""
    blocks = []
    for index in range(draw(st.integers(2, 30))):
        row = draw(st.sampled_from([0, 4, 8]) | st.integers(0, 15))
        col = draw(st.integers(0, 15))
        height = draw(st.integers(1, 16 - row))
        width = draw(st.integers(1, min(3, 16 - col)))
        rows, cols = Span(0, height), Span(0, width)
        blocks.append(Block(index, "a", 0, 0, rows, cols, "t", 0, row, col))
    return blocks


@settings(max_examples=300, deadline=None)
@given(tile_blocks())
def test_overlap_names_the_pair_the_pairwise_search_finds(blocks):
    expected = reference_overlap(blocks)
    try:
        _Verifier.check_no_overlap(_Failing(), blocks)  # type: ignore[arg-type]
    except XbarcError as error:
        assert expected is not None
        assert error.message == f"blocks b{expected[0]} and b{expected[1]} overlap on v0"
    else:
        assert expected is None
