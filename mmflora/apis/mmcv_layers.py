"""mmcv's layer wrappers carry adapters like the torch layers they wrap.

``mmcv.cnn.bricks.wrappers.Linear``, ``Conv2d`` and ``Conv3d`` (registered under the config
types ``'Linear'``, ``'Conv'``/``'Conv2d'`` and ``'Conv3d'``, and built by many OpenMMLab
heads, necks and FFNs) override ``forward`` only to return an empty output for an empty input
on PyTorch older than 1.4/1.5; on newer versions their forward is the torch layer's. They are
declared forward-equivalent to their torch base here, so the core (which imports no OpenMMLab
package) adapts them. An adapted wrapper is a subclass of both the adapter layer and the
wrapper (``isinstance(layer, mmcv.cnn.bricks.wrappers.Linear)`` still holds), and
``merge_and_unload`` gives back the wrapper class.

An empty batch keeps working: the adapter layer runs the torch op, which returns the empty
output the wrapper would (checked in the tests). mmcv's ``ConvTranspose2d/3d`` and
``MaxPool2d/3d`` wrappers have no adapter layer to carry.
"""
from mmcv.cnn.bricks import wrappers

from mmflora.adapters import declare_forward_equivalent

#: The wrappers declared, and the torch layer each one wraps.
MMCV_WRAPPERS = (wrappers.Linear, wrappers.Conv2d, wrappers.Conv3d)
_REASON = ('mmcv wrapper: its forward differs from {base}.forward only for empty inputs on '
           'PyTorch < 1.5, which this stack does not run')


def declare_mmcv_wrappers() -> None:
    """Declare mmcv's Linear, Conv2d and Conv3d wrappers forward-equivalent (idempotent)."""
    for wrapper in MMCV_WRAPPERS:
        base = wrapper.__mro__[1]
        declare_forward_equivalent(wrapper, _REASON.format(base=f'nn.{base.__name__}'))
