"""The leaf layer: what every other package shares (nothing here imports another ``ift`` package).

Constants (the ignore index), model and tokenizer construction, the forward-pass and
generation helpers, LoRA wrapping, distributed reductions, and the small utilities the
experiments use (worker processes, statistics, a hardware description, a JSONL output
file written under ``.partial`` and renamed when complete).
"""
