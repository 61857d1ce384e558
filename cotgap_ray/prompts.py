"""The one prompt and answer format of cotgap_ray: used for the baseline, for teachers, and after distillation.

The protocol only works if the student is measured before and after distillation with the same prompt and decoding,
so both live here and nowhere else. `render_prompt` turns a question into the exact text a model sees (chat template
when the tokenizer has one, a plain format for base models), with the BOS token written out when the model expects
one; engines then tokenize with `add_special_tokens=False`, so vLLM and HF see identical token ids.

    question "Calculate 5 - 3 - 6."
      -> chat model: "<|im_start|>user\nCalculate 5 - 3 - 6.\n\nSolve the problem step by step. ...<|im_start|>assistant\n"
      -> base model: "<bos>Question: Calculate 5 - 3 - 6.\nSolve the problem step by step. ...\nAnswer:"
"""

from __future__ import annotations

import hashlib

from cotgap_ray.records import SamplingParams

INSTRUCTION = (
    "Solve the problem step by step. "
    'Then write the final answer on its own line as "The answer is N." where N is a number.'
)
PLAIN_TEMPLATE = "Question: {question}\n{instruction}\nAnswer:"

# Decoding for every evaluation (baseline and every adapter): greedy, so the delta is not sampling noise.
EVAL_SAMPLING = SamplingParams(max_tokens=256, temperature=0.0, n=1, seed=0)


def user_message(question: str) -> str:
    return f"{question.strip()}\n\n{INSTRUCTION}"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(question: str, tokenizer) -> str:
    """The full prompt text for `question`, ready for tokenization with add_special_tokens=False."""
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message(question)}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = PLAIN_TEMPLATE.format(question=question.strip(), instruction=INSTRUCTION)
    return _with_bos(text, tokenizer)


def _with_bos(text: str, tokenizer) -> str:
    """Prepend the BOS token text when the tokenizer would add one itself and the text does not start with it."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or text.startswith(bos):
        return text
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    if ids and ids[0] == tokenizer.bos_token_id:
        return bos + text
    return text


def template_fingerprint() -> str:
    """Changes whenever the prompt format changes; part of every cache key that depends on prompts."""
    material = "\x1f".join([INSTRUCTION, PLAIN_TEMPLATE, "chat:user-only", "bos:auto"])
    return hashlib.sha256(material.encode()).hexdigest()[:16]
