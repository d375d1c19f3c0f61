"""ReFT's answer rule: a number after the answer trigger (``AnswerMatchReward(trigger=...)``)."""

import random

import pytest

from ift.rewards import AnswerMatchReward, extract_answer, extract_triggered_answer

GOLD = {"answer": "#### 72"}


def score(response, trigger="The answer is", gold=GOLD):
    return AnswerMatchReward(trigger=trigger)(["q"], [response], [gold])[0]


# ---------------------------------------------------------------- the reward


def test_trigger_and_the_right_number_scores_one():
    assert score("6 * 12 = 72 apples.\nThe answer is 72.") == 1.0
    assert score("He has 72.\n#### 72", trigger="####") == 1.0


def test_trigger_and_a_wrong_number_scores_the_partial_reward():
    assert score("6 * 12 = 71.\nThe answer is 71.") == pytest.approx(0.1)


def test_no_trigger_scores_zero_even_with_the_right_number():
    assert score("6 * 12 = 72") == 0.0  # an '=' is not a trigger
    assert score("So he has 72 apples.") == 0.0
    assert score("answer: 72") == 0.0  # another format's marker is not this trigger
    assert score("#### 72", trigger="The answer is") == 0.0
    assert score("") == 0.0


def test_trigger_without_a_number_after_it_scores_zero():
    assert score("72 apples. The answer is unclear.") == 0.0
    assert score("The answer is 72. Wait, the answer is") == 0.0  # the LAST trigger counts


def test_the_last_trigger_counts():
    assert score("The answer is 71. No: the answer is 72") == 1.0
    assert score("The answer is 72. No: the answer is 71") == pytest.approx(0.1)
    assert extract_triggered_answer("The answer is 3 ... The answer is 4 or 5", "The answer is") == 4.0


def test_a_list_of_triggers():
    triggers = ["The answer is", "####"]
    assert score("6 * 12 = 72\n#### 72", trigger=triggers) == 1.0
    assert score("The answer is 72", trigger=triggers) == 1.0
    # whichever trigger occurs last wins
    assert extract_triggered_answer("The answer is 1\n#### 2", triggers) == 2.0
    assert extract_triggered_answer("#### 1\nThe answer is 2", triggers) == 2.0
    assert extract_triggered_answer("no trigger, 7", triggers) is None
    # at the same start, the longer phrase is the occurrence (the number after it)
    assert extract_triggered_answer("answer is: 7", ["answer", "answer is:"]) == 7.0


def test_triggers_match_in_any_case():
    assert score("THE ANSWER IS 72") == 1.0
    assert score("so the answer is 72", trigger="The Answer Is") == 1.0
    assert extract_triggered_answer("The Answer Is -3", "the answer is") == -3.0


def test_numbers_after_the_trigger_read_as_in_the_liberal_rule():
    t = "The answer is"
    assert extract_triggered_answer("The answer is: $1,200.50.", t) == 1200.5
    assert extract_triggered_answer("The answer is 3/4", t) == 0.75
    assert extract_triggered_answer("The answer is \u22125", t) == -5.0  # unicode minus
    assert extract_triggered_answer("The answer is 7 or 8", t) == 7.0  # the first number after it
    assert extract_triggered_answer("The answer is x2", t) is None  # glued to a word: not a number


def test_the_liberal_default_is_unchanged():
    reward = AnswerMatchReward()
    assert reward.trigger is None
    assert extract_answer("x = 5") == 5.0
    assert reward.extract("x = 5") == 5.0
    assert reward(["q"] * 3, ["x = 72", "so 71", "no idea"], [GOLD] * 3) == [1.0, pytest.approx(0.1), 0.0]
    # the same responses under ReFT's rule: no trigger, no partial reward
    assert AnswerMatchReward(trigger="The answer is")(["q"] * 3, ["x = 72", "so 71", "no idea"], [GOLD] * 3) == [
        0.0, 0.0, 0.0]


def test_repr_shows_the_trigger():
    assert "trigger=None" in repr(AnswerMatchReward())
    assert "trigger='####'" in repr(AnswerMatchReward(trigger="####"))
    assert "trigger=['The answer is', '####']" in repr(AnswerMatchReward(trigger=["The answer is", "####"]))


@pytest.mark.parametrize("bad", ["", "   ", [], ["The answer is", ""]])
def test_an_empty_trigger_is_refused_with_the_fix(bad):
    with pytest.raises(ValueError, match=r"AnswerMatchReward: trigger.*(empty|blank).*null"):
        AnswerMatchReward(trigger=bad)
    with pytest.raises(ValueError, match="extract_triggered_answer: trigger"):
        extract_triggered_answer("The answer is 1", bad)


def test_a_trigger_that_is_not_a_string_is_refused():
    with pytest.raises(TypeError, match="trigger"):
        AnswerMatchReward(trigger=[3])


# ------------------------------------------- against a slow, obviously correct reference


def reference_extract(text, triggers):
    """str.rfind per trigger; the occurrence that starts last (longest on a tie); then the first
    whitespace-separated token after it that reads as a number."""
    lowered = text.lower()
    best = None
    for trigger in triggers:
        start = lowered.rfind(trigger.lower())
        if start >= 0 and (best is None or (start, len(trigger)) > best):
            best = (start, len(trigger))
    if best is None:
        return None
    for token in text[best[0] + best[1]:].split():
        try:
            return float(token.replace(",", ""))
        except ValueError:
            continue
    return None


PIECES = ["The answer is", "the ANSWER is", "THE ANSWER IS", "answer:", "Answer:", "answer", "####", "#",
          "=", "x", "apples", "so", "is", "The", "and", "-", "7", "42", "-3", "0", "3.5", "1,200", "100"]
TRIGGER_SETS = [["The answer is"], ["answer:"], ["####"], ["The answer is", "answer:"],
                ["The answer is", "####", "answer:"], ["answer"], ["answer", "answer:"]]


def test_extract_triggered_answer_matches_the_reference_on_random_texts():
    rng = random.Random(20240117)
    found = missing = 0
    for _ in range(600):
        text = " ".join(rng.choice(PIECES) for _ in range(rng.randint(0, 12)))
        triggers = rng.choice(TRIGGER_SETS)
        expected = reference_extract(text, triggers)
        got = extract_triggered_answer(text, triggers)
        assert got == expected, (text, triggers, got, expected)
        reward = AnswerMatchReward(trigger=triggers)
        assert reward.score_one(text, {"answer": 42}) == (
            0.0 if expected is None else 1.0 if expected == 42 else pytest.approx(0.1))
        found += expected is not None
        missing += expected is None
    assert found > 100 and missing > 100  # both outcomes are exercised


# ---------------------------------------------------------------- the shipped GSM8K config


def test_the_gsm8k_config_reaches_the_reward_with_its_trigger(capsys):
    """Parsed by the CLI as a run would parse it (a lone "####" would arrive as null)."""
    from pathlib import Path

    import yaml

    from ift.cli import main

    config = Path(__file__).resolve().parent.parent / "configs" / "math" / "reft_gsm8k.yaml"
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config), "--print_config"])
    assert stop.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    sft, ppo = printed["model"]["objective"]["init_args"]["stages"]
    assert sft["epochs"] == 2 and sft["lr"] is None
    assert printed["model"]["optimizer"]["init_args"]["lr"] == pytest.approx(1e-5)  # SFT's, ReFT §4.3
    assert ppo["lr"] == pytest.approx(3e-7)  # RL's, ReFT §4.3
    args = ppo["objective"]["init_args"]
    assert (args["kl_coef"], args["vf_coef"], args["ppo_epochs"], args["clip_eps"]) == (0.05, 5.0, 2, 0.2)
    assert (args["gamma"], args["gae_lambda"], args["samples_per_prompt"], args["temperature"]) == (1.0, 0.95, 1, 1.0)
    reward_args = args["reward"]["init_args"]
    assert reward_args["trigger"] == ["####"]
    reward = AnswerMatchReward(**reward_args)
    gold = {"answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"}
    assert reward(["q"] * 3, ["48 + 24 = 72", "#### 72", "#### 70"], [gold] * 3) == [0.0, 1.0, pytest.approx(0.1)]
