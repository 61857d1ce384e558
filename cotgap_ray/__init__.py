"""cotgap_ray: which teacher should I distill chain-of-thought from, for this student, on this task?

Every result is a delta over the student's own pre-distillation baseline, measured with the same prompt and
decoding, with a confidence interval, on a held-out split the search never saw. See README.md.
"""

__version__ = "0.1.0"
