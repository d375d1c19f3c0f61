"""Arithmetic preference pairs: the chosen solution is right, the rejected one has exactly one
false step (later steps worked from its wrong value) and a wrong final answer."""

import pytest

from ift.tasks.arithmetic.preference_pairs import arithmetic_preference_pairs, parse_prompt, worked_solution


def false_steps(solution: str) -> int:
    """How many ``a<op>b=c`` steps of a worked solution are false (checked with eval)."""
    body, _, _ = solution.rpartition(" answer: ")
    wrong = 0
    for step in body.split(","):
        expression, _, stated = step.rpartition("=")
        wrong += eval(expression) != int(stated)  # the task's steps are plain integer expressions
    return wrong


def test_chosen_is_correct_and_rejected_has_one_false_step_and_a_wrong_answer():
    pairs = arithmetic_preference_pairs(300, seed=3)
    for pair in pairs:
        assert false_steps(pair["chosen"]) == 0
        assert pair["chosen"].endswith(f"answer: {eval(pair['prompt'][:-1])}") and pair["answer"] == str(eval(pair["prompt"][:-1]))
        assert false_steps(pair["rejected"]) == 1, pair
        assert not pair["rejected"].endswith(f"answer: {pair['answer']}"), pair
        # Same shape: the same number of steps, and the first step's operands agree.
        assert pair["rejected"].count(",") == pair["chosen"].count(",")
    # Errors fall on every step position, not just the last one.
    first_step_wrong = sum(p["rejected"].split(",")[0] != p["chosen"].split(",")[0] for p in pairs)
    assert 0 < first_step_wrong < len(pairs)


def test_later_steps_are_worked_from_the_wrong_value():
    # 2+3-1: steps 2+3=5, 5-1=4. A +2 error on step 0 gives 2+3=7, then 7-1=6.
    assert worked_solution([2, 3, 1], ["+", "-"], wrong_step=(0, 2)) == "2+3=7,7-1=6 answer: 6"
    # 4-3*19: the product first: 3*19=57, then 4-57. An error on the product carries into the difference.
    assert worked_solution([4, 3, 19], ["-", "*"], wrong_step=(0, -1)) == "3*19=56,4-56=-52 answer: -52"
    assert worked_solution([4, 3, 19], ["-", "*"]) == "3*19=57,4-57=-53 answer: -53"


def test_deterministic_in_the_seed_and_excludes_prompts():
    assert arithmetic_preference_pairs(20, seed=1) == arithmetic_preference_pairs(20, seed=1)
    assert arithmetic_preference_pairs(20, seed=1) != arithmetic_preference_pairs(20, seed=2)
    held_out = {p["prompt"] for p in arithmetic_preference_pairs(50, seed=0)}
    assert not held_out & {p["prompt"] for p in arithmetic_preference_pairs(100, seed=1, exclude=held_out)}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="num_operands >= 2"):
        arithmetic_preference_pairs(3, seed=0, num_operands=1)
    with pytest.raises(ValueError, match="cannot read the problem"):
        parse_prompt("17+x=")
    assert parse_prompt("17+25*2=") == ([17, 25, 2], ["+", "*"])
