"""Benchmarks of FLoRA against its baselines, measured side by side in one run.

The package is laid out as the measurements flow:

* ``settings``: the paper's hyper-parameters and the sizes of a full and a quick run;
* ``harness``: running cases interleaved, timing them (CUDA events on CUDA) and their peak memory;
* ``records``: one measured case as results data, and ratios read back from that data;
* ``references``: what FLoRA is compared with beyond ``mmflora.adapters`` (the two-conv
  formulation of the official release, PEFT's LoRA);
* ``models``: the timm backbones the experiments adapt, the FLoRA ranks that match LoRA's
  budget on them (solved once per run), and which path the automatic choice takes (and why);
* ``layers``, ``path_choice``, ``backbone``, ``breakdown``, ``inference``, ``storage``: one
  experiment each (``path_choice``: FLoRA's automatic path against both fixed paths);
* ``targets``: the summary entries (measured ratio, target, verdict);
* ``report``: the markdown renderer;
* ``cli``: the command line behind ``benchmarks/bench_adapters.py``;
* ``gpu_check`` and the ``gpu_*`` modules: the one-command GPU check (see ``gpu_check.py``).

Nothing here imports mmengine or mmcv: the benchmarks need torch, timm, safetensors and (for one
reference) peft.
"""
