"""Scoring a model (+ adapter) on a split with the one prompt and greedy decoding.

    scoring.py    rows, accuracy with its interval, the evaluation cache (the baseline is computed once)
    evaluator.py  the long-lived Ray actor that scores every trial's adapter on dev without restarting its engine
    scorers.py    how a trial's adapter is scored (the actor, or in process), problem by problem, for the trial runner
"""
