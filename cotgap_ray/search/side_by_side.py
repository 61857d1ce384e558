"""Students side by side (issue 34): how many students of a pairs run search at once on the cluster, and the share of
it each one gets. Decisions only (no Ray); search/student_process.py runs them.

    students_at_once(cfg, 2, [{"resources": {"CPU": 2.0}, "count": 1}])   -> 1   (a laptop: one after another)
    students_at_once(cfg, 2, [{"resources": {"CPU": 4.0}, "count": 2}])   -> 2
    share(cfg, 2, [{"resources": {"CPU": 4.0}, "count": 2}])             -> Share(students=2, trials=2, engines=1)

The rule: k students run at once when the cluster holds, at the same time, k students' evaluation engines
(search.eval_engines each, else one) and at least one trial per student beside them (the largest such k, at most the
number of students, or search.students_at_once when set). A student's run needs its engine for its whole search, so
a layout that holds the engines but no trial beside them would stall every student at once. Each student then gets
an equal part of the trials that fit beside all k students' engines (at least one, at most its share of
search.trials; a grid's budget is its size) and its own engines: no student's search is sized as if it had the
cluster to itself, and two students' trials never queue behind each other's engines. Engines are placed one per node
first, like the pool (evaluation/pool.py), then stacked where a node holds several. The share is a runtime fact like
the cluster's size, never part of a student's fingerprint: a run resumed on another cluster goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

# A node type an autoscaler may launch without bound counts as this many nodes beyond what is asked for: enough for
# every engine and trial of the run, never an infinite loop.
UNBOUNDED_SPARE = 1


@dataclass(frozen=True)
class Share:
    """One student's part of the cluster while `students` students search side by side."""

    students: int  # students running at the same time (this one included)
    trials: int  # this student's trials at once
    engines: int  # this student's evaluation engines

    @property
    def fine_tunes_at_once(self) -> int:
        """Fine-tunes of the whole run that may train at the same time (training/threads.py: a worker takes its whole
        node only when nothing else trains)."""
        return self.students * self.trials


def _engines_each(cfg) -> int:
    return cfg.search.eval_engines or 1


def _nodes(node_types: list[dict], enough: int) -> list[dict]:
    """One resources dict per node: alive nodes and launchable ones up to their max (`enough` for an unbounded type)."""
    out = []
    for node_type in node_types:
        count = enough + UNBOUNDED_SPARE if node_type["count"] is None else node_type["count"]
        out += [dict(node_type["resources"]) for _ in range(min(count, enough + UNBOUNDED_SPARE))]
    return out


def trials_beside(cfg, node_types: list[dict], engines: int) -> int:
    """Trials whose Train workers fit on the cluster beside `engines` evaluation engines (0 when the engines do not
    fit): engines one per node that holds one, then stacked, then trial workers in what is left."""
    from cotgap_ray.cluster import fits, slots
    from cotgap_ray.evaluation.evaluator import evaluator_request
    from cotgap_ray.search.resources import worker_request

    evaluator, worker = evaluator_request(cfg), worker_request(cfg)
    nodes = _nodes(node_types, engines + cfg.search.trials * cfg.train.num_workers)
    left = engines
    while left:
        placed = 0
        for node in nodes:
            if left and fits(evaluator, node):
                for key, amount in evaluator.items():
                    node[key] = node.get(key, 0.0) - amount
                left, placed = left - 1, placed + 1
        if not placed:
            return 0
    workers = sum(min(slots(worker, node), 10**6) for node in nodes)
    return workers // cfg.train.num_workers


def students_at_once(cfg, students: int, node_types: list[dict]) -> int:
    """How many of `students` (the pairs run's, each with `cfg` as its single-student config) search at once:
    search.students_at_once when set, else the largest k whose engines and one trial each fit (see the module
    docstring); at least 1."""
    if students < 2:
        return 1
    if cfg.search.students_at_once:
        return min(students, cfg.search.students_at_once)
    best = 1
    for k in range(2, students + 1):
        if trials_beside(cfg, node_types, k * _engines_each(cfg)) < k:
            break
        best = k
    return best


def share(cfg, students: int, node_types: list[dict]) -> Share | None:
    """The share each student gets when students_at_once(cfg, students, node_types) > 1; None: one after another
    (each student's run sizes itself on the whole cluster, as a single-student run does)."""
    k = students_at_once(cfg, students, node_types)
    if k < 2:
        return None
    beside = trials_beside(cfg, node_types, k * _engines_each(cfg))
    if not beside:  # only search.students_at_once gets here: every student would wait for a trial forever
        from cotgap_ray.config import ConfigError

        raise ConfigError(f"{cfg.source('search.students_at_once')}: search.students_at_once={k} asks for {k} "
                          f"students' evaluation engines at once, and the cluster then holds no trial beside them, "
                          f"so no student's search could ever train; lower it (null: as many as fit)")
    trials = beside // k
    if cfg.search.max_concurrent_trials:
        trials = min(trials, cfg.search.max_concurrent_trials)
    if cfg.search.strategy != "grid":  # a grid ignores search.trials: its budget is its size (tuning caps it there)
        trials = min(trials, cfg.search.trials)
    return Share(students=k, trials=max(1, trials), engines=_engines_each(cfg))


def describe(share_: Share | None, students: int) -> str:
    """The pairs run's line on how its students run."""
    if share_ is None:
        return (f"students one after another (the cluster does not hold {students} students' evaluation engines "
                f"and a trial each at once; search.students_at_once)")
    return (f"students side by side: {share_.students} of {students} at once, each with {share_.engines} evaluation "
            f"engine(s) and up to {share_.trials} trial(s) at once (search.students_at_once)")
