"""Every shipped paper config writes adapter files and dW statistics (so README's adapter-file
commands have something to act on) and carries the guard hooks."""
import pytest
from mmengine.config import Config

from .helpers import PAPER_CONFIGS

EXPECTED = ('CheckpointMatchHook', 'RandomStateHook', 'TrainableParamsHook',
            'AdapterCheckpointHook', 'DeltaWeightStatsHook')


@pytest.mark.parametrize('task', sorted(PAPER_CONFIGS))
def test_paper_configs_write_adapter_files_and_dw_statistics(task):
    cfg = Config.fromfile(str(PAPER_CONFIGS[task]))
    names = [hook['type'] for hook in cfg.custom_hooks]
    assert tuple(names) == EXPECTED


@pytest.mark.parametrize('baseline,hooks', [
    ('full', EXPECTED[:3]), ('frozen', EXPECTED), ('bitfit', EXPECTED),
    ('lora_r8', EXPECTED), ('dora_r8', EXPECTED)])
@pytest.mark.parametrize('task', sorted(PAPER_CONFIGS))
def test_baselines_keep_the_hooks_that_have_something_to_act_on(baseline, hooks, task):
    stem = PAPER_CONFIGS[task].stem
    cfg = Config.fromfile(str(PAPER_CONFIGS[task].parents[1] / 'baselines' /
                              f'{baseline}_{stem}.py'))
    assert tuple(hook['type'] for hook in cfg.custom_hooks) == hooks
