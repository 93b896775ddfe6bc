"""Checkpoints in each published ConvNeXt-V2 layout, written from a backbone."""
from typing import Dict, Mapping

from torch import Tensor

from mmflora.models.checkpoint_formats import LAYOUTS

# The model prefix a published file puts before the layout's keys: mmpretrain's
# ImageClassifier keeps the backbone under ``backbone.`` (unwrap_state_dict
# removes it on loading).
_MODEL_PREFIX = {'mmpretrain': 'backbone.'}


def export_state_dict(state_dict: Mapping, fmt: str) -> Dict[str, Tensor]:
    """Write a backbone's tensors under the names and shapes of ``fmt``.

    The inverse of ``convert_to_backbone``, from the same layout records: each
    tensor goes through the first rule that names it from the backbone's side.
    Tensors the layout has no place for (adapter tensors, output norms it
    lacks) are left out; ``norm3`` becomes the final norm where the layout has
    one (``head.norm`` for timm, ``norm`` for official).

    Args:
        state_dict: The backbone's state dict (its own names).
        fmt: One of ``FORMATS``.

    Returns:
        The tensors as the format publishes them; mmpretrain keys carry the
        ``backbone.`` prefix, FCMAE keys the ``encoder.`` prefix.
    """
    layout = LAYOUTS[fmt]
    prefix = _MODEL_PREFIX.get(fmt, '') + layout.prefix
    exported = {}
    for key, value in state_dict.items():
        for rule in layout.rules:
            theirs = rule.their_key(key)
            if theirs is not None:
                exported[prefix + theirs] = rule.to_theirs(value)
                break
    return exported
