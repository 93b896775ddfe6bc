"""Which adapter layer class carries each method on each base layer type."""
from typing import Dict, Optional

from .dora import DORA_LAYERS
from .flora import FLORA_LAYERS
from .lora import LORA_LAYERS

#: Methods that replace layers with adapter layers, and their layer class per base type.
LAYER_METHODS: Dict[str, Dict[type, type]] = {
    'flora': FLORA_LAYERS,
    'lora': LORA_LAYERS,
    'dora': DORA_LAYERS
}


def layer_class(method: str, base_class: type) -> Optional[type]:
    """The adapter layer class for ``method`` on a ``base_class`` (None for non-layer methods)."""
    layers = LAYER_METHODS.get(method)
    return None if layers is None else layers[base_class]


def is_layer_method(method: str) -> bool:
    """Whether ``method`` adds adapter layers (flora, lora, dora) rather than unfreezing."""
    return method in LAYER_METHODS
