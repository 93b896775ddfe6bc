"""The procedurally pretrained base: the classifier it is trained as, and its file's checksum.

``tools/pretrain_backbone.py`` trains a ConvNeXt-V2 classifier on the procedural ``source``
task (:mod:`mmflora.datasets`) and writes its state dict in timm's layout with a JSON sidecar
that records, among the settings, the file's sha256. The probe tool rebuilds the same
classifier to load that file; the demo and the transfer benchmark check the file against its
sidecar before they adapt it.
"""
import hashlib
from typing import Dict, Tuple

from timm.models.convnext import ConvNeXt
from torch import nn

#: Images per forward pass when a tool scores or probes the classifier without gradients.
EVAL_CHUNK = 250


def arch_settings(arch: str) -> Dict[str, Tuple[int, ...]]:
    """Depths and dims of a ConvNeXt-V2 size, as :class:`mmflora.models.ConvNeXtV2` defines
    them.

    Raises:
        SystemExit: ``arch`` is not a size the backbone knows; the message lists those it does.
    """
    from mmflora.models import ConvNeXtV2
    if arch not in ConvNeXtV2.arch_settings:
        raise SystemExit(f'pretrain_backbone: --arch {arch!r} is unknown; use one of '
                         f'{sorted(ConvNeXtV2.arch_settings)}.')
    return ConvNeXtV2.arch_settings[arch]


def build_classifier(arch: str, num_classes: int) -> nn.Module:
    """A timm ConvNeXt-V2 classifier whose trunk matches ``ConvNeXtV2(arch)``.

    Args:
        arch (str): The size, a key of ``ConvNeXtV2.arch_settings`` ('atto', 'nano', ...).
        num_classes (int): Outputs of the linear layer after the pooled, normalised last stage.
    """
    settings = arch_settings(arch)
    return ConvNeXt(
        num_classes=num_classes,
        depths=settings['depths'],
        dims=settings['dims'],
        use_grn=True,
        ls_init_value=None,
        conv_mlp=False)


def file_sha256(path: str) -> str:
    """The sha256 of the file at ``path`` (hex), read in blocks of 1 MiB."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()
