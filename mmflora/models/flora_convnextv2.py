"""ConvNeXt-V2 with adapters built in: one backbone for every row of the paper's Table 1.

Adapters are injected in ``__init__``, so they exist before mmengine builds the
optimizer and wraps the model in DDP, and they keep the base layers' parameter
names, so ``init_cfg=dict(type='Pretrained', ...)`` loads a plain ConvNeXt-V2
checkpoint into the adapted model.
"""
import dataclasses
import logging
from typing import Optional, Tuple

from mmengine.logging import print_log
from mmengine.registry import MODELS

from ..adapters import AdapterConfig, inject_adapters, preserve_adapter_init
from .convnextv2 import ConvNeXtV2

# Module names of the MLP's pointwise nn.Linear layers (fc1, fc2) in every block.
POINTWISE_PATTERN = r'\.mlp\.fc[12]$'


@MODELS.register_module()
class FLoRAConvNeXtV2(ConvNeXtV2):
    """:class:`ConvNeXtV2` whose conv (and pointwise) layers carry adapters.

    By default every ``nn.Conv2d`` (the stem's patch conv, the three 2x2
    downsampling convs, every 7x7 depthwise conv) and every pointwise
    ``nn.Linear`` (``mlp.fc1``/``mlp.fc2``) gets an adapter of ``method``. The
    base is frozen; adapter tensors, the output norms ``norm{i}`` and the
    parameters matched by ``adapter['trainable']`` train. ``frozen_stages``
    freezes adapters in those stages too.

    Args:
        adapter: Options of :func:`mmflora.adapters.inject_adapters` plus:

            - ``method``: ``'flora'`` (default), ``'lora'``, ``'dora'``,
              ``'bitfit'``, ``'full'`` or ``'none'``.
            - ``pointwise`` (bool): Adapt the pointwise Linear layers too.
              Defaults to True. With ``pointwise=False`` only the convs are
              adapted (for BitFit: only non-pointwise biases train); it
              cannot be combined with explicit ``targets``.
            - ``train_output_norms`` (bool): Keep ``norm{i}`` trainable.
              Defaults to True.

            The rest go to the core: ``r`` (channel rank), ``r_kernel``
            (kernel-mode rank, 2 in the paper), ``scale`` (FLoRA's s, 4.0 on
            ConvNeXt-V2-L in the paper), ``alpha`` (LoRA/DoRA), ``mode``
            (``'dense'`` or ``'structured'`` for the depthwise convs),
            ``path``, ``dropout``, ``targets``, ``exclude``,
            ``rank_pattern``, ``trainable`` (regexes of parameter names).
            Defaults to None: FLoRA with the core's defaults.
        **kwargs: Arguments of :class:`ConvNeXtV2` (``arch``,
            ``out_indices``, ``drop_path_rate``, ``frozen_stages``,
            ``with_cp``, ``init_cfg``, ...).

    Attributes:
        injection_report (InjectionReport): What was adapted, with counts.
    """

    #: Keys of ``adapter`` the backbone takes itself; the rest are AdapterConfig fields.
    BACKBONE_OPTIONS = ('pointwise', 'train_output_norms')

    def __init__(self, adapter: Optional[dict] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        config, pointwise = self.adapter_config(adapter)
        self.adapter_method = config.method
        self.injection_report = inject_adapters(self, config)
        self._freeze_stages()
        print_log(
            f'FLoRAConvNeXtV2 injected {config.method} adapters '
            f'(pointwise={pointwise}):\n{self.injection_report}',
            logger='current')

    @classmethod
    def adapter_config(cls,
                       adapter: Optional[dict],
                       where: str = 'FLoRAConvNeXtV2 adapter'
                       ) -> Tuple[AdapterConfig, bool]:
        """The :class:`AdapterConfig` an ``adapter`` option dict asks for.

        Args:
            adapter (dict, optional): The backbone's ``adapter`` argument.
            where (str): Its config path, for messages. Defaults to
                'FLoRAConvNeXtV2 adapter'.

        Returns:
            tuple: The configuration (output norms trainable and pointwise
            layers excluded as asked) and the ``pointwise`` flag.

        Raises:
            ValueError: An unknown key or a bad value, named with ``where``.
        """
        options = dict(adapter or {})
        pointwise = options.pop('pointwise', True)
        train_output_norms = options.pop('train_output_norms', True)
        for key, value in (('pointwise', pointwise),
                           ('train_output_norms', train_output_norms)):
            if not isinstance(value, bool):
                raise ValueError(f'{where}.{key}={value!r}: give True or False')
        if not pointwise and options.get('targets') is not None:
            raise ValueError(
                f'{where}: pointwise=False together with '
                f'targets={options["targets"]}; pointwise=False only '
                'narrows the default targets. List the layers in '
                '`targets` (e.g. ["Conv2d"]) and drop `pointwise`.')
        config = AdapterConfig.from_options(
            options, where=where, extra_options=cls.BACKBONE_OPTIONS)
        trainable = list(config.trainable or [])
        if train_output_norms:
            trainable.append(cls.output_norm_pattern)
        exclude = list(config.exclude or [])
        if not pointwise:
            exclude.append(POINTWISE_PATTERN)
        return dataclasses.replace(
            config, trainable=trainable, exclude=exclude or None), pointwise

    @classmethod
    def check_config(cls, node: dict, where: str) -> None:
        """Check the ``adapter`` options of a config node of this type.

        ``mmflora.apis.load_config`` calls this for every ``FLoRAConvNeXtV2``
        in a model config before anything is built, so a bad key or value is
        named with its config path (``model.backbone.adapter.r``).
        """
        cls.adapter_config(node.get('adapter'), where=f'{where}.adapter')

    def init_weights(self) -> None:
        """Initialise / load the base weights and leave the adapters at init.

        Whatever ``init_cfg`` does to the base layers (a ``TruncNormal`` on
        ``Linear`` also matches adapter layers, which subclass it), adapter
        tensors are restored to their construction values afterwards, so a
        zero FLoRA core or LoRA ``B`` stays zero and the backbone starts
        exactly at the loaded base. DoRA's magnitude depends on the base
        weight, so it is recomputed from the loaded weight (see
        :func:`mmflora.adapters.preserve_adapter_init`).
        """
        with preserve_adapter_init(self) as outcome:
            super().init_weights()
        if outcome.resynced:
            print_log(
                f'FLoRAConvNeXtV2 re-derived {len(outcome.resynced)} DoRA '
                'magnitudes from the loaded base weights.',
                logger='current',
                level=logging.DEBUG)
