"""The transfer benchmark's search, scheduler and verdict, driven by fake score functions: the
lr grid grows outward from an edge, a collapse counts as a worse neighbour, the knob is
searched once the lr is settled, limits are flagged, a stopped run resumes to the same
choices, and the paired test decides ahead / level / behind."""
import random
import statistics

import pytest

from benchmarks.transfer import results as R
from benchmarks.transfer import search
from benchmarks.transfer.schedule import Chain, run_chains, run_key


def run_search(score, knob, collapse_below=None, **limits):
    """Drive ``search.next_points`` to its end with ``score(point)``; returns (tried, rounds)."""
    tried, rounds = {}, []
    while True:
        points = search.next_points(tried, knob, **limits)
        if not points:
            return tried, rounds
        rounds.append(points)
        for point in points:
            value = score(point)
            collapsed = collapse_below is not None and value < collapse_below
            tried[point] = search.Outcome(value, collapsed)


def peak_at(lr_step, scale_step=0, width=1.0):
    return lambda p: 80 - width * ((p[0] - lr_step)**2 + (p[1] - scale_step)**2)


def test_lr_grid_reads_as_one_and_three_per_decade():
    assert [search.lr_of(k) for k in range(-8, -3)] == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    assert all(search.lr_step_of(search.lr_of(k)) == k for k in range(-12, 0))
    with pytest.raises(ValueError, match='half-decade'):
        search.lr_step_of(2e-3)
    assert search.scale_factor(-1) == 0.25 and search.scale_factor(2) == 16.0


def test_search_starts_at_three_lrs_and_stops_when_the_middle_one_is_best():
    tried, rounds = run_search(peak_at(-6), knob=False)
    assert rounds == [[(-7, 0), (-6, 0), (-5, 0)]]
    assert search.best_point(tried) == (-6, 0) and search.edges(tried, False) == []


def test_search_extends_the_lr_grid_outward_while_the_best_is_at_an_edge():
    tried, rounds = run_search(peak_at(-3), knob=False)   # optimum at 3e-2
    assert rounds[1:] == [[(-4, 0)], [(-3, 0)], [(-2, 0)]]
    assert search.best_point(tried) == (-3, 0) and search.edges(tried, False) == []
    tried, _ = run_search(peak_at(-9), knob=False)        # optimum at 3e-5
    assert search.best_point(tried) == (-9, 0) and (-10, 0) in tried


def test_a_collapsed_neighbour_counts_as_worse_and_is_recorded():
    # lr 1e-2 diverges to chance: 3e-3 is chosen with the collapse as its upper neighbour
    def score(p):
        return 10.0 if p[0] >= -4 else 70 + p[0]
    tried, _ = run_search(score, knob=False, collapse_below=11)
    assert search.best_point(tried) == (-5, 0)
    assert tried[(-4, 0)].collapsed and (-3, 0) not in tried
    assert search.edges(tried, False) == []


def test_collapsed_runs_rank_below_every_run_that_learned():
    tried = {(-6, 0): search.Outcome(20.0, collapsed=True), (-5, 0): search.Outcome(15.0)}
    assert search.best_point(tried) == (-5, 0)


def test_knob_is_searched_at_the_settled_lr_and_extended_like_the_lr():
    tried, rounds = run_search(peak_at(-6, 2), knob=True)
    assert rounds[0] == [(-7, 0), (-6, 0), (-5, 0)]
    assert rounds[1] == [(-6, -1), (-6, 1)]         # the scale once the lr is settled
    assert search.best_point(tried) == (-6, 2)
    assert {(-7, 2), (-5, 2), (-6, 3)} <= set(tried)  # the new best's neighbours
    assert search.edges(tried, True) == []


def test_a_best_point_at_the_grid_limit_is_flagged():
    tried, _ = run_search(peak_at(0, 5), knob=True)
    assert search.best_point(tried) == (-2, 3)
    assert search.edges(tried, True) == ['lr at the upper limit of the grid',
                                         'scale at the upper limit of the grid']


def test_a_search_cut_by_its_point_limit_is_flagged():
    tried, _ = run_search(peak_at(-2), knob=False, max_points=4)
    assert len(tried) == 4 and search.best_point(tried) == (-4, 0)
    assert search.edges(tried, False, max_points=4) == [
        'lr: upper neighbour untried (the search stopped at 4 points)']


def test_ties_are_broken_by_the_point_not_by_the_order_tried():
    outcomes = [((-6, 0), 50.0), ((-5, 0), 50.0), ((-6, 1), 50.0), ((-7, 0), 40.0)]
    forward = {p: search.Outcome(v) for p, v in outcomes}
    backward = {p: search.Outcome(v) for p, v in reversed(outcomes)}
    assert search.best_point(forward) == search.best_point(backward) == (-6, 0)


def test_typical_search_lengths_match_the_eta_assumption():
    rng = random.Random(0)
    lengths = {False: [], True: []}
    for knob in lengths:
        for _ in range(300):
            lr0, s0 = rng.uniform(-7.5, -3.5), rng.uniform(-1.5, 1.5) if knob else 0.0

            def score(p):
                ridge = (p[0] + 1.2 * p[1]) - (lr0 + 1.2 * s0)
                return 70 - 4 * ridge**2 - 2 * (p[1] - s0)**2 + rng.gauss(0, 1)
            lengths[knob].append(len(run_search(score, knob)[0]))
    from benchmarks.transfer.settings import TYPICAL_POINTS
    for knob, values in lengths.items():
        assert abs(statistics.fmean(values) - TYPICAL_POINTS[knob]) < 1.0, (knob, values)


def test_a_warm_start_begins_at_the_other_choice_and_its_lr_neighbours():
    assert search.warm_start_points((-4, 2), knob=True) == [(-5, 2), (-4, 2), (-3, 2)]
    assert search.warm_start_points((-4, 0), knob=False) == [(-5, 0), (-4, 0), (-3, 0)]
    assert search.warm_start_points((-2, 0), knob=False) == [(-3, 0), (-2, 0)]  # the limit
    tried, rounds = run_search(peak_at(-4, 1), knob=True,
                               start=search.warm_start_points((-4, 1), True))
    assert rounds == [[(-5, 1), (-4, 1), (-3, 1)], [(-4, 0), (-4, 2)]]
    assert search.best_point(tried) == (-4, 1) and search.edges(tried, True) == []


# --- the scheduler, with a fake run: deterministic scores from the run's key ---------------

PROFILE = dict(search_seed=0, final_seeds=(1, 2, 3), start_lrs=(-7, -6, -5), max_points=16)


def fake_run(job):
    optimum = {'lora-low': (-4, 1), 'frozen': (-5, 0)}[job['method']]
    if job['task'] == 'near-seg':
        optimum = (optimum[0] - 1, optimum[1])
    score = 80 - (job['lr_step'] - optimum[0])**2 - (job['scale_step'] - optimum[1])**2
    score += 0.1 * job['seed']
    return dict(task=job['task'], method=job['method'], lr_step=job['lr_step'],
                scale_step=job['scale_step'], seed=job['seed'], stage=job['stage'],
                lr=search.lr_of(job['lr_step']), val=score, collapsed=False,
                test=score - 1 if job['stage'] == 'final' else None, seconds=1.0)


def make_job(key):
    task, method, lr_step, scale_step, seed, stage = key
    return dict(task=task, method=method, lr_step=lr_step, scale_step=scale_step, seed=seed,
                stage=stage)


def schedule(chains, stop_after=None):
    """Run ``chains`` with the fake run in this process; returns the records in order.
    ``stop_after`` stops the whole run (as an interrupt would) after that many records."""
    finished = []

    class Stop(Exception):
        pass

    def done(record, eta):
        assert eta >= 0
        finished.append(record)
        if stop_after is not None and len(finished) == stop_after:
            raise Stop
    try:
        run_chains(chains, make_job, workers=1, threads=1, done=done, run=fake_run,
                   setup=lambda threads: None, typical_points={False: 4, True: 7})
    except Stop:
        pass
    return finished


def chains():
    return [Chain('near-cls', 'frozen', PROFILE), Chain('near-cls', 'lora-low', PROFILE)]


def test_each_chain_searches_then_runs_its_final_seeds_at_the_choice():
    records = schedule(chains())
    for method, chosen in (('frozen', (-5, 0)), ('lora-low', (-4, 1))):
        finals = [r for r in records if r['method'] == method and r['stage'] == 'final']
        assert sorted(r['seed'] for r in finals) == [1, 2, 3]
        assert {(r['lr_step'], r['scale_step']) for r in finals} == {chosen}
        first_final = records.index(finals[0])
        searched = [i for i, r in enumerate(records)
                    if r['method'] == method and r['stage'] == 'search']
        assert max(searched) < first_final  # the finals wait for the search's end
    assert len({run_key(r) for r in records}) == len(records)  # nothing runs twice


def test_a_warm_started_chain_waits_for_its_parent_then_starts_from_its_choice():
    parent = Chain('near-cls', 'lora-low', PROFILE)
    child = Chain('near-seg', 'lora-low', PROFILE, parent=parent)
    assert child.wanted() == [] and child.searching()
    records = schedule([parent, child])
    searched = [r for r in records if r['task'] == 'near-seg' and r['stage'] == 'search']
    parent_last = max(i for i, r in enumerate(records)
                      if r['task'] == 'near-cls' and r['stage'] == 'search')
    assert records.index(searched[0]) > parent_last
    assert {(r['lr_step'], r['scale_step']) for r in searched[:3]} == {(-5, 1), (-4, 1),
                                                                        (-3, 1)}
    assert child.search_state() == ([], (-5, 1))  # moved on from the parent's (-4, 1)


def test_a_resumed_run_reuses_what_finished_and_ends_with_the_same_runs():
    whole = schedule(chains())
    first = schedule(chains(), stop_after=7)
    resumed = chains()
    for record in first:
        next(c for c in resumed if c.method == record['method']).add(record)
    rest = schedule(resumed)
    assert not {run_key(r) for r in first} & {run_key(r) for r in rest}
    assert sorted(map(run_key, first + rest)) == sorted(map(run_key, whole))


# --- the paired verdict -------------------------------------------------------------------

def test_paired_test_sees_a_consistent_small_difference_that_the_spread_hides():
    # seeds move both methods together: +0.5 every seed is significant although the
    # seeds' spread (std 1.6) is far larger than the difference
    base = [60.0, 62.0, 64.0, 61.0, 63.5]
    ahead = [b + 0.5 + 0.05 * i for i, b in enumerate(base)]
    test = R.paired_test(ahead, base)
    assert test['p'] < 0.05 and R.verdict(test) == 'ahead'
    assert R.verdict(R.paired_test(base, ahead)) == 'behind'
    noisy = [b + d for b, d in zip(base, [2.0, -1.5, 1.0, -2.0, 0.8])]
    assert R.verdict(R.paired_test(noisy, base)) == 'level'


def test_paired_test_matches_scipy_and_handles_degenerate_pairs():
    from scipy.stats import ttest_rel
    a, b = [1.0, 2.5, 3.0, 4.2], [0.5, 2.0, 3.3, 3.0]
    assert R.paired_test(a, b)['p'] == pytest.approx(ttest_rel(a, b).pvalue)
    assert R.paired_test([1.0, 2.0], [1.0, 2.0])['p'] == 1.0
    assert R.verdict(R.paired_test([2.0, 3.0], [1.0, 2.0])) == 'ahead'
    assert R.verdict(R.paired_test([2.0], [1.0])) == 'one seed'
