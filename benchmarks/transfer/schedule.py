"""The runs of a transfer benchmark as chains of dependent jobs, run by a pool of workers.

Each (task, method) is a chain: its search (``search.py``) on the search seed, one round of
points at a time, then the final stage, every final seed at the chosen point. Chains are
independent of each other, so the scheduler keeps every worker busy with whatever job of any
chain is ready; a chain's next round becomes ready when its last round has finished.

The chains are rebuilt from the finished run records alone, so ``--resume`` hands the records
of the progress file to :class:`Chain` and continues exactly where the run stopped.
"""
import dataclasses
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import search
from . import settings as S

#: A run's identity: (task, method, lr step, scale step, seed, stage).
RunKey = Tuple[str, str, int, int, int, str]


def run_key(record: dict) -> RunKey:
    return (record['task'], record['method'], int(record['lr_step']),
            int(record['scale_step']), int(record['seed']), record['stage'])


@dataclasses.dataclass
class Chain:
    """The search and the final runs of one (task, method).

    Args:
        task (str): Key of the target task.
        method (str): Key of the method.
        profile (dict): The run's sizes: ``search_seed``, ``final_seeds``, ``start_lrs`` and
            ``max_points`` are read here.
        parent (Chain, optional): The chain whose choice this chain's search starts from
            (the same method on the task's ``warm_start``); the search waits for the
            parent's to end. Defaults to None: start from ``start_lrs``.
    """

    task: str
    method: str
    profile: dict
    parent: Optional['Chain'] = None
    records: Dict[RunKey, dict] = dataclasses.field(default_factory=dict)

    @property
    def knob(self) -> bool:
        return S.method_by_key(self.method).knob is not None

    def add(self, record: dict) -> None:
        self.records[run_key(record)] = record

    def outcomes(self) -> Dict[search.Point, search.Outcome]:
        """The search points finished so far and what they gave."""
        return {(r['lr_step'], r['scale_step']): search.Outcome(r['val'], r['collapsed'])
                for r in self.records.values() if r['stage'] == 'search'}

    def start(self) -> Optional[List[search.Point]]:
        """The first round of the search; None while the parent's search goes on."""
        if self.parent is None:
            return search.start_points(self.profile['start_lrs'])
        _, choice = self.parent.search_state()
        return None if choice is None else search.warm_start_points(choice, self.knob)

    def search_state(self) -> Tuple[List[search.Point], Optional[search.Point]]:
        """(the points of the next search round, the choice once the search is over); both
        empty and None while the search waits for its parent."""
        start = self.start()
        if start is None:
            return [], None
        tried = self.outcomes()
        pending = search.next_points(tried, self.knob, start=start,
                                     max_points=self.profile['max_points'])
        return pending, (search.best_point(tried) if not pending else None)

    def wanted(self) -> List[RunKey]:
        """The runs this chain needs now and has not finished: the current search round, or,
        once the search is over, the final seeds at the chosen point (none while it waits)."""
        pending, chosen = self.search_state()
        if pending:
            keys = [(self.task, self.method, lr, scale, self.profile['search_seed'], 'search')
                    for lr, scale in pending]
        elif chosen is not None:
            keys = [(self.task, self.method, chosen[0], chosen[1], seed, 'final')
                    for seed in self.profile['final_seeds']]
        else:
            keys = []
        return [k for k in keys if k not in self.records]

    def searching(self) -> bool:
        """Whether the search is not over yet (waiting for its parent included)."""
        return self.search_state()[1] is None

    def planned_left(self, typical_points: int) -> int:
        """Runs still to come, an estimate while the search goes on: the search is taken to
        need ``typical_points`` points in all (at least one more round than it has had)."""
        pending, chosen = self.search_state()
        finals = sum(1 for k in self.records if k[5] == 'final')
        if chosen is not None:
            return len(self.profile['final_seeds']) - finals
        tried = len(self.outcomes())
        more = max(len(pending), typical_points - tried)
        return min(more, self.profile['max_points'] - tried) + len(self.profile['final_seeds'])


def job_order(key: RunKey, tasks: Sequence[str], methods: Sequence[str]) -> tuple:
    """The order ready jobs start in: search rounds first (they unlock further jobs), dense
    tasks first (their runs are the longest), then task and method order."""
    task, method, lr_step, scale_step, seed, stage = key
    dense = S.target_by_key(task).dense
    return (stage != 'search', not dense, tasks.index(task), methods.index(method), seed,
            lr_step, scale_step)


class Estimate:
    """Seconds a run will take, from the runs finished so far: the mean of the same
    (task, method), else of the same task, else of every run, else ``default``."""

    def __init__(self, default: float):
        self.default = default
        self.seconds: Dict[Tuple[str, str], List[float]] = {}

    def add(self, record: dict) -> None:
        self.seconds.setdefault((record['task'], record['method']), []).append(
            record['seconds'])

    def __call__(self, task: str, method: str) -> float:
        same = self.seconds.get((task, method))
        if same:
            return sum(same) / len(same)
        by_task = [s for (t, _), values in self.seconds.items() if t == task for s in values]
        every = [s for values in self.seconds.values() for s in values]
        pool = by_task or every
        return sum(pool) / len(pool) if pool else self.default


def run_chains(chains: List[Chain], make_job: Callable[[RunKey], dict], workers: int,
               threads: int, done: Callable[[dict, float], None], run: Callable,
               setup: Callable, typical_points: Dict[bool, int]) -> None:
    """Run every chain to its end, ``workers`` jobs at a time (in this process for one).

    Args:
        chains (list): The chains, with the records already finished.
        make_job (callable): The job dict of a run key.
        workers (int): Jobs in flight at once (each in its own process when more than one).
        threads (int): torch threads per worker.
        done (callable): ``done(record, eta_seconds)`` in this process as each run finishes.
        run (callable): Runs one job, returns its record (``train.train_run``).
        setup (callable): Per-worker setup, ``setup(threads)`` (``train.worker_setup``).
        typical_points (dict): Search points a chain is taken to need, by whether the method
            has a knob, for the ETA.
    """
    tasks = list(dict.fromkeys(c.task for c in chains))
    methods = list(dict.fromkeys(c.method for c in chains))
    by_pair = {(c.task, c.method): c for c in chains}
    estimate = Estimate(default=60.0)
    for chain in chains:
        for record in chain.records.values():
            estimate.add(record)
    in_flight: Dict[object, RunKey] = {}

    def ready() -> List[RunKey]:
        busy = set(in_flight.values())
        keys = [k for c in chains for k in c.wanted() if k not in busy]
        return sorted(keys, key=lambda k: job_order(k, tasks, methods))

    def eta() -> float:
        left = sum(c.planned_left(typical_points[c.knob]) * estimate(c.task, c.method)
                   for c in chains)
        return left / max(1, workers)

    def finish(record: dict) -> None:
        by_pair[(record['task'], record['method'])].add(record)
        estimate.add(record)
        done(record, eta())

    if workers <= 1:
        setup(threads)
        while True:
            keys = ready()
            if not keys:
                return
            finish(run(make_job(keys[0])))
    import multiprocessing
    context = multiprocessing.get_context('spawn')  # no forked OpenMP state
    with ProcessPoolExecutor(workers, mp_context=context, initializer=setup,
                             initargs=(threads, )) as pool:
        while True:
            for key in ready()[:workers - len(in_flight)]:
                in_flight[pool.submit(run, make_job(key))] = key
            if not in_flight:
                return
            finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: in_flight[f]):
                del in_flight[future]
                finish(future.result())

