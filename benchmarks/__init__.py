"""Benchmarks of FLoRA against its baselines, one package per benchmark beside what they share.

The benchmarks (each a package with its settings, runs, results and report, behind a script):

* ``speed`` (``bench_adapters.py``): speed, memory and storage of the adapter layers, a
  backbone's training step and inference, side by side on CPU;
* ``transfer`` (``transfer.py``): a small Table 1 on CPU, every method adapting one pretrained
  ConvNeXt-V2-atto to target tasks, each at its own searched optimum;
* ``gpu`` (``gpu_check.py``): the one-command GPU check (torch, timm and safetensors only).

What they share, here at the top:

* ``settings``: the paper's hyper-parameters, where the adapters go, rows looked up by key;
* ``harness``: running cases interleaved, timing them (CUDA events on CUDA) and their peak memory;
* ``records``: one measured case as results data; ratios and path comparisons read from it;
* ``references``: what FLoRA is compared with beyond ``mmflora.adapters`` (the two-conv
  formulation of the official release, PEFT's LoRA);
* ``models``: the timm backbones the speed and GPU benchmarks adapt, the FLoRA ranks that match
  LoRA's budget on them, and which path the automatic choice takes (and why);
* ``machine``: the CPU's name and the package versions (standard library only).

Nothing at the top, in ``speed`` or in ``gpu`` imports mmengine or mmcv: they need torch, timm,
safetensors and (for one reference) peft. ``transfer`` trains through MMSegmentation's heads.
"""
