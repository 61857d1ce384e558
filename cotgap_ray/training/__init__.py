"""LoRA fine-tuning of the student (peft + torch), run by Ray Train.

    finetune.py  the training loop and its Ray Train wrapper (train_student) and the plain loop (train_plain)
    step.py      the one step every caller uses: the typed config in, an adapter (and per-epoch metrics) out
"""
