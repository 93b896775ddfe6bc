"""The search of a method's learning rate and scale knob: an adaptive coordinate search on a
crossed log grid, decided from the validation scores of the points tried so far.

A point of the grid is a pair of integer steps ``(lr_step, scale_step)``:

* the learning rate moves in half-decade steps, ``lr_of(k)`` = 1e-4, 3e-4, 1e-3, 3e-3, ...
  for k = -8, -7, -6, -5, ... (a mantissa of 1 or 3, so the values read as the usual grid);
* the scale knob moves in factors of 4 around the method's default: FLoRA's s = 4 x 4^j,
  LoRA's and DoRA's alpha = r x 4^j (``scale_factor(j)`` = 4^j). Methods without a knob stay
  at j = 0.

The search is a pure function of what was measured (:func:`next_points`), so a stopped run
resumes where it stopped from its finished runs, and a test can drive it with a fake score
function. Its rules:

1. Start with the lr steps of ``START_LRS`` at the default scale (or, warm-started from
   another search's choice, with that point and its two lr neighbours).
2. Take the best point tried so far (highest validation score; a collapsed run ranks below
   every run that did not collapse). If one of its two lr neighbours is untried, try them.
3. Else, for a method with a knob, if one of its two scale neighbours is untried, try them.
4. Else stop: the best point has a tried neighbour on both sides in lr (and in scale), each
   no better than it.

So the lr grid grows outward while the best lr sits at an edge of what was tried, the scale
is tried at the best lr once that lr is settled, and whenever a new best appears its own
untried neighbours are tried. A neighbour that collapsed (diverged, or scores at chance)
counts as a worse neighbour. A neighbour beyond the hard limits (``LR_STEPS``,
``SCALE_STEPS``) is never tried: the choice is then flagged as sitting at the edge of what
the search could try, as it is when the search hits ``MAX_POINTS``.
"""
import dataclasses
from typing import Dict, List, Sequence, Tuple

#: A grid point: (lr step, scale step).
Point = Tuple[int, int]

#: The lr steps the search starts from: 3e-4, 1e-3, 3e-3.
START_LRS = (-7, -6, -5)
#: Hard limits of the grid (inclusive): lr 1e-5 .. 1e-1, scale factor 4^-3 .. 4^3.
LR_STEPS = (-10, -2)
SCALE_STEPS = (-3, 3)
#: The most points one search may try before it stops with its best so far (flagged).
MAX_POINTS = 16


def lr_of(step: int) -> float:
    """The learning rate of lr step ``step``: 10^(step // 2), times 3 for an odd step."""
    return float(f'{1 if step % 2 == 0 else 3}e{step // 2}')


def lr_step_of(lr: float) -> int:
    """The lr step whose learning rate is ``lr`` (one of the grid's values)."""
    for step in range(-40, 21):
        if abs(lr_of(step) - lr) <= 1e-9 * lr:
            return step
    raise ValueError(f'transfer: lr {lr!r} is not on the half-decade grid '
                     '(1e-4, 3e-4, 1e-3, ...).')


def scale_factor(step: int) -> float:
    """The factor of scale step ``step`` on the method's default knob: 4^step."""
    return 4.0**step


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one tried point gave: its validation score and whether it collapsed.

    Args:
        val (float): Validation score (%, higher is better).
        collapsed (bool): The run diverged (non-finite loss) or scored at chance.
    """

    val: float
    collapsed: bool = False

    def rank(self) -> Tuple[int, float]:
        """Orders outcomes: any run that did not collapse above every one that did."""
        return (0 if self.collapsed else 1, self.val)


def best_point(tried: Dict[Point, Outcome]) -> Point:
    """The best tried point: highest rank; on a tie the lower lr, then the scale step closest
    to the default, then the lower scale step (so the choice never depends on order)."""
    return max(tried, key=lambda p: (tried[p].rank(), -p[0], -abs(p[1]), -p[1]))


def lr_neighbours(point: Point) -> List[Point]:
    return [(point[0] - 1, point[1]), (point[0] + 1, point[1])]


def scale_neighbours(point: Point) -> List[Point]:
    return [(point[0], point[1] - 1), (point[0], point[1] + 1)]


def inside(point: Point, knob: bool) -> bool:
    """Whether ``point`` lies within the hard limits (scale step 0 without a knob)."""
    scale_ok = SCALE_STEPS[0] <= point[1] <= SCALE_STEPS[1] if knob else point[1] == 0
    return LR_STEPS[0] <= point[0] <= LR_STEPS[1] and scale_ok


def start_points(lr_steps: Sequence[int] = START_LRS) -> List[Point]:
    """The first round of a search from scratch: ``lr_steps`` at the default scale."""
    return [(k, 0) for k in lr_steps]


def warm_start_points(choice: Point, knob: bool) -> List[Point]:
    """The first round of a search that starts from another search's choice: that point and
    its two lr neighbours (at its scale; at the default scale for a method without a knob),
    within the limits."""
    centre = (choice[0], choice[1] if knob else 0)
    return [p for p in [lr_neighbours(centre)[0], centre, lr_neighbours(centre)[1]]
            if inside(p, knob)]


def next_points(tried: Dict[Point, Outcome], knob: bool,
                start: Sequence[Point] = tuple(start_points()),
                max_points: int = MAX_POINTS) -> List[Point]:
    """The points to try next, in a fixed order; empty when the search is over.

    Args:
        tried (dict): Every finished point and its outcome.
        knob (bool): Whether the method has a scale knob to search.
        start (Sequence[Point]): The points of the first round. Defaults to
            ``START_LRS`` at the default scale.
        max_points (int): The most points the search may try. Defaults to ``MAX_POINTS``.
    """
    first = [p for p in start if p not in tried][:max_points - len(tried)]
    if first or len(tried) >= max_points:
        return first
    best = best_point(tried)
    groups = [lr_neighbours(best)] + ([scale_neighbours(best)] if knob else [])
    for group in groups:
        untried = [p for p in group if p not in tried and inside(p, knob)]
        if untried:
            return untried[:max_points - len(tried)]
    return []


def edges(tried: Dict[Point, Outcome], knob: bool, max_points: int = MAX_POINTS) -> List[str]:
    """Why the chosen (best) point may not be the optimum, in words; empty when it has a
    tried, no-better neighbour on both sides in lr (and in scale for a method with a knob).

    Returns:
        list: e.g. ['lr at the upper limit of the grid'].
    """
    best = best_point(tried)
    flags = ['every point tried collapsed'] if tried[best].collapsed else []
    axes = [('lr', lr_neighbours(best))] + ([('scale', scale_neighbours(best))] if knob else [])
    for axis, neighbours in axes:
        for neighbour, side in zip(neighbours, ('lower', 'upper')):
            if neighbour in tried:
                continue
            if not inside(neighbour, knob):
                flags.append(f'{axis} at the {side} limit of the grid')
            else:
                flags.append(f'{axis}: {side} neighbour untried (the search stopped at '
                             f'{max_points} points)')
    return flags
