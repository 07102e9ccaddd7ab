"""The search: a tile type per layer minimising the program's EDAP under an error bound.

    costs[l][t], errors[l][t]  ->  choice[l]  (an index into the tile types)

EDAP = (sum of energies) x (sum of latencies) x (sum of areas) is not a sum over layers,
so no layer can be chosen alone. A mix that needs more virtual tiles of a type than the
chip has of it runs in several phases, and the cost model then charges what the tables
alone do not show (`charged`, given the chip's `WriteModel`): every cell written again on
every inference (program-and-verify, row by row, tiles in parallel: each phase as long
as its tallest write), a layer cut at a phase's end read once more, and only the
physical tiles as area; `charged` estimates these on average (the allocator's exact
phases are not known before it runs). A mix that fits in one phase
is always preferred (spreading the layers over the types is what a chip of several types
is for): the search minimises (tiles over the counts, EDAP), in that order.

Coordinate descent: from a start, visit the layers in order and move each to the tile
type that lowers that key most while the summed error stays within the bound; repeat
until a whole sweep moves nothing; then make the best move of two layers at once (under a
tight bound one layer may pay in accuracy for another's saving, or two layers swap types
to fit the counts), and sweep again, until neither helps. From a start that fits, no move
leaves the counts; from one that does not, the first moves bring the mix within them
where they can. The starts are the uniform choices within the bound; the best result
wins, a fitting one over any other (ties: the earlier start). Only when no descent finds
a fitting mix is each start descended again on the EDAP alone (the writes charged). A
single move costs O(types) from running totals: a sweep over ResNet-50's 54 layers and 4
types is about 200 moves, a pair round about 23 000.
"""

from __future__ import annotations

from dataclasses import dataclass

from xbarc.passes.naxsel.tables import LayerCosts, WriteModel

MAX_SWEEPS = 50
RELATIVE_GAIN = 1e-9  # a move must lower the EDAP by more than this fraction


@dataclass(frozen=True, slots=True)
class Totals:
    """A choice's sums over the layers; when it does not fit the tile counts, the
    writes it pays on every inference and the tiles it needs beyond them (`excess`);
    `area_um2` is then the physical tiles'."""

    energy_pj: float
    latency_ns: float
    area_um2: float
    error: float
    write_energy_pj: float = 0.0
    write_latency_ns: float = 0.0
    phases: int = 1
    excess: int = 0  # virtual tiles over the chip's counts, summed over the types

    @property
    def edap(self) -> float:
        return (
            (self.energy_pj + self.write_energy_pj)
            * (self.latency_ns + self.write_latency_ns)
            * self.area_um2
        )


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen tile type of each layer, its totals, the error bound it met, and the
    totals of every uniform choice (by tile type index)."""

    choice: tuple[int, ...]
    totals: Totals
    bound: float
    uniform: tuple[Totals, ...]
    sweeps: int


@dataclass(frozen=True, slots=True)
class Sums:
    """A choice's sums over its layers, before `charged`; per type: the layers'
    latency in one phase (`latency_ns`) and split over phases (`split_ns`: a layer on a
    type beyond its count is read once per chunk of tiles it gets), the virtual tiles
    (`used`) and their rows written (`row_work`)."""

    energy_pj: float
    area_um2: float
    error: float
    latency_ns: tuple[float, ...]
    split_ns: tuple[float, ...]
    used: tuple[int, ...]
    row_work: tuple[int, ...]


def sums(choice, costs, errors, capacities: list[int]) -> Sums:
    energy = area = error = 0.0
    types = len(capacities)
    latency, split = [0.0] * types, [0.0] * types
    used, row_work = [0] * types, [0] * types
    for layer, t in enumerate(choice):
        cost: LayerCosts = costs[layer][t]
        energy += cost.energy_pj
        area += cost.area_um2
        error += errors[layer][t]
        latency[t] += cost.latency_ns
        split[t] += cost.latency_ns * runs(cost.tiles, capacities[t])
        used[t] += cost.tiles
        row_work[t] += cost.row_work
    return Sums(energy, area, error, tuple(latency), tuple(split), tuple(used), tuple(row_work))


def runs(tiles: int, capacity: int) -> float:
    """The runs a layer of `tiles` tiles expects on a type filled beyond its `capacity`:
    the allocator fills the chip layer after layer, so the layer starts anywhere in a
    phase and is cut at each phase's end: 1 + (tiles - 1) / capacity on average."""
    return 1.0 + max(0, tiles - 1) / capacity


def totals(
    choice: list[int] | tuple[int, ...],
    costs,
    errors,
    capacities: list[int] | None = None,
    writes: WriteModel | None = None,
) -> Totals:
    """The choice's totals; with the tile counts, charged as `charged` says."""
    if capacities is None:
        capacities = [1 << 62] * (len(costs[0]) if costs else 0)
    return charged(sums(choice, costs, errors, capacities), capacities, writes)


def charged(found: Sums, capacities: list[int], writes: WriteModel | None) -> Totals:
    """The layers' sums with what a mix beyond the tile counts pays, as the cost model
    charges it (xbarc/cost.py): several phases, the layers split over them read once
    per chunk (`Sums.phased_ns`); all cells written on every inference, the tiles of a
    phase in parallel, row by row: per type, its rows written over its physical tiles
    (the phases of the fullest type, each as long as its average write), the slowest
    type setting the pace; area only for the physical tiles (the tables count one per
    virtual tile)."""
    excess = [max(0, u - c) for u, c in zip(found.used, capacities, strict=True)]
    over = sum(excess)
    if not over or writes is None:
        latency = sum(found.latency_ns)
        return Totals(found.energy_pj, latency, found.area_um2, found.error, excess=over)
    latency = sum(
        split if e else plain
        for split, plain, e in zip(found.split_ns, found.latency_ns, excess, strict=True)
    )
    phases = max(-(-u // c) for u, c in zip(found.used, capacities, strict=True) if u)
    area = found.area_um2 - sum(e * a for e, a in zip(excess, writes.tile_area_um2, strict=True))
    rows = max(
        work / min(u, c)
        for work, u, c in zip(found.row_work, found.used, capacities, strict=True)
        if u
    )
    return Totals(
        found.energy_pj,
        latency,
        area,
        found.error,
        write_energy_pj=writes.energy_pj,
        write_latency_ns=rows * writes.row_ns,
        phases=phases,
        excess=over,
    )


def select(
    costs: list[list[LayerCosts]],
    errors: list[list[float]],
    capacities: list[int],
    budget: float,
    writes: WriteModel | None = None,
) -> Selection:
    """Each layer's tile type (see the module docstring): the summed error at most
    (1 + budget) x the most accurate uniform choice's; `writes` charges a mix beyond the
    tile counts (None: such a mix costs what its layers do, but is still avoided)."""
    types = len(capacities)
    uniform = tuple(
        totals([t] * len(costs), costs, errors, capacities, writes) for t in range(types)
    )
    bound = (1.0 + budget) * min(u.error for u in uniform)
    starts = [t for t in range(types) if uniform[t].error <= bound * (1 + 1e-12)]
    found = [
        descend([start] * len(costs), costs, errors, capacities, bound, writes, fit=True)
        for start in starts
    ]
    fitting = [result for result in found if result[1].excess == 0]
    if not fitting:  # no mix found fits: the least EDAP, writes and all
        found += [
            descend([start] * len(costs), costs, errors, capacities, bound, writes, fit=False)
            for start in starts
        ]
    best: tuple[list[int], Totals, int] | None = None
    for result in fitting or found:
        if best is None or _better(result[1], best[1], fit=False):
            best = result
    assert best is not None  # the most accurate uniform choice is always within the bound
    return Selection(tuple(best[0]), best[1], bound, uniform, best[2])


def _better(result: Totals, than: Totals, fit: bool) -> bool:
    """Whether `result` beats `than`: with `fit`, fewer tiles over the counts first
    (fitting beats any other); then a lower EDAP."""
    if fit and result.excess != than.excess:
        return result.excess < than.excess
    return result.edap < than.edap * (1 - RELATIVE_GAIN)


def descend(
    choice,
    costs,
    errors,
    capacities: list[int],
    bound: float,
    writes: WriteModel | None = None,
    fit: bool = True,
) -> tuple[list[int], Totals, int]:
    """Single moves until none lowers the key (`_better`), then the best move of two
    layers at once, until neither helps."""
    search = _Descent(choice, costs, errors, capacities, bound, writes, fit)
    sweeps = 0
    while sweeps < MAX_SWEEPS:
        sweeps += 1
        moved = search.single_sweep()
        if not moved and not search.best_pair():
            break
    # the running sums drift by rounding: recompute them once
    return search.choice, totals(search.choice, costs, errors, capacities, writes), sweeps


Moved = tuple[Totals, Sums]  # a move's charged totals, and its layers' sums


class _Descent:
    """The current choice, its running sums and totals, and the moves that may change
    them."""

    def __init__(self, choice, costs, errors, capacities, bound, writes, fit):
        self.choice = choice
        self.costs = costs
        self.errors = errors
        self.capacities = capacities
        self.writes = writes
        self.fit = fit  # fewer tiles over the counts first
        self.bound = bound * (1 + 1e-12)
        self.sums = sums(choice, costs, errors, capacities)
        self.current = charged(self.sums, capacities, writes)
        self.types = range(len(capacities))

    def moved(self, moves: list[tuple[int, int]]) -> Moved | None:
        """The totals after moving each (layer, type) of `moves` (charged, and the new
        sums); None if that breaks the bound."""
        now_sums = self.sums
        energy, area, error = now_sums.energy_pj, now_sums.area_um2, now_sums.error
        latency = list(now_sums.latency_ns)
        split = list(now_sums.split_ns)
        used = list(now_sums.used)
        row_work = list(now_sums.row_work)
        capacities = self.capacities
        for layer, t in moves:
            was = self.choice[layer]
            now, new = self.costs[layer][was], self.costs[layer][t]
            energy += new.energy_pj - now.energy_pj
            latency[t] += new.latency_ns
            latency[was] -= now.latency_ns
            split[t] += new.latency_ns * runs(new.tiles, capacities[t])
            split[was] -= now.latency_ns * runs(now.tiles, capacities[was])
            area += new.area_um2 - now.area_um2
            error += self.errors[layer][t] - self.errors[layer][was]
            used[t] += new.tiles
            used[was] -= now.tiles
            row_work[t] += new.row_work
            row_work[was] -= now.row_work
        if error > self.bound:
            return None
        new_sums = Sums(
            energy, area, error, tuple(latency), tuple(split), tuple(used), tuple(row_work)
        )
        return charged(new_sums, capacities, self.writes), new_sums

    def apply(self, moves: list[tuple[int, int]], result: Moved) -> None:
        for layer, t in moves:
            self.choice[layer] = t
        self.current, self.sums = result

    def better(self, result: Moved | None, than: Totals) -> bool:
        return result is not None and _better(result[0], than, self.fit)

    def single_sweep(self) -> bool:
        """Each layer in turn to its best type; whether any moved."""
        moved = False
        for layer in range(len(self.choice)):
            best: tuple[list[tuple[int, int]], Moved] | None = None
            for t in self.types:
                if t == self.choice[layer]:
                    continue
                result = self.moved([(layer, t)])
                if self.better(result, best[1][0] if best else self.current):
                    assert result is not None
                    best = ([(layer, t)], result)
            if best is not None:
                self.apply(*best)
                moved = True
        return moved

    def best_pair(self) -> bool:
        """The best move of two layers at once, applied; whether there was one."""
        best: tuple[list[tuple[int, int]], Moved] | None = None
        layers = len(self.choice)
        for first in range(layers):
            for second in range(first + 1, layers):
                for t1 in self.types:
                    if t1 == self.choice[first]:
                        continue
                    for t2 in self.types:
                        if t2 == self.choice[second]:
                            continue
                        moves = [(first, t1), (second, t2)]
                        result = self.moved(moves)
                        if self.better(result, best[1][0] if best else self.current):
                            assert result is not None
                            best = (moves, result)
        if best is None:
            return False
        self.apply(*best)
        return True
