"""A small Table 1 on CPU: FLoRA and its baselines adapt a pretrained ConvNeXt-V2-atto.

From one trunk pretrained on the procedural ``source`` task (``tools/pretrain_backbone.py``),
every method of the paper's Table 1 (frozen, full fine-tuning, BitFit, LoRA, DoRA, FLoRA, the
last three at two rank-matched budgets) adapts to three target tasks: near classification,
far classification and near segmentation through MMSegmentation's UperNet. Each method gets
the same steps, data order, heads and learning-rate grid; the lr is chosen on a validation
split and the score reported on a test split, over several seeds. FLoRA's two factor inits
are compared in a table of their own. See ``transfer/settings.py`` for what runs, and
``TRANSFER.md`` for the figures.

Usage::

    python benchmarks/transfer.py              # full run (about 1.5 h on 2 shared cores),
                                               # rewrites benchmarks/TRANSFER.md and .json
    python benchmarks/transfer.py --quick      # about a minute: benchmarks/out/quick/
    python benchmarks/transfer.py --resume     # continue a stopped full run
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
