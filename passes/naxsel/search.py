"""The search: a tile type per layer minimising the program's EDAP under an error bound.

    costs[l][t], errors[l][t]  ->  choice[l]  (an index into the tile types)

EDAP = (sum of energies) x (sum of latencies) x (sum of areas) is not a sum over layers,
so no layer can be chosen alone. Coordinate descent: from a start, visit the layers in
order and move each to the tile type that lowers the EDAP most while the summed error
stays within the bound and every tile type keeps within its tile count (where the start
does); repeat until a whole sweep moves nothing. The starts are the uniform choices
within the bound; the best result wins (ties: the earlier start). Every step is
O(tile types), so a sweep over ResNet-50's 54 layers and 4 types takes microseconds.
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
    best: tuple[list[int], Totals, int] | None = None
    for start in range(types):
        if uniform[start].error > bound * (1 + 1e-12):
            continue
        choice, found, sweeps = descend([start] * len(costs), costs, errors, capacities, bound)
        if best is None or found.edap < best[1].edap * (1 - RELATIVE_GAIN):
            best = (choice, found, sweeps)
    assert best is not None  # the most accurate uniform choice is always within the bound
    return Selection(tuple(best[0]), best[1], bound, uniform, best[2])


def descend(choice, costs, errors, capacities, bound) -> tuple[list[int], Totals, int]:
    current = totals(choice, costs, errors)
    used = tile_use(choice, costs, len(capacities))
    capped = all(u <= c for u, c in zip(used, capacities, strict=True))
    sweeps = 0
    while sweeps < MAX_SWEEPS:
        sweeps += 1
        moved = False
        for layer in range(len(choice)):
            here = choice[layer]
            now = costs[layer][here]
            best_t, best_totals = here, current
            for t in range(len(capacities)):
                if t == here:
                    continue
                new = costs[layer][t]
                if capped and used[t] + new.tiles > capacities[t]:
                    continue
                trial = Totals(
                    current.energy_pj - now.energy_pj + new.energy_pj,
                    current.latency_ns - now.latency_ns + new.latency_ns,
                    current.area_um2 - now.area_um2 + new.area_um2,
                    current.error - errors[layer][here] + errors[layer][t],
                )
                if trial.error > bound * (1 + 1e-12):
                    continue
                if trial.edap < best_totals.edap * (1 - RELATIVE_GAIN):
                    best_t, best_totals = t, trial
            if best_t != here:
                used[here] -= now.tiles
                used[best_t] += costs[layer][best_t].tiles
                choice[layer] = best_t
                current = best_totals
                moved = True
        if not moved:
            break
    # the running sums drift by rounding: recompute them once
    return choice, totals(choice, costs, errors), sweeps
