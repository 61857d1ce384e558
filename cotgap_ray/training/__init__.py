"""LoRA fine-tuning of the student (peft + torch), run by Ray Train.

    examples.py   before any expensive work: LoRA targets exist, the SFT examples and the rows dropped (by reason)
    loop.py       the training loop (load, LoRA, optimizer, epochs) and the plain path without Ray (train_plain)
    ray_train.py  the Ray Train wrapper: TorchTrainer worker and train_student (placement, storage, checkpoints)
    step.py       the one step every caller uses: the typed config in, an adapter (and per-epoch metrics) out
"""
