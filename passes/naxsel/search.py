"""The search: a tile type per layer minimising the program's EDAP under an error bound.

    costs[l][t], errors[l][t]  ->  choice[l]  (an index into the tile types)

EDAP = (sum of energies) x (sum of latencies) x (sum of areas) is not a sum over layers,
so no layer can be chosen alone. Coordinate descent: from a start, visit the layers in
order and move each to the tile type that lowers the EDAP most while the summed error
stays within the bound and every tile type keeps within its tile count (where some
uniform start does; else the program is reprogrammed in phases anyway); repeat until a
whole sweep moves nothing; then make the best move of two layers at once (under a tight
bound one layer may pay in accuracy for another's saving), and sweep again, until
neither helps. The starts are the uniform choices within the bound (only those that fit
the tile counts, when any does); the best result wins (ties: the earlier start). A
single move costs O(1) from running totals: a sweep over ResNet-50's 54 layers and 4
types is about 200 moves, a pair round about 23 000.
"""

from __future__ import annotations

from dataclasses import dataclass

from xbarc.passes.naxsel.tables import LayerCosts

MAX_SWEEPS = 50
RELATIVE_GAIN = 1e-9  # a move must lower the EDAP by more than this fraction


@dataclass(frozen=True, slots=True)
class Totals:
    energy_pj: float
    latency_ns: float
    area_um2: float
    error: float

    @property
    def edap(self) -> float:
        return self.energy_pj * self.latency_ns * self.area_um2


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen tile type of each layer, its totals, the error bound it met, and the
    totals of every uniform choice (by tile type index)."""

    choice: tuple[int, ...]
    totals: Totals
    bound: float
    uniform: tuple[Totals, ...]
    sweeps: int


def totals(choice: list[int] | tuple[int, ...], costs, errors) -> Totals:
    energy = latency = area = error = 0.0
    for layer, t in enumerate(choice):
        cost: LayerCosts = costs[layer][t]
        energy += cost.energy_pj
        latency += cost.latency_ns
        area += cost.area_um2
        error += errors[layer][t]
    return Totals(energy, latency, area, error)


def tile_use(choice, costs, types: int) -> list[int]:
    used = [0] * types
    for layer, t in enumerate(choice):
        used[t] += costs[layer][t].tiles
    return used


def select(
    costs: list[list[LayerCosts]],
    errors: list[list[float]],
    capacities: list[int],
    budget: float,
) -> Selection:
    """Each layer's tile type (see the module docstring): the summed error at most
    (1 + budget) x the most accurate uniform choice's."""
    types = len(capacities)
    uniform = tuple(totals([t] * len(costs), costs, errors) for t in range(types))
    bound = (1.0 + budget) * min(u.error for u in uniform)
    starts = [t for t in range(types) if uniform[t].error <= bound * (1 + 1e-12)]
    fitting = [t for t in starts if sum(c[t].tiles for c in costs) <= capacities[t]]
    limits = capacities if fitting else None  # no start fits: tile counts are not kept
    best: tuple[list[int], Totals, int] | None = None
    for start in fitting or starts:
        choice, found, sweeps = descend([start] * len(costs), costs, errors, limits, bound)
        if best is None or found.edap < best[1].edap * (1 - RELATIVE_GAIN):
            best = (choice, found, sweeps)
    assert best is not None  # the most accurate uniform choice is always within the bound
    return Selection(tuple(best[0]), best[1], bound, uniform, best[2])


def descend(
    choice, costs, errors, capacities: list[int] | None, bound: float
) -> tuple[list[int], Totals, int]:
    """Single moves until none lowers the EDAP, then the best move of two layers at once
    (one may trade accuracy for the other under a tight bound), until neither helps."""
    search = _Descent(choice, costs, errors, capacities, bound)
    sweeps = 0
    while sweeps < MAX_SWEEPS:
        sweeps += 1
        moved = search.single_sweep()
        if not moved and not search.best_pair():
            break
    # the running sums drift by rounding: recompute them once
    return search.choice, totals(search.choice, costs, errors), sweeps


class _Descent:
    """The current choice, its running totals and tile use, and the moves that may
    change them."""

    def __init__(self, choice, costs, errors, capacities, bound):
        self.choice = choice
        self.costs = costs
        self.errors = errors
        self.capacities = capacities  # None: tile counts not enforced
        self.bound = bound * (1 + 1e-12)
        self.current = totals(choice, costs, errors)
        self.used = tile_use(choice, costs, len(costs[0]) if costs else 0)

    def moved(self, moves: list[tuple[int, int]]) -> Totals | None:
        """The totals after moving each (layer, type) of `moves`; None if that breaks
        the bound or a tile count."""
        energy, latency, area, error = (
            self.current.energy_pj,
            self.current.latency_ns,
            self.current.area_um2,
            self.current.error,
        )
        used = dict.fromkeys(range(len(self.used)), 0)
        for layer, t in moves:
            now, new = self.costs[layer][self.choice[layer]], self.costs[layer][t]
            energy += new.energy_pj - now.energy_pj
            latency += new.latency_ns - now.latency_ns
            area += new.area_um2 - now.area_um2
            error += self.errors[layer][t] - self.errors[layer][self.choice[layer]]
            used[t] += new.tiles
            used[self.choice[layer]] -= now.tiles
        if error > self.bound:
            return None
        if self.capacities is not None:
            for t, change in used.items():
                if change > 0 and self.used[t] + change > self.capacities[t]:
                    return None
        return Totals(energy, latency, area, error)

    def apply(self, moves: list[tuple[int, int]], result: Totals) -> None:
        for layer, t in moves:
            self.used[self.choice[layer]] -= self.costs[layer][self.choice[layer]].tiles
            self.used[t] += self.costs[layer][t].tiles
            self.choice[layer] = t
        self.current = result

    def better(self, result: Totals | None, than: Totals) -> bool:
        return result is not None and result.edap < than.edap * (1 - RELATIVE_GAIN)

    def single_sweep(self) -> bool:
        """Each layer in turn to its best type; whether any moved."""
        moved = False
        types = range(len(self.used))
        for layer in range(len(self.choice)):
            best: tuple[list[tuple[int, int]], Totals] | None = None
            for t in types:
                if t == self.choice[layer]:
                    continue
                result = self.moved([(layer, t)])
                if self.better(result, best[1] if best else self.current):
                    assert result is not None
                    best = ([(layer, t)], result)
            if best is not None:
                self.apply(*best)
                moved = True
        return moved

    def best_pair(self) -> bool:
        """The best move of two layers at once, applied; whether there was one."""
        best: tuple[list[tuple[int, int]], Totals] | None = None
        types = range(len(self.used))
        layers = len(self.choice)
        for first in range(layers):
            for second in range(first + 1, layers):
                for t1 in types:
                    if t1 == self.choice[first]:
                        continue
                    for t2 in types:
                        if t2 == self.choice[second]:
                            continue
                        moves = [(first, t1), (second, t2)]
                        result = self.moved(moves)
                        if self.better(result, best[1] if best else self.current):
                            assert result is not None
                            best = (moves, result)
        if best is None:
            return False
        self.apply(*best)
        return True
