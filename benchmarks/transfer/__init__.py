"""The transfer benchmark (``benchmarks/transfer.py``): FLoRA and its baselines adapt one
pretrained ConvNeXt-V2-atto to target tasks, each method at its own searched setting.

* ``settings``: the tasks, methods, budgets and the size of a full and a quick run;
* ``models``: the trunk, the heads and the adapters at matched budgets;
* ``search``: the adaptive search of a method's lr and scale knob on the crossed grid;
* ``train``: one run (a method at one setting and seed);
* ``schedule``: the (task, method) chains of search and final runs, on a pool of workers;
* ``results``: the figures read back from the runs, the paired verdicts;
* ``report`` and ``plots``: the markdown and the pictures;
* ``cli``: the command line.
"""
