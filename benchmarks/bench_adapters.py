"""Speed, memory and storage of FLoRA against its baselines, measured side by side in one run.

What is measured (see BENCHMARKS.md for the figures and how to read them, and the package
``benchmarks/speed/`` for how):

* layers (``speed/layers.py``): forward + backward of single ConvNeXt-V2-L layers for the
  frozen base, full fine-tuning, FLoRA on each forward path, the two-conv formulation of the
  official release, our LoRA, PEFT's LoRA and DoRA;
* backbone (``speed/backbone.py``): one training step of a ConvNeXt-V2 at batch 2 for the same
  methods at matched trainable budgets; breakdown (``speed/breakdown.py``): where FLoRA's step
  differs from LoRA's, by layer role;
* inference (``speed/inference.py``): merged and unmerged FLoRA against the plain base model;
* storage (``speed/storage.py``): an adapter-only file against the full checkpoint at the
  paper's 12.8M budget.

Usage::

    python benchmarks/bench_adapters.py            # full run, rewrites benchmarks/BENCHMARKS.md
                                                   # and benchmarks/BENCHMARKS.json
    python benchmarks/bench_adapters.py --quick    # seconds; writes benchmarks/out/quick/
    python benchmarks/bench_adapters.py --from-json benchmarks/BENCHMARKS.json
                                                   # re-render (closing_notes.md edited)
"""
import os.path as osp
import sys

if __name__ == '__main__':
    # Run as a script: import this folder as the package ``benchmarks`` from the repository
    # root, and keep the folder itself off the path (its module names would shadow others).
    HERE = osp.dirname(osp.abspath(__file__))
    sys.path[:] = [p for p in sys.path if osp.abspath(p or '.') != HERE]
    sys.path.insert(0, osp.dirname(HERE))
    from benchmarks.speed.cli import main
    main()
