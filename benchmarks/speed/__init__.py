"""Speed, memory and storage of FLoRA against its baselines (``benchmarks/bench_adapters.py``).

* ``settings``: the size of a full and a quick run, and the experiments in their order;
* ``layers``, ``path_choice``, ``backbone``, ``breakdown``, ``inference``, ``storage``: one
  experiment each (``path_choice``: FLoRA's automatic path against both fixed paths);
* ``targets``: the summary entries (measured ratio, target, verdict);
* ``report``: the markdown renderer;
* ``cli``: the command line.
"""
