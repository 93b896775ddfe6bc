"""What the benchmarks share: the paper's ConvNeXt-V2-L settings, where the adapters go, and
looking a row of a benchmark's settings up by its key."""
from typing import Callable, List, Sequence, TypeVar

MiB = 2**20

Row = TypeVar('Row')

#: The paper's ConvNeXt-V2-L settings: FLoRA r=38, r3=2, s=4 (12.8M); LoRA r=8 (13.06M).
PAPER = dict(flora_r=38, r_kernel=2, scale=4.0, lora_r=8)

#: Where the adapters go: every Conv2d and Linear of a timm ConvNeXt-V2 except its head.
ADAPT = dict(targets=['Conv2d', 'Linear'], exclude=['head'])


def by_key(rows: Sequence[Row], key: str, unknown: Callable[[List[str]], Exception]) -> Row:
    """The row of a benchmark's settings (a method, a task) whose ``key`` is ``key``.

    Args:
        rows (Sequence): The rows, each with a ``key``.
        key (str): The key asked for.
        unknown (Callable): Builds the error raised when no row has ``key``, from the keys
            there are.

    Returns:
        The first row with that key.
    """
    for row in rows:
        if row.key == key:
            return row
    raise unknown([row.key for row in rows])
