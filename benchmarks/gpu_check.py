"""One-command GPU check of mmflora; needs torch, timm and safetensors only (no OpenMMLab).

Run from the repository root on the GPU machine (no install of mmflora needed)::

    python benchmarks/gpu_check.py                       # one GPU; the time guard writes the
                                                         # report by 450 s (--time-limit):
                                                         # benchmarks/GPU.md and GPU.json
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/GPU.md
                                                         # the same code on tiny CPU shapes

It checks (a) the adapter core on the device against an fp64 CPU reference (``gpu/core.py``),
measures (b) ConvNeXt-V2-L training steps for every method beside the paper's Table 5
(``gpu/train.py``), checks (c) ``torch.compile`` against eager (``gpu/compile.py``), trains
(d) InternViT-6B with FLoRA at Table 2's budget for one step at 504 px (``gpu/internvit.py``;
skipped, with the reason, without CUDA) and writes the report (``gpu/report.py``). See ``gpu/cli.py`` for the sections, the time guard and
the exit status (0 all passed, 1 something to look at, 3 stopped by the time guard).
"""
import os
import os.path as osp
import sys
import time

if __name__ == '__main__':
    STARTED = time.monotonic()
    # Import this folder as the package ``benchmarks`` from the repository root (and mmflora
    # from there too); keep the folder itself off the path.
    HERE = osp.dirname(osp.abspath(__file__))
    sys.path[:] = [p for p in sys.path if osp.abspath(p or '.') != HERE]
    sys.path.insert(0, osp.dirname(HERE))
    from benchmarks.gpu.cli import STOPPED, main
    status = main(started=STARTED)
    if status == STOPPED:
        # The report is written; leave at once rather than wait for work the time guard cut
        # short (compile workers, queued kernels) to wind down.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
