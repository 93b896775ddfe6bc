"""The transfer benchmark (``benchmarks/transfer.py``): FLoRA and its baselines adapt one
pretrained ConvNeXt-V2-atto to target tasks.

* ``settings``: the tasks, methods, budgets and the size of a full and a quick run;
* ``models``: the trunk, the heads and the adapters at matched budgets;
* ``train``: one run (a method at one setting and seed) and the pool that runs them;
* ``results``: scores read back from the runs, the choices and the comparisons;
* ``report``: the markdown renderer;
* ``cli``: the command line.
"""
