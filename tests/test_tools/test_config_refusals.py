"""A config that cannot run ends the tools with one line naming the file or key and the fix,
before anything is built."""
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / 'tools') not in sys.path:
    sys.path.insert(0, str(REPO / 'tools'))

import count_params  # noqa: E402
import train as train_tool  # noqa: E402

# tools/test.py by its path: a plain `import test` could find the standard library's package.
_spec = importlib.util.spec_from_file_location('mmflora_tools_test', REPO / 'tools' / 'test.py')
test_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_tool)

DEMO = str(REPO / 'configs' / 'demo' / 'upernet_convnextv2_atto_demo_flora.py')


def refusal(main, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    message = str(info.value.code)
    assert '\n' not in message and 'Traceback' not in message
    return message


def test_a_typo_in_an_adapter_key_names_the_config_path_and_the_closest_key(tmp_path):
    message = refusal(train_tool.main, [DEMO, '--work-dir', str(tmp_path),
                                        '--cfg-options', 'model.backbone.adapter.methd=flora'])
    assert message.startswith('error: model.backbone.adapter: unknown options')
    assert "did you mean 'method'" in message and 'r_kernel' in message


def test_a_bad_adapter_value_names_its_config_path(tmp_path):
    message = refusal(train_tool.main, [DEMO, '--work-dir', str(tmp_path),
                                        '--cfg-options', 'model.backbone.adapter.r=2.5'])
    assert message.startswith('error: model.backbone.adapter.r=2.5: ')


def test_an_empty_config_names_the_file(tmp_path):
    empty = tmp_path / 'empty.py'
    empty.write_text('# nothing yet\n')
    for main, argv in ((train_tool.main, [str(empty)]),
                       (test_tool.main, [str(empty), 'x.pth']),
                       (count_params.main, [str(empty)])):
        message = refusal(main, argv)
        assert str(empty) in message and 'defines no `model`' in message


def test_a_bad_flora_hook_option_names_the_hook_entry(tmp_path):
    config = tmp_path / 'hooked.py'
    config.write_text(f"_base_ = ['{DEMO}']\n"
                      "custom_hooks = [dict(type='FLoRAHook', method='lora', r=4, alhpa=8)]\n")
    message = refusal(train_tool.main, [str(config), '--work-dir', str(tmp_path)])
    assert message.startswith('error: custom_hooks[0]: unknown options')
    assert "did you mean 'alpha'" in message
