"""The ``out_indices`` argument of mmflora's backbones: which stages or blocks give outputs."""
from typing import Sequence, Tuple, Union


def resolve_out_indices(out_indices: Union[int, Sequence[int]], count: int, owner: str,
                        unit: str) -> Tuple[int, ...]:
    """Check ``out_indices`` against ``count`` stages (or blocks) and make them non-negative.

    Args:
        out_indices: One index or several, in output order; negative ones count from the end.
        count: How many stages or blocks there are.
        owner: The backbone, for messages (``'InternViT6B'``).
        unit: What an index counts, for messages (``'stage'``, ``'block'``).

    Raises:
        ValueError: An index out of range, one given twice, or none at all.
    """
    if isinstance(out_indices, int):
        out_indices = (out_indices, )
    resolved = []
    for index in out_indices:
        position = index + count if index < 0 else index
        if not 0 <= position < count:
            raise ValueError(
                f'{owner} out_indices entry {index} is out of range for {count} {unit}s; use '
                f'{unit} indices 0 ... {count - 1} (negative ones count from the last).')
        resolved.append(position)
    if not resolved or len(set(resolved)) != len(resolved):
        raise ValueError(f'{owner} out_indices={tuple(out_indices)} must name each {unit} at '
                         f'most once and at least one {unit}.')
    return tuple(resolved)
