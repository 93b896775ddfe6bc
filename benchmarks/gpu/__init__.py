"""The one-command GPU check (``benchmarks/gpu_check.py``); torch, timm and safetensors only.

* ``core``: the adapter core on the device against an fp64 CPU reference;
* ``train``: ConvNeXt-V2-L training steps for every method beside the paper's Table 5;
* ``internvit``: InternViT-6B with FLoRA (Table 2), one training step at 504 px;
* ``compile``: ``torch.compile`` against eager;
* ``report``: the environment and the markdown renderer;
* ``cli``: the sections, the time guard and the exit status.

Nothing here may import an OpenMMLab package (the GPU machine has none); keep this file free of
imports so that importing one module does not pull in the others.
"""
