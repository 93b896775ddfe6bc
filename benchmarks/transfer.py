"""A small Table 1 on CPU: FLoRA and its baselines adapt a pretrained ConvNeXt-V2-atto.

From one trunk pretrained on the procedural ``source`` task (``tools/pretrain_backbone.py``),
every method of the paper's Table 1 (frozen, full fine-tuning, BitFit, LoRA, DoRA, FLoRA, the
last three at two rank-matched budgets) adapts to four target tasks: classification and
segmentation (MMSegmentation's UperNet) of the ``near`` and of the ``far`` procedural data.
Each method searches its own learning rate and scale knob (FLoRA's s, LoRA's and DoRA's alpha)
on a validation split (``transfer/search.py``), then runs five fresh seeds at its choice; the
report gives the test scores, FLoRA against LoRA, DoRA and BitFit as a paired t-test over the
seeds, the learning curves and every searched point. See ``transfer/settings.py`` for what
runs, and ``TRANSFER.md`` for the figures.

Usage::

    python benchmarks/transfer.py              # full run (about 2.5 h on 2 cores), rewrites
                                               # benchmarks/TRANSFER.md, .json and the PNGs
    python benchmarks/transfer.py --quick      # about a minute: benchmarks/out/quick/
    python benchmarks/transfer.py --resume     # continue a stopped full run where it stopped
    python benchmarks/transfer.py --from-json benchmarks/TRANSFER.json   # re-render
"""
import os.path as osp
import sys

if __name__ == '__main__':
    # Run as a script: import this folder as the package ``benchmarks`` from the repository
    # root, and keep the folder itself off the path (its module names would shadow others).
    HERE = osp.dirname(osp.abspath(__file__))
    sys.path[:] = [p for p in sys.path if osp.abspath(p or '.') != HERE]
    sys.path.insert(0, osp.dirname(HERE))
    from benchmarks.transfer.cli import main
    main()
