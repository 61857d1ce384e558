"""LoRA fine-tuning of the student (peft + torch), run by Ray Train.

    examples.py   before any expensive work: LoRA targets exist, the SFT examples and the rows dropped (by reason)
    loop.py       the training loop (load, LoRA, optimizer, epochs) and the plain path without Ray (train_plain)
    ray_train.py  the Ray Train wrapper: TorchTrainer worker and train_student (placement, storage, checkpoints)
    step.py       the one fine-tune step: the typed config in, an adapter (and per-epoch metrics) out
    trial_runner.py  the one trial every caller runs: filter -> rationale file -> examples check -> fine-tune ->
                  score -> paired with the baseline -> compared (distill, the search's trials, the confirmation)
"""
