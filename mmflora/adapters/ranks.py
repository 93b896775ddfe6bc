"""Ranks against the modes they reduce: capped to the mode size, or refused when strict."""
from typing import List, Sequence, Tuple


def resolve_ranks(name: str, mode_sizes: Sequence[int], requested: Sequence[int],
                  strict: bool) -> Tuple[List[int], List[str]]:
    """Check ranks against their modes: cap those above the mode size, or raise when strict.

    Args:
        name (str): Layer name for messages.
        mode_sizes (Sequence[int]): Size of each mode of the update.
        requested (Sequence[int]): The rank asked for on each mode.
        strict (bool): Raise instead of capping.

    Returns:
        tuple: The ranks to use, and one note per capped mode.
    """
    if len(requested) != len(mode_sizes):
        raise ValueError(f'{name}: {len(requested)} ranks {tuple(requested)} for an update with '
                         f'{len(mode_sizes)} modes {tuple(mode_sizes)}')
    ranks, notes = [], []
    for mode, (size, rank) in enumerate(zip(mode_sizes, requested)):
        if int(rank) != rank or rank < 1:
            raise ValueError(f'{name}: rank {rank} on mode {mode} (size {size}) must be an '
                             f'integer >= 1')
        if rank > size:
            if strict:
                raise ValueError(
                    f'{name}: rank {rank} on mode {mode} exceeds the mode size {size}; lower the '
                    f'rank (or use rank_pattern for this layer), or pass strict_ranks=False to cap')
            notes.append(f'mode {mode} rank {rank}->{size}')
            rank = size
        ranks.append(int(rank))
    return ranks, notes
