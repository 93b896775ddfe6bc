"""The learning-rate schedule of the pretraining and the transfer benchmark."""
import math


def warmup_cosine_lr(step: int, peak: float, warmup: int, steps: int) -> float:
    """The learning rate of ``step`` (counted from 0): a linear warm-up to ``peak`` over
    ``warmup`` steps, then a cosine decay that reaches 0 after the last of ``steps`` steps.

    Args:
        step (int): The optimizer step about to run.
        peak (float): The learning rate at the end of the warm-up.
        warmup (int): Steps of the warm-up (0 starts at ``peak``).
        steps (int): All steps of the run, the warm-up included.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
