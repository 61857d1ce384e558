"""The search (python -m cotgap_ray.search): validate, baseline, generation, proxies, Tune trials, confirmation.

    run.py        the stages in order and the command line
    space.py      the search space (pure: no Ray)
    resources.py  what a trial asks of Ray, how many run at once, checked before any model loads
    tuning.py     the Tuner (OptunaSearch + ASHA), resume, the trial recorder
    trial.py      one trial: filter, fine-tune, score on dev after each epoch
    confirm.py    each teacher's best dev configuration re-trained with seeds and scored on test
    noise.py      the evaluation engine's own baseline, scored twice (A/A): the rows deltas pair with, the noise floor
    scheduler.py  ASHA per planned epoch count (like with like); trials without data never enter a rung
"""
