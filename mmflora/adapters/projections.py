"""An attention module's input projection, seen as a Linear layer that carries an adapter.

``nn.MultiheadAttention`` holds its q, k and v weights as raw Parameters: stacked in
``in_proj_weight`` (3E, E), or as ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when
key and value have other sizes, with one stacked ``in_proj_bias`` (3E). A :class:`Projection`
is a view of one such weight — the whole stack ('in_proj') or one row block ('q_proj',
'k_proj', 'v_proj') — with the attributes of a Linear layer (``in_features``,
``out_features``, ``weight``, ``bias``), so the FLoRA, LoRA and DoRA layer code builds,
merges and describes its update unchanged. It holds no base tensor: ``weight`` reads the
attention module's Parameter (a view of its rows), so the attention keeps its parameter names
and a merge writes into that Parameter.

A projection is not an ``nn.Linear`` instance on purpose: init schemes written for a model's
Linear layers (``trunc_normal_`` on every ``nn.Linear``) must not re-initialise the attention's
own weights, which the unadapted model does not touch either.
"""
from typing import Dict, Optional, Tuple

from torch import Tensor, nn

from .config import AdapterConfig
from .dora import DoRAMixin
from .flora import FLoRAMixin
from .lora import LoRAMixin

#: The input projections and the row block of the stacked q, k, v each one covers.
BLOCKS = {'q_proj': 0, 'k_proj': 1, 'v_proj': 2}
INPUT_PARTS = ('in_proj', ) + tuple(BLOCKS)


def _rows(block: int, size: int) -> slice:
    return slice(block * size, (block + 1) * size)


class Projection(nn.Module):
    """One input projection of an attention module, with a Linear layer's attributes.

    Attributes:
        part (str): 'in_proj' (q, k and v stacked) or 'q_proj', 'k_proj', 'v_proj'.
        in_features (int): Input width of the projection.
        out_features (int): Output width (3E for 'in_proj').
    """

    base_class = nn.Linear

    @classmethod
    def view(cls, owner: nn.Module, part: str) -> 'Projection':
        """A bare view of ``owner``'s ``part`` (counting parameters, without building any)."""
        projection = cls.__new__(cls)
        nn.Module.__init__(projection)
        projection._bind(owner, part)
        return projection

    def _bind(self, owner: nn.Module, part: str) -> None:
        if part not in INPUT_PARTS:
            raise ValueError(f'unknown input projection {part!r}; one of {INPUT_PARTS}')
        stacked = owner._qkv_same_embed_dim
        if part == 'in_proj' and not stacked:
            raise ValueError(f'{part}: this attention holds separate q, k and v weights '
                             f'(kdim/vdim differ from embed_dim); adapt q_proj, k_proj, v_proj')
        size = owner.embed_dim
        block = BLOCKS.get(part)
        self.part = part
        self._weight_name = 'in_proj_weight' if stacked else f'{part}_weight'
        self._weight_rows = _rows(block, size) if stacked and block is not None else None
        self._bias_rows = None if block is None else _rows(block, size)
        self.bind_owner(owner)
        weight = self.weight
        self.out_features, self.in_features = int(weight.shape[0]), int(weight.shape[1])

    def bind_owner(self, owner: nn.Module) -> None:
        """Point the view at ``owner`` (kept outside ``_modules``: the owner is the parent)."""
        self.__dict__['_owner'] = owner

    @property
    def weight(self) -> Tensor:
        """The projection's base weight: the owner's Parameter or a view of its rows."""
        weight = getattr(self.__dict__['_owner'], self._weight_name)
        return weight if self._weight_rows is None else weight[self._weight_rows]

    @property
    def bias(self) -> Optional[Tensor]:
        bias = self.__dict__['_owner'].in_proj_bias
        if bias is None or self._bias_rows is None:
            return bias
        return bias[self._bias_rows]


class ProjectionLayer:
    """What an adapter on a projection does differently from one on a Linear layer.

    It is built on a view (:meth:`on`), not by adopting a module; it has no plain form of its
    own (the attention module gives back the plain attention); and it runs only merged: the
    attention hands its weights to ``F.multi_head_attention_forward``, which takes weights,
    not projections.
    """

    base_class = nn.Linear

    @classmethod
    def on(cls, owner: nn.Module, part: str, name: str,
           config: Optional[AdapterConfig] = None) -> 'ProjectionLayer':
        """An adapter on ``owner``'s ``part`` ('in_proj', 'q_proj', 'k_proj', 'v_proj')."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._adopt_nothing()
        layer._bind(owner, part)
        layer._setup(name, config)
        return layer

    @property
    def kind(self) -> str:
        return f'MultiheadAttention.{self.part}'

    @property
    def supports_factorised(self) -> bool:
        return False

    def _factorised_refusal(self) -> str:
        return (f'{self.name}: an attention projection runs merged only '
                f'(F.multi_head_attention_forward takes the projection weights); use '
                f'path="auto" or "merged" (auto keeps choosing the factorised path for Linear '
                f'and conv layers where it is cheaper)')

    def choose_path(self, x: Tensor) -> str:
        return 'merged'


class FLoRAProjection(ProjectionLayer, FLoRAMixin, Projection):
    """FLoRA on an attention module's input projection: dW = s * A_out G A_in^T."""
    base_class = nn.Linear


class LoRAProjection(ProjectionLayer, LoRAMixin, Projection):
    """LoRA on an attention module's input projection."""
    base_class = nn.Linear


class DoRAProjection(ProjectionLayer, DoRAMixin, Projection):
    """DoRA on an attention module's input projection (one magnitude per output row)."""
    base_class = nn.Linear


PROJECTION_LAYERS: Dict[str, type] = {
    'flora': FLoRAProjection,
    'lora': LoRAProjection,
    'dora': DoRAProjection,
}


def projection_shape(owner: nn.Module, part: str) -> Tuple[int, int]:
    """(out, in) of ``owner``'s ``part``, from its attributes (works on the meta device)."""
    view = Projection.view(owner, part)
    return view.out_features, view.in_features
