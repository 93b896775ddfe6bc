"""Shared pieces of the config and tool tests: shrinking configs and small runs on CPU.

Paper configs describe ConvNeXt-V2-L at full resolution. Tests keep every setting that
makes the config what it is (detector, heads, losses, pipelines, metric, optimizer) and
shrink only sizes: the backbone becomes 'atto', channels follow, images get small, and the
data is a few synthetic images from tools/make_demo_data.py.
"""
import os.path as osp
import sys
import uuid
from pathlib import Path

from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / 'configs'
TOOLS = REPO / 'tools'
SHARED_DOTA = REPO.parent / 'shared' / 'data' / 'dota_sample'

# ConvNeXt-V2-atto stage widths (C, 2C, 4C, 8C with C = 40).
ATTO_DIMS = (40, 80, 160, 320)

if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

import make_demo_data  # noqa: E402
import train as train_tool  # noqa: E402

SHAPE_CLASSES = make_demo_data.SHAPE_CLASSES
ROTATED_CLASSES = make_demo_data.ROTATED_CLASSES
SEG_CLASSES = make_demo_data.SEG_CLASSES

PAPER_CONFIGS = {
    'coco': CONFIG_DIR / 'flora' / 'maskrcnn_convnextv2_l_coco.py',
    'dota': CONFIG_DIR / 'flora' / 'oriented_rcnn_convnextv2_l_dota.py',
    'ade': CONFIG_DIR / 'flora' / 'upernet_convnextv2_l_ade20k.py',
}
#: The paper's Table 2 setting on mmseg's ViT-B/16 (FLoRAHook injects the adapters).
TABLE2_CONFIG = CONFIG_DIR / 'flora' / 'upernet_vit-b16_ade20k.py'
# A tiny ViT: width 32, 4 blocks of 2 heads, 16-pixel patches.
TINY_VIT_DIMS = 32


def all_configs():
    """Every runnable config under configs/ (the _base_ pieces are not runnable alone)."""
    return sorted(p for p in CONFIG_DIR.rglob('*.py') if '_base_' not in p.parts)


def internvit_configs():
    """The InternViT-6B configs (Table 2): FLoRA at two budgets and the baselines."""
    return [p for p in all_configs() if 'internvit6b' in p.stem]


def table2_configs():
    """The Table 2 configs on ViT-B/16: FLoRA and the baselines."""
    return [p for p in all_configs() if 'vit-b16' in p.stem]


def shrink_model(model: dict) -> None:
    """Swap the backbone for an untrained small one and fit the channels after it.

    ConvNeXt-V2 becomes 'atto'; mmseg's ViT-B/16 a ViT of width 32; InternViT-6B four blocks
    of width 64 (``TINY_VIT``) feeding the same neck and heads, 16 channels wide.
    """
    if model.backbone.type == 'InternViT6B':
        _shrink_internvit(model)
        return
    if model.backbone.type == 'VisionTransformer':
        shrink_vit(model)
        return
    model.backbone.arch = 'atto'
    model.backbone.init_cfg = None
    if 'neck' in model:
        model.neck.in_channels = list(ATTO_DIMS)
    if 'decode_head' in model:
        model.decode_head.in_channels = [ATTO_DIMS[i] for i in model.decode_head.in_index]
    if 'auxiliary_head' in model:
        model.auxiliary_head.in_channels = ATTO_DIMS[model.auxiliary_head.in_index]


#: The InternViT-6B configs' backbone shrunk for CPU runs: 4 x 4 patches of 14 px at 56 px.
TINY_VIT = dict(img_size=56, embed_dim=64, depth=4, num_heads=4, out_indices=(0, 1, 2, 3),
                init_cfg=None)


def _shrink_internvit(model: dict) -> None:
    model.backbone.update(TINY_VIT)
    width = TINY_VIT['embed_dim']
    model.neck.embed_dim = width
    model.decode_head.update(in_channels=[width] * 4, channels=16)
    model.auxiliary_head.update(in_channels=width, channels=16)


def shrink_vit(model: dict, image_size: int = 96) -> None:
    """mmseg's ViT-B/16 UperNet with a ViT of width 32 (4 blocks, 2 heads) and narrow heads."""
    model.backbone.update(img_size=(image_size, image_size), embed_dims=TINY_VIT_DIMS,
                          num_layers=4, num_heads=2, out_indices=(0, 1, 2, 3), init_cfg=None)
    model.neck.update(in_channels=[TINY_VIT_DIMS] * 4, out_channels=TINY_VIT_DIMS)
    model.decode_head.update(in_channels=[TINY_VIT_DIMS] * 4, channels=16)
    model.auxiliary_head.update(in_channels=TINY_VIT_DIMS, channels=16)


def build_model(cfg: Config):
    """Build ``cfg.model`` in the config's default scope, as the runner would."""
    from mmengine.registry import MODELS, DefaultScope
    train_tool.register_scope_modules(cfg)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(cfg.model)


def make_data(root: Path, num_train: int = 4, num_val: int = 2, img_size: int = 96) -> Path:
    """Write the three synthetic datasets under ``root`` and return it."""
    make_demo_data.main(['--out-dir', str(root), '--num-train', str(num_train), '--num-val',
                         str(num_val), '--img-size', str(img_size)])
    return root


def _resize_pipeline(pipeline: list, size: int) -> None:
    """Make every resize and crop of a pipeline work at ``size`` pixels."""
    for step in pipeline:
        kind = step['type'].split('.')[-1]
        if kind in ('Resize', 'RandomResize'):
            step['scale'] = (size, size)
        if kind == 'RandomCrop' and 'crop_size' in step:
            step['crop_size'] = (size, size)


def _loader(cfg: Config, key: str, batch_size: int) -> None:
    loader = cfg[key]
    loader.batch_size = batch_size
    loader.num_workers = 0
    loader.persistent_workers = False


def small_run_config(task: str, data_root: Path, work_dir: Path, config: Path = None,
                     size: int = 96, batch_size: int = 2) -> Config:
    """A paper config of ``task`` shrunk to run a couple of CPU iterations on demo data.

    Training runs one epoch (or ``2`` iterations for iteration-based schedules) over the
    training images, then one validation pass.
    """
    cfg = Config.fromfile(str(config or PAPER_CONFIGS[task]))
    shrink_model(cfg.model)
    cfg.work_dir = str(work_dir)
    cfg.launcher = 'none'
    # A unique visualizer per runner: the instance is a process-wide singleton by name.
    cfg.visualizer.name = f'vis_{uuid.uuid4().hex[:8]}'
    cfg.default_hooks.logger.interval = 1
    cfg.randomness = dict(seed=0)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        _loader(cfg, key, batch_size if key == 'train_dataloader' else 1)
        _resize_pipeline(cfg[key].dataset.pipeline, size)

    train_set, val_set = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    if task == 'coco':
        root = osp.join(data_root, 'coco') + '/'
        for dataset in (train_set, val_set):
            dataset.data_root = root
            dataset.metainfo = dict(classes=SHAPE_CLASSES)
        cfg.val_evaluator.ann_file = root + 'annotations/instances_val2017.json'
        cfg.model.roi_head.bbox_head.num_classes = len(SHAPE_CLASSES)
        cfg.model.roi_head.mask_head.num_classes = len(SHAPE_CLASSES)
    elif task == 'dota':
        root = osp.join(data_root, 'dota') + '/'
        for dataset, split in ((train_set, 'train'), (val_set, 'val')):
            dataset.data_root = root
            dataset.ann_file = f'{split}/annfiles/'
            dataset.data_prefix = dict(img_path=f'{split}/images/')
            dataset.metainfo = dict(classes=ROTATED_CLASSES)
        cfg.model.roi_head.bbox_head.num_classes = len(ROTATED_CLASSES)
    elif task == 'ade':
        for dataset in (train_set, val_set):
            # ADE20KDataset accepts only ADE's own class names; the layout is the same.
            dataset.type = 'BaseSegDataset'
            dataset.data_root = osp.join(data_root, 'ade')
            dataset.metainfo = dict(classes=SEG_CLASSES)
            dataset.img_suffix = '.jpg'
            dataset.seg_map_suffix = '.png'
            dataset.reduce_zero_label = True
        cfg.model.data_preprocessor.size = (size, size)
        cfg.model.decode_head.num_classes = len(SEG_CLASSES)
        cfg.model.auxiliary_head.num_classes = len(SEG_CLASSES)
        if cfg.model.test_cfg.get('mode') == 'slide':
            crop = size * 2 // 3
            cfg.model.test_cfg.crop_size = (crop, crop)
            cfg.model.test_cfg.stride = (crop // 2, crop // 2)
    else:
        raise ValueError(f'unknown task {task!r}; use one of {sorted(PAPER_CONFIGS)}')
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator

    if cfg.train_cfg.type == 'IterBasedTrainLoop':
        cfg.train_cfg.max_iters = 2
        cfg.train_cfg.val_interval = 2
        cfg.default_hooks.checkpoint.interval = 2
    else:
        cfg.train_cfg.max_epochs = 1
    return cfg
