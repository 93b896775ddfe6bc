"""What every adapter layer shares: its construction, the update, forward paths, the eval
cache and merging.

An adapter layer is a subclass of its base layer's own class (a FLoRA ``Conv2d`` is still an
``nn.Conv2d``; on a subclass such as mmcv's ``Linear`` wrapper, a subclass of that one) that
adopts the base layer's state (:mod:`.adoption`: the ``weight`` and ``bias`` Parameters under
the same names, hooks and attributes), so that plain checkpoints load into an adapted model
and back, and :meth:`~.adoption.Adopted.to_plain` gives exactly that back. Subclasses add
their adapter tensors and say how to build the weight update and how to run it as a small
branch.
"""
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .adoption import Adopted
from .base_ops import BaseLayerOps
from .config import AdapterConfig
from .geometry import UpdateGeometry, update_geometry
from .paths import choose_path

HALF_DTYPES = (torch.float16, torch.bfloat16)


def adapter_dtype(base_dtype: torch.dtype) -> torch.dtype:
    """Adapters train in fp32 (fp64 beside fp64 bases) even when the base is fp16 or bf16."""
    return torch.float64 if base_dtype == torch.float64 else torch.float32


def layer_geometry(base: nn.Module, name: str, mode: str) -> UpdateGeometry:
    """:func:`~mmflora.adapters.geometry.update_geometry`, its errors naming the layer."""
    try:
        return update_geometry(base, mode)
    except ValueError as error:
        raise ValueError(f'{name}: {error}') from None


class AdapterLayer(Adopted, BaseLayerOps):
    """Mixin for a base layer (``nn.Linear`` or ``nn.ConvNd``) carrying an adapter.

    Subclasses set ``method`` and ``base_class`` and implement:

    * ``parameter_shapes(base, name, config)``: the shapes of the adapter tensors (classmethod,
      also used to count parameters without building anything);
    * ``_create_adapter_tensors(shapes, config)``: create those tensors with their init;
    * ``_delta_weight()``: the scaled update, of shape ``update_shape`` (``delta_weight()``
      runs it outside autocast);
    * ``_branch(x)``: the update applied to an input without materialising it (factorised path);
    * ``_branch_flops(x)`` and ``_build_flops()``: cost estimates for the path choice;
    * ``describe()``: the method's settings, for adapter files and statistics.

    Attributes:
        name (str): Full module name in the model it was injected into (for messages).
        config (AdapterConfig): This layer's configuration (its rank pattern applied).
        dense (bool): The update spans all input channels of a grouped conv (a parallel dense
            branch) rather than the base weight's own (out, in/groups, *k) shape.
        update_shape (tuple[int]): Shape of ``delta_weight()``.
        path (str): 'auto', 'merged' or 'factorised'.
        ranks (tuple[int]): The ranks in use (after capping).
        rank_notes (list[str]): Modes whose rank was capped to their size.
    """

    method: str = ''
    base_class: type = nn.Module
    #: Whether adapter tensors derive from the base weight (see :meth:`sync_with_base`).
    depends_on_base: bool = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_base(cls, base: nn.Module, name: str = '',
                  config: Optional[AdapterConfig] = None) -> 'AdapterLayer':
        """Wrap ``base`` into an adapter layer that shares its Parameters (no copy).

        Args:
            base (nn.Module): The layer to adapt; an instance of ``cls.base_class``.
            name (str): Its full name in the model, used in messages.
            config (AdapterConfig, optional): The adapter's settings. Defaults to the
                method's defaults.
        """
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._adopt(base)
        layer._setup(name or type(base).__name__, config)
        return layer

    def _setup(self, name: str, config: Optional[AdapterConfig]) -> None:
        """The state every adapter layer starts with, then its adapter tensors."""
        self.name = name
        self._merged_backup = None
        self._update_cache = None
        self._init_adapter(config if config is not None else AdapterConfig(method=self.method))

    def _init_adapter(self, config: AdapterConfig) -> None:
        """Set up the common state, then create the tensors of ``parameter_shapes``.

        ``config`` is valid as a whole (:meth:`AdapterConfig.validate`); what is checked here
        depends on the layer (ranks against its modes, the factorised path on its groups).
        """
        geometry = layer_geometry(self, self.name, config.mode)
        self.config = config
        self.dense = geometry.dense
        self.update_shape = geometry.shape
        self.path = config.path
        self.adapter_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        if self.path == 'factorised' and not self.supports_factorised:
            raise ValueError(self._factorised_refusal())
        shapes, self.rank_notes = self.parameter_shapes(self, self.name, config)
        self._create_adapter_tensors(shapes, config)

    @classmethod
    def parameter_shapes(cls, base: nn.Module, name: str, config: AdapterConfig
                         ) -> Tuple[Dict[str, Tuple[int, ...]], List[str]]:
        """Shapes of the adapter tensors an adapter on ``base`` gets, and rank-capping notes."""
        raise NotImplementedError

    def _create_adapter_tensors(self, shapes: Dict[str, Tuple[int, ...]],
                                config: AdapterConfig) -> None:
        raise NotImplementedError

    def _factorised_refusal(self) -> str:
        return (f'{self.name}: the factorised path needs groups=1 or mode="dense", but this '
                f'{self.base_class.__name__} has groups={self.n_groups} in structured mode; use '
                f'path="merged" or "auto", or mode="dense"')

    def _tensor_factory(self) -> Dict[str, Any]:
        """Device and dtype of new adapter tensors: the base weight's device, fp32 (or fp64)."""
        return dict(device=self.weight.device, dtype=adapter_dtype(self.weight.dtype))

    # ------------------------------------------------------------------ geometry
    @property
    def kind(self) -> str:
        """The torch layer type this adapter runs as ('Linear', 'Conv2d', ...), or what an
        attention's projection is ('MultiheadAttention.in_proj'), for counts by kind."""
        return self.__dict__.get('_kind') or self.base_class.__name__

    @property
    def supports_factorised(self) -> bool:
        return not self.is_conv or self.n_groups == 1 or self.dense

    @property
    def mergeable(self) -> bool:
        """Whether s*dW can be folded into the base weight without changing the layer type."""
        return not self.dense

    # ------------------------------------------------------------------ update and paths
    def delta_weight(self) -> Tensor:
        """The scaled update ``s * dW``, shape ``update_shape``, in the adapters' dtype.

        Built outside autocast: the adapters train in fp32, and autocast would hand some of the
        chained products to bf16/fp16 and others not (``tensordot`` then refuses mixed
        inputs). The ops that use the update (the merged conv, the branch) follow autocast.
        """
        with self.full_precision():
            return self._delta_weight()

    def _delta_weight(self) -> Tensor:
        raise NotImplementedError

    def full_precision(self):
        """A context in which autocast is off on this layer's device."""
        return torch.autocast(self.weight.device.type, enabled=False)

    def _branch(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _build_flops(self) -> float:
        """Multiply-adds to build ``delta_weight()``."""
        raise NotImplementedError

    def _branch_flops(self, x: Tensor) -> float:
        """Multiply-adds of ``_branch(x)``."""
        raise NotImplementedError

    def describe(self) -> Dict[str, Any]:
        """The method's settings on this layer, as plain data.

        Returns:
            dict: ``method``, ``ranks``, ``dense``, ``rank_bound`` (an upper bound on the rank
            of the update unfolded along its output mode, or None when the method gives none)
            and the method's own scale settings.
        """
        return dict(method=self.method, ranks=list(self.ranks), dense=self.dense,
                    rank_bound=None)

    def base_weight(self) -> Tensor:
        """W0 in the shape of ``delta_weight()`` (block-diagonal dense in dense mode).

        While merged, this is the kept copy of the original weight, not the merged one.
        """
        weight = self._merged_backup if self.merged else self.weight
        if self.dense and weight.shape != self.dense_weight_shape:
            weight = self._expand_to_dense(weight)
        return weight

    def sync_with_base(self) -> None:
        """Re-derive adapter tensors that depend on the base weight, after it was replaced.

        Call it when new base weights were loaded after injection (pretrained init). Most
        adapters depend on nothing in the base; DoRA's magnitude does.
        """

    def adapter_parameters(self) -> Dict[str, nn.Parameter]:
        """The adapter's own Parameters (everything not adopted from the base), by name."""
        adopted = self.adopted_members('_parameters')
        return {
            name: param
            for name, param in self.named_parameters()
            if name.split('.')[0] not in adopted
        }

    def choose_path(self, x: Tensor) -> str:
        """'merged' or 'factorised' for input ``x`` (see :mod:`mmflora.adapters.paths`)."""
        return choose_path(self, x)

    @property
    def caches_update(self) -> bool:
        """Whether eval forwards may reuse ``delta_weight()``: only when it depends on nothing
        but the adapter tensors (DoRA's update also depends on the base weight)."""
        return not self.depends_on_base

    @property
    def cached_update(self) -> Optional[Tensor]:
        """The update the last no-grad merged forward built, or None."""
        return None if self._update_cache is None else self._update_cache[1]

    def _update_inputs(self) -> Tuple:
        """Everything ``delta_weight()`` is computed from (its tensors and settings)."""
        return tuple(self.adapter_parameters().values()), tuple(sorted(
            (k, v) for k, v in self.describe().items() if not isinstance(v, list)))

    def _cached_delta(self) -> Tensor:
        """``delta_weight()``, reused across no-grad forwards while its inputs are unchanged.

        Correct by construction: the cache keeps copies of the adapter tensors it was built
        from and is used only while the current tensors are equal to them (``torch.equal``),
        so no write escapes it — in-place ops, ``.data`` swaps (mmengine's EMAHook), loaded
        checkpoints alike. The copies are as small as the adapter; comparing them costs far
        less than rebuilding the update. The base weight is never cached: the merged weight
        is ``W0 + dW`` with the current ``W0`` on every forward.
        """
        if torch.is_grad_enabled() or not self.caches_update:
            self._update_cache = None
            return self.delta_weight()
        tensors, settings = self._update_inputs()
        if self._update_cache is not None:
            copies, delta, cached_settings = self._update_cache
            if cached_settings == settings and len(copies) == len(tensors) and all(
                    a.shape == b.shape and a.dtype == b.dtype and a.device == b.device
                    and torch.equal(a, b) for a, b in zip(copies, tensors)):
                return delta
        delta = self.delta_weight()
        self._update_cache = (tuple(t.detach().clone() for t in tensors), delta, settings)
        return delta

    def merged_weight(self) -> Tensor:
        """W0 + s*dW in the base weight's dtype (expanded to dense in dense mode).

        Half-precision bases accumulate in fp32. Outside autograd (eval with no_grad) the
        update is reused while the adapter tensors are unchanged (see :meth:`_cached_delta`).
        """
        base = self._expand_to_dense(self.weight) if self.dense else self.weight
        delta = self._cached_delta()
        if base.dtype in HALF_DTYPES or delta.dtype != base.dtype:
            return (base.to(delta.dtype) + delta).to(base.dtype)
        return base + delta

    def effective_weight(self) -> Tensor:
        """The weight the layer's op runs with now: ``W0 + s*dW`` (the stored weight once
        merged). A parent that hands this layer's weight to a functional op itself
        (``nn.MultiheadAttention`` and its ``out_proj``) uses this."""
        return self.weight if self.merged else self.merged_weight()

    def forward(self, x: Tensor) -> Tensor:
        """The adapted layer's output; takes every input the base layer takes.

        A conv's unbatched input (C, *spatial) runs as a batch of one, so the branch ops, which
        read the channel axis at position 1, see the layout they expect.
        """
        if self.is_conv and x.dim() == len(self.kernel_size) + 1:
            return self._forward(x.unsqueeze(0)).squeeze(0)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        if self._merged_backup is not None:  # s*dW already lives in self.weight
            return self._conv(x, self.weight, self.bias, self.groups_of_weight)
        if torch.is_grad_enabled():  # training: free the update an eval forward cached
            self._update_cache = None
        if self.choose_path(x) == 'merged':
            groups = 1 if self.dense else self.n_groups
            return self._conv(x, self.merged_weight(), self.bias, groups)
        out = self._conv(x, self.weight, self.bias, self.n_groups)
        return out + self._run_branch(x).to(out.dtype)

    def _run_branch(self, x: Tensor) -> Tensor:
        """The factorised branch on ``x``: adapter dropout, the adapters' dtype, and, with
        ``recompute``, nothing of it kept for backward (it runs again there)."""
        adapter_input = self.adapter_dropout(x).to(self._adapter_dtype)
        if self.config.recompute and torch.is_grad_enabled():
            return checkpoint(self._branch, adapter_input, use_reentrant=False)
        return self._branch(adapter_input)

    @property
    def _adapter_dtype(self) -> torch.dtype:
        return next(iter(self.adapter_parameters().values())).dtype

    # ------------------------------------------------------------------ merging
    @property
    def merged(self) -> bool:
        return self._merged_backup is not None

    def compute_merged_weight(self, convert_dense: bool = False) -> Tensor:
        """The weight a merge would write, checked finite: computed in fp32 for half bases
        (and fp32 ones), in fp64 for fp64 bases.

        Args:
            convert_dense (bool): Allow a dense-mode update on a grouped conv to be merged by
                turning the layer into a dense (groups=1) conv.

        Raises:
            ValueError: When the update cannot be folded in, or is not finite.
        """
        if self.dense and not convert_dense:
            raise ValueError(
                f'{self.name}: a dense-mode update of shape {self.update_shape} cannot be folded '
                f'into the grouped weight {tuple(self.weight.shape)} (groups={self.n_groups}). '
                f'Pass convert_dense=True to turn this layer into a dense conv, or inject with '
                f'mode="structured"')
        accumulate = adapter_dtype(self.weight.dtype)
        with torch.no_grad():
            delta = self.delta_weight().to(accumulate)
            if not torch.isfinite(delta).all():
                raise ValueError(f'{self.name}: the adapter update contains NaN or Inf; nothing '
                                 f'was merged. Check the adapter tensors (learning rate?)')
            base = self._expand_to_dense(self.weight) if self.dense else self.weight
            return (base.to(accumulate) + delta).to(self.weight.dtype)

    def merge(self, convert_dense: bool = False, new_weight: Optional[Tensor] = None) -> None:
        """Fold s*dW into ``weight``; keeps a bit-exact copy of W0 for ``unmerge``."""
        if self.merged:
            warnings.warn(f'{self.name}: adapter already merged; nothing changed')
            return
        if new_weight is None:
            new_weight = self.compute_merged_weight(convert_dense)
        self._merged_backup = self.weight.detach().clone()
        with torch.no_grad():
            if new_weight.shape == self.weight.shape:
                self.weight.copy_(new_weight)
            else:  # dense conversion changes the weight's shape
                self.weight.data = new_weight
        self._update_cache = None

    def unmerge(self) -> None:
        """Restore the base weight exactly as it was before ``merge``."""
        if not self.merged:
            warnings.warn(f'{self.name}: adapter is not merged; nothing changed')
            return
        with torch.no_grad():
            if self._merged_backup.shape == self.weight.shape:
                self.weight.copy_(self._merged_backup)
            else:
                self.weight.data = self._merged_backup
        self._merged_backup = None
        self._update_cache = None

    def _finish_plain(self, plain: nn.Module) -> None:
        """A dense merge turned a grouped conv into a dense one: the plain conv says so."""
        if self.is_conv and self.groups_of_weight != self.n_groups:
            plain.groups = self.groups_of_weight

    def extra_repr(self) -> str:
        base = self.base_class.extra_repr(self)
        return f'{base}, method={self.method}, path={self.path}, dense={self.dense}'
