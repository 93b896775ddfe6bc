"""What the transfer benchmark runs: its target tasks, its methods and the size of a run.

The benchmark is a small analogue of the paper's Table 1 on CPU: one pretrained
ConvNeXt-V2-atto trunk (``tools/pretrain_backbone.py``, the procedural ``source`` task)
adapted to target tasks with a small and a large domain gap, by every method of Table 1,
each at the learning rate (and scale knob) its own search chose (``search.py``), with the
same steps, data order and heads for every method.
"""
import dataclasses
from typing import Dict, Optional, Tuple

from ..settings import by_key

#: The default pretrained base (written by ``tools/pretrain_backbone.py``).
DEFAULT_BASE = 'checkpoints/convnextv2_atto_procedural.pth'
ARCH = 'atto'

#: AdamW's weight decay on every trainable tensor, as the paper's schedules set it.
WEIGHT_DECAY = 0.05
#: The heads (linear classifier, UperNet and its auxiliary head) start from scratch and train
#: at this multiple of the searched lr, as mmseg's fine-tuning configs set ``lr_mult=10`` on
#: their heads. With one lr for everything, the first run's dense searches showed the clash:
#: the frozen trunk's UperNet heads wanted lr 0.1 or more, full fine-tuning stayed near chance
#: at every lr up to 3e-3.
HEAD_LR_MULT = 10.0

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
        warm_start (str, optional): The task whose choice (per method) this task's search
            starts from, once that search is over (``schedule.py``). Defaults to None: the
            search starts from the profile's ``start_lrs`` at the default scale.
    """

    key: str
    task: str
    dense: bool
    gap: str
    metric: str
    warm_start: Optional[str] = None


TARGETS = (
    TargetTask('near-cls', 'near', False, 'small', 'top-1 accuracy (%)'),
    TargetTask('far-cls', 'far', False, 'large', 'top-1 accuracy (%)'),
    TargetTask('near-seg', 'near', True, 'small', 'mIoU (%)', warm_start='near-cls'),
    TargetTask('far-seg', 'far', True, 'large', 'mIoU (%)', warm_start='far-cls'),
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
    """

    key: str
    label: str
    method: str
    options: Tuple[Tuple[str, object], ...] = ()
    budget: Optional[str] = None

    @property
    def knob(self) -> Optional[str]:
        """The scale knob the search moves with the lr: FLoRA's ``scale`` (s), LoRA's and
        DoRA's ``alpha``; None for a method without one."""
        return dict(flora='scale', lora='alpha', dora='alpha').get(self.method)

    def knob_value(self, ranks: Dict[str, Dict[str, int]], scale_step: int) -> Optional[float]:
        """The knob at ``scale_step``: its default (s = 4, alpha = r) times 4^scale_step."""
        if self.knob is None:
            return None
        default = dict(self.options)['scale'] if self.knob == 'scale' else \
            ranks[self.budget][self.method]
        return float(default) * 4.0**scale_step

    def inject_options(self, ranks: Dict[str, Dict[str, int]], scale_step: int = 0) -> dict:
        """Options of ``FLoRAConvNeXtV2.adapter_config`` for this row at ``scale_step``, the
        rank and the knob included."""
        if scale_step and self.knob is None:
            raise ValueError(f'transfer: method {self.key!r} has no scale knob; scale step '
                             f'{scale_step} asked for.')
        options = dict(method=self.method, **dict(self.options))
        if self.budget is not None:
            options['r'] = ranks[self.budget][self.method]
        if self.knob is not None:
            options[self.knob] = self.knob_value(ranks, scale_step)
        return options


#: Table 1's conv forms: LoRA/DoRA in loralib's ConvLoRA form (structured depthwise
#: updates), FLoRA dense with r3 = 2 and the paper's s = 4 (the default the search starts
#: from; LoRA's and DoRA's default alpha is r); BitFit without GRN biases.
LORA = (('lora_conv_form', 'loralib'), ('mode', 'structured'))
FLORA = (('r_kernel', 2), ('scale', 4.0), ('mode', 'dense'), ('init', 'paper'))
METHODS = (
    MethodSpec('frozen', 'Frozen (heads only)', 'none'),
    MethodSpec('full', 'Full fine-tuning', 'full'),
    MethodSpec('bitfit', 'BitFit', 'bitfit', (('exclude', (r'\.mlp\.grn$', )), )),
    MethodSpec('lora-low', 'LoRA', 'lora', LORA, 'low'),
    MethodSpec('dora-low', 'DoRA', 'dora', LORA, 'low'),
    MethodSpec('flora-low', 'FLoRA', 'flora', FLORA, 'low'),
    MethodSpec('lora-high', 'LoRA', 'lora', LORA, 'high'),
    MethodSpec('dora-high', 'DoRA', 'dora', LORA, 'high'),
    MethodSpec('flora-high', 'FLoRA', 'flora', FLORA, 'high'),
)
#: FLoRA against these, per task and budget, in the verdict table.
BASELINES = ('lora', 'dora', 'bitfit')
#: The learning rate of the paper's schedules.
PAPER_LR = 1e-4


def steps_of(profile: dict, target: TargetTask) -> int:
    """Training steps of every run on ``target`` (the same for every method)."""
    return profile['dense_steps'] if target.dense else profile['steps']


def batch_of(profile: dict, target: TargetTask) -> int:
    """Images per training step on ``target`` (the same for every method)."""
    return profile['dense_batch'] if target.dense else profile['batch']


def warmup_of(profile: dict, target: TargetTask) -> int:
    """Warm-up steps of every run on ``target``: ``warmup`` of its steps, at least one."""
    return max(1, round(profile['warmup'] * steps_of(profile, target)))


def method_by_key(key: str) -> MethodSpec:
    return by_key(METHODS, key, lambda keys: KeyError(
        f'transfer: method {key!r} is unknown; use one of {keys}.'))


def target_by_key(key: str) -> TargetTask:
    return by_key(TARGETS, key, lambda keys: KeyError(
        f'transfer: task {key!r} is unknown; use one of {keys}.'))


#: Sizes of a full and of a --quick run. ``train`` images per seed are cycled for ``steps``
#: batches of ``batch`` (``dense_steps`` of ``dense_batch`` on the dense tasks), the first
#: ``warmup`` of them warming up; ``val`` decides the search, ``test`` is reported. The
#: search runs on ``search_seed``, from the lr steps ``start_lrs`` (or from the choice of the
#: task's ``warm_start`` when ``warm_starts`` is on), and tries at most ``max_points`` points
#: (``search.py``); the final stage runs ``final_seeds`` at the chosen point.
#:
#: The full run is sized to about 2.5 h on 2 cores of the machine it was measured on. CPU
#: time per step at batch 8: 40-45 ms for the frozen trunk, 130-180 ms for the adapters on the
#: image tasks, 75-100 ms more on the dense tasks. Pilots of the frozen trunk (one seed, its
#: best lr of those tried): doubling 200 steps of batch 8 added 3 points on near-cls and none
#: on far-cls; on near-seg UperNet's heads were still far from done at 200 steps (18.8 mIoU;
#: 28.2 at 300, 48.6 at 400; 41.1 with 400 steps of batch 4), so the dense tasks get 400 steps
#: of batch 4 and a search that starts from the classification task's choice.
PROFILES = {
    'full': dict(search_seed=0, final_seeds=(1, 2, 3, 4, 5), start_lrs=(-7, -6, -5),
                 warm_starts=True, max_points=12, steps=120, batch=8, dense_steps=400,
                 dense_batch=4, warmup=0.1, image_size=64, train=800, val=300, test=600,
                 eval_batch=100, workers=2, head_channels=64, aux_channels=32),
    'quick': dict(search_seed=0, final_seeds=(1, ), start_lrs=(-6, ), warm_starts=True,
                  max_points=2, steps=3, batch=4, dense_steps=4, dense_batch=4, warmup=0.3,
                  image_size=64, train=8, val=8, test=8, eval_batch=8, workers=2,
                  head_channels=16, aux_channels=8),
}

#: Search points a chain is taken to need in all, for the ETA while its search goes on (by
#: whether the method has a scale knob): the means of the search on noisy quadratic score
#: surfaces, 4.0 and 6.7 points (tests/test_benchmarks/test_transfer_search.py).
TYPICAL_POINTS = {False: 4, True: 7}
