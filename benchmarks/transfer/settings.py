"""What the transfer benchmark runs: its target tasks, its methods and the size of a run.

The benchmark is a small analogue of the paper's Table 1 on CPU: one pretrained
ConvNeXt-V2-atto trunk (``tools/pretrain_backbone.py``, the procedural ``source`` task)
adapted to target tasks with a small and a large domain gap, by every method of Table 1,
with the same steps, data order and learning-rate grid for each.
"""
import dataclasses
from typing import Dict, Optional, Tuple

from ..settings import by_key

#: The default pretrained base (written by ``tools/pretrain_backbone.py``).
DEFAULT_BASE = 'checkpoints/convnextv2_atto_procedural.pth'
ARCH = 'atto'

#: AdamW's weight decay on every trainable tensor, as the paper's schedules set it.
WEIGHT_DECAY = 0.05

#: Seed streams. Run seed ``s`` draws its training set from ``(s, TRAIN_STREAM)`` and its
#: epoch orders from ``(s, ORDER_STREAM, epoch)``; the validation and test splits are the same
#: for every run, each from its own seed (no seed of a run or of the pretraining reaches them).
TRAIN_STREAM, ORDER_STREAM = 0, 1
VAL_SEED, TEST_SEED = (20_000, 2), (30_000, 3)
#: torch seeds of a run: heads (identical for every method), adapters, training (dropout).
HEAD_TORCH_SEED, ADAPTER_TORCH_SEED, TRAIN_TORCH_SEED = 0, 1000, 2000


@dataclasses.dataclass(frozen=True)
class TargetTask:
    """A target task: a procedural task of :mod:`mmflora.datasets` and how it is scored.

    Args:
        key (str): Name in the results data.
        task (str): The procedural task (``mmflora.datasets.TASKS``).
        dense (bool): Per-pixel labels (segmentation through mmseg's UperNet) instead of
            image labels (a linear classifier on the pooled last stage).
        gap (str): The domain gap to the pretraining task, in words.
        metric (str): What the score is.
    """

    key: str
    task: str
    dense: bool
    gap: str
    metric: str


TARGETS = (
    TargetTask('near-cls', 'near', False, 'small', 'top-1 accuracy (%)'),
    TargetTask('far-cls', 'far', False, 'large', 'top-1 accuracy (%)'),
    TargetTask('near-seg', 'near', True, 'small', 'mIoU (%)'),
)

#: Shares of the trunk's parameters the rank-matched methods get: the paper's LoRA r=8 and
#: r=32 on ConvNeXt-V2-L (12.9M and 51.8M of about 196M parameters, Table 1).
BUDGETS = dict(low=0.065, high=0.26)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One row of the table: a Table 1 method and its options.

    Args:
        key (str): Name in the results data.
        label (str): Row label (ranks are added once they are solved).
        method (str): ``inject_adapters`` method.
        options (dict): Other ``inject_adapters`` options (the rank comes from ``budget``).
        budget (str, optional): Key of ``BUDGETS`` for rank-matched methods.
        table (str): 'main' or 'init' (the init comparison only).
    """

    key: str
    label: str
    method: str
    options: Tuple[Tuple[str, object], ...] = ()
    budget: Optional[str] = None
    table: str = 'main'

    def inject_options(self, ranks: Dict[str, Dict[str, int]]) -> dict:
        """Options of ``FLoRAConvNeXtV2.adapter_config`` for this row, the rank included."""
        options = dict(method=self.method, **dict(self.options))
        if self.budget is not None:
            options['r'] = ranks[self.budget][self.method]
        return options


#: Table 1's conv forms: LoRA/DoRA in loralib's ConvLoRA form (structured depthwise
#: updates), FLoRA dense with r3 = 2 and s = 4; BitFit without GRN biases.
LORA = (('lora_conv_form', 'loralib'), ('mode', 'structured'))
FLORA = (('r_kernel', 2), ('scale', 4.0), ('mode', 'dense'))
METHODS = (
    MethodSpec('frozen', 'Frozen (heads only)', 'none'),
    MethodSpec('full', 'Full fine-tuning', 'full'),
    MethodSpec('bitfit', 'BitFit', 'bitfit', (('exclude', (r'\.mlp\.grn$', )), )),
    MethodSpec('lora-low', 'LoRA', 'lora', LORA, 'low'),
    MethodSpec('dora-low', 'DoRA', 'dora', LORA, 'low'),
    MethodSpec('flora-low', 'FLoRA', 'flora', FLORA + (('init', 'paper'), ), 'low'),
    MethodSpec('lora-high', 'LoRA', 'lora', LORA, 'high'),
    MethodSpec('dora-high', 'DoRA', 'dora', LORA, 'high'),
    MethodSpec('flora-high', 'FLoRA', 'flora', FLORA + (('init', 'paper'), ), 'high'),
    MethodSpec('flora-low-unit', 'FLoRA, init=unit', 'flora', FLORA + (('init', 'unit'), ),
               'low', table='init'),
)
#: The init comparison: FLoRA's two factor inits at the low budget.
INIT_ROWS = ('flora-low', 'flora-low-unit')
#: The learning rate of the paper's schedules.
PAPER_LR = 1e-4


def steps_of(profile: dict, target: TargetTask) -> int:
    """Training steps of every run on ``target`` (the same for every method)."""
    return profile['dense_steps'] if target.dense else profile['steps']


def method_by_key(key: str) -> MethodSpec:
    return by_key(METHODS, key, lambda keys: KeyError(
        f'transfer: method {key!r} is unknown; use one of {keys}.'))


def target_by_key(key: str) -> TargetTask:
    return by_key(TARGETS, key, lambda keys: KeyError(
        f'transfer: task {key!r} is unknown; use one of {keys}.'))


#: Sizes of a full and of a --quick run. ``train`` images per seed are cycled for ``steps``
#: batches (``dense_steps`` on the dense task, whose heads start from scratch and need more);
#: ``val`` picks the learning rate, ``test`` is reported.
PROFILES = {
    'full': dict(seeds=(0, 1, 2), lrs=(1e-4, 1e-3, 3e-3), steps=100, dense_steps=200,
                 warmup=10, batch=16,
                 image_size=64, train=800, val=300, test=600, eval_batch=100, workers=2,
                 head_channels=64, aux_channels=32),
    'quick': dict(seeds=(0, ), lrs=(1e-3, ), steps=3, dense_steps=4, warmup=1, batch=4,
                  image_size=64,
                  train=8, val=8, test=8, eval_batch=8, workers=2, head_channels=16,
                  aux_channels=8),
}
