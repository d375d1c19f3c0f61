"""Rewards: answer extraction and matching, the safety guard, and the reward-model score."""

import math
import threading

import pytest
import torch

from ift.rewards import (
    AnswerMatchReward,
    Reward,
    RewardModelScore,
    RewardScores,
    RewardTimeoutError,
    RewardTimeoutWarning,
    answers_match,
    extract_answer,
    score_safely,
)

# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text,expected",
    [
        ("-3", -3.0),
        ("3.0", 3.0),
        ("1,200", 1200.0),
        # Rule: the FIRST number after the LAST answer marker -> 7 (hedging is not rewarded on 8).
        ("answer: 7 or 8", 7.0),
        ("The answer is 42.", 42.0),  # trailing period is not a decimal point
        ("x = 5", 5.0),
        ("no number here", None),
        ("", None),
        ("2 + 3 = 5, 5 * 2 = 10. The answer is 10", 10.0),  # marker beats the earlier '='
        ("First 3 apples, then 4 more, so 7 in total", 7.0),  # no marker: last number
        ("The answer is: $1,200.50.", 1200.5),
        ("Reasoning... #### 72", 72.0),
        ("12 + 3 = 15\nThen 15 - 1 = 14 left", 14.0),  # last '=' with a number after it
        ("Answer: -0.5 because 1 - 1.5", -0.5),
        ("so \\boxed{3/4}", 0.75),
        ("x = \u22123", -3.0),  # unicode minus sign
        ("5 <= 6, we keep 6", 6.0),  # '<=' is not an '=' marker: last number
        ("H2O is water", None),  # digits glued to a word are not numbers
        ("1,2000", 2000.0),  # not a thousands group: two numbers, 1 and 2000
        ("answer: unknown", None),
    ],
)
def test_extract_answer(text, expected):
    got = extract_answer(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_answers_match():
    assert answers_match(3.0, 3)
    assert answers_match(3.005, "3")
    assert answers_match(1.01, 1.0)  # exactly at the tolerance: matches despite float rounding
    assert not answers_match(1.02, 1.0)
    assert answers_match(1200.0, "1,200")
    assert answers_match(72.0, "Natalia sold 48/2 = 24 clips... #### 72")  # GSM8K gold text
    assert not answers_match(None, 3)
    assert not answers_match(float("nan"), 3)
    with pytest.raises(ValueError, match="no number"):
        answers_match(3.0, "three")


def test_answer_match_reward_scores():
    reward = AnswerMatchReward()
    examples = [{"answer": 42}, {"answer": "42"}, {"answer": 42.0}, {"answer": "1,200"}]
    responses = ["The answer is 42.", "The answer is 41", "I do not know", "#### 1200"]
    assert reward(["q"] * 4, responses, examples) == [1.0, 0.1, 0.0, 1.0]
    custom = AnswerMatchReward(correct=2.0, wrong=-1.0, missing=-2.0, answer_key="gold")
    assert custom(["q"] * 3, ["x = 1", "x = 2", "none"], [{"gold": 1}] * 3) == [2.0, -1.0, -2.0]
    with pytest.raises(KeyError, match="example 1 has no 'answer'"):
        reward(["q", "q"], ["1", "2"], [{"answer": 1}, {"question": "q"}])


# ---------------------------------------------------------------- score_safely


class Broken(Reward):
    def __call__(self, prompts, responses, examples):
        raise ZeroDivisionError("division by zero in my checker")


class NaNReward(Reward):
    def __call__(self, prompts, responses, examples):
        return [1.0, float("nan"), float("inf"), 0.5]


class Hangs(Reward):
    def __init__(self):
        self.release = threading.Event()

    def __call__(self, prompts, responses, examples):
        self.release.wait(10)
        return [0.0] * len(prompts)


PROMPTS = ["What is 6 * 7?", "p1", "p2", "p3"]
RESPONSES = ["42", "1", "2", "3"]
EXAMPLES = [{"answer": 42, "id": "gsm-17"}, {"answer": 1}, {"answer": 2}, {"answer": 3}]


def test_score_safely_passes_good_scores_through():
    result = score_safely(AnswerMatchReward(), PROMPTS, RESPONSES, EXAMPLES)
    assert isinstance(result, RewardScores)
    scores, n_nan, timed_out = result
    assert scores == [1.0, 1.0, 1.0, 1.0] and n_nan == 0 and not timed_out
    # a plain function and a tensor result also work
    scores, _, _ = score_safely(lambda p, r, e: torch.arange(len(p), dtype=torch.float32), PROMPTS, RESPONSES, EXAMPLES)
    assert scores == [0.0, 1.0, 2.0, 3.0]


def test_score_safely_reward_that_raises():
    with pytest.raises(RuntimeError) as info:
        score_safely(Broken(), PROMPTS, RESPONSES, EXAMPLES)
    message = str(info.value)
    assert "Broken" in message and "ZeroDivisionError" in message
    assert "What is 6 * 7?" in message and "gsm-17" in message and "index 0" in message
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_score_safely_replaces_nan_and_warns():
    with pytest.warns(RuntimeWarning, match="NaNReward returned 2 non-finite"):
        scores, n_nan, _ = score_safely(NaNReward(), PROMPTS, RESPONSES, EXAMPLES)
    assert scores == [1.0, 0.0, 0.0, 0.5] and n_nan == 2
    assert all(math.isfinite(s) for s in scores)


def test_score_safely_wrong_length_and_type():
    with pytest.raises(ValueError, match="returned 3 scores for a batch of 4"):
        score_safely(lambda p, r, e: [0.0] * 3, PROMPTS, RESPONSES, EXAMPLES)
    with pytest.raises(TypeError, match="position 1"):
        score_safely(lambda p, r, e: [0.0, None, 0.0, 0.0], PROMPTS, RESPONSES, EXAMPLES)
    with pytest.raises(TypeError, match="list of 4 floats"):
        score_safely(lambda p, r, e: 1.0, PROMPTS, RESPONSES, EXAMPLES)
    with pytest.raises(ValueError, match="equally many"):
        score_safely(AnswerMatchReward(), PROMPTS, RESPONSES[:2], EXAMPLES)


def test_score_safely_scores_a_hanging_reward_zero_and_warns():
    hangs = Hangs()
    try:
        with pytest.warns(RewardTimeoutWarning, match=r"Hangs did not return within 0.2 s.*scored 0"):
            result = score_safely(hangs, PROMPTS, RESPONSES, EXAMPLES, timeout_s=0.2)
        assert result == RewardScores([0.0] * 4, 0, True)
        # The old contract on request: a clear TimeoutError.
        with pytest.raises(TimeoutError, match=r"Hangs did not return within 0.2 s") as info:
            score_safely(hangs, PROMPTS, RESPONSES, EXAMPLES, timeout_s=0.2, on_timeout="raise")
        assert isinstance(info.value, RewardTimeoutError)
    finally:
        hangs.release.set()
    # With a timeout, errors inside the thread still surface as RuntimeError (never scored 0), results pass.
    with pytest.raises(RuntimeError, match="Broken raised ZeroDivisionError"):
        score_safely(Broken(), PROMPTS, RESPONSES, EXAMPLES, timeout_s=5)
    assert score_safely(AnswerMatchReward(), PROMPTS, RESPONSES, EXAMPLES, timeout_s=5) == ([1.0] * 4, 0, False)
    with pytest.raises(ValueError, match="on_timeout"):
        score_safely(AnswerMatchReward(), PROMPTS, RESPONSES, EXAMPLES, timeout_s=5, on_timeout="ignore")


def test_base_reward_is_abstract():
    with pytest.raises(NotImplementedError):
        Reward()(["p"], ["r"], [{}])


# ---------------------------------------------------------------- reward model


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from ift.core.tokenizer import build_char_tokenizer

    path = tmp_path_factory.mktemp("reward_model")
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2ForSequenceClassification(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, tokenizer


def direct_score(model, tokenizer, text):
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits[0, 0].item()  # one unpadded text: last token's logit


def test_reward_model_score_matches_unpadded_forward(tiny_reward_model):
    path, model, tokenizer = tiny_reward_model
    prompts = ["1+1=", "What is 12 * 3? ", "x"]
    responses = ["2", "36, I think", "yz"]
    reward = RewardModelScore(str(path), batch_size=2, device="cpu")  # batches of mixed lengths
    assert reward._model is None  # lazy
    scores = reward(prompts, responses, [{}] * 3)
    expected = [direct_score(model, tokenizer, p + r) for p, r in zip(prompts, responses)]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(round(s, 6) for s in scores)) == 3  # the model does tell them apart
    guarded, n_nan, _ = score_safely(reward, prompts, responses, [{}] * 3)
    assert guarded == pytest.approx(scores) and n_nan == 0


def test_reward_model_tokenizer_without_pad_token(tiny_reward_model):
    path, model, _ = tiny_reward_model
    from ift.core.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    tokenizer.pad_token = None  # falls back to EOS for padding
    reward = RewardModelScore(str(path), tokenizer=tokenizer, batch_size=4, device="cpu")
    scores = reward(["ab", "abcdef"], ["c", ""], [{}, {}])
    expected = [direct_score(model, tokenizer, t) for t in ("abc", "abcdef")]
    assert scores == pytest.approx(expected, abs=1e-5)
