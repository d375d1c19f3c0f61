"""The claims of the Frozen Lake sanity check in its paper-literal set-up, as ``ift frozen-lake
--setup paper-literal`` reports them (docs/frozen_lake.md, "Results: the paper-literal set-up"):
the paper's network, SFT, IFT, DPO and ORPO (and IFT with λ = 0, γ = 0), the map ring4x4 whose
only routes to G are the optimal and one sub-optimal path, that sub-optimal success rejected,
5 seeds.

Judged as in test_frozen_lake_claims.py (paired per-seed differences more than 2 standard errors
from 0, under the headline reading: π* uniform over ties, every state of the map). A claim that
holds is asserted; one that does not is a strict expected failure, so a change that makes it
hold is noticed and the docs get updated. CI runs this module with both kernel settings.
"""

import json

import pytest

from ift.lab.frozen_lake import claims as judge
from ift.lab.frozen_lake import command as cli
from ift.lab.frozen_lake.setups import PAPER_LITERAL

PAPER = [spec.text for spec in judge.CLAIMS if spec.part == "paper"]
OBSERVATIONS = [spec.text for spec in judge.CLAIMS if spec.part == "observation"]
FURTHER = "{} ends further from π* than the untrained policy"
#: What holds over seeds 0-4 with both kernel settings.
HOLDS = {"IFT closer to π* than ORPO", FURTHER.format("DPO"), FURTHER.format("ORPO")}


@pytest.fixture(scope="module")
def paper_literal(tmp_path_factory):
    out = tmp_path_factory.mktemp("frozen_lake_paper_literal")
    results = cli.run(cli.FrozenLakeArguments(setup="paper-literal", out=str(out)))  # its own defaults
    assert list(results) == ["paper-literal"] and list(results["paper-literal"]) == list(PAPER_LITERAL.policies)
    return results["paper-literal"]["mlp"], json.loads((out / "paper_literal" / "mlp" / "details.json").read_text())


def verdict(details, text):
    claim = next(claim for claim in details["claims"] if claim["text"] == text)
    print(f"\npaper-literal, mlp: {text}: {claim['evidence']}")
    return claim["holds"]


def _cases():
    for text in PAPER + OBSERVATIONS:
        marks = () if text in HOLDS else pytest.mark.xfail(
            strict=True, reason="does not hold in the paper-literal set-up; docs/frozen_lake.md has the numbers")
        yield pytest.param(text, marks=marks, id=text)


@pytest.mark.slow
@pytest.mark.claim
@pytest.mark.parametrize("text", list(_cases()))
def test_the_papers_claims_and_what_the_map_does(paper_literal, text):
    assert verdict(paper_literal[1], text)


@pytest.mark.slow
@pytest.mark.claim
def test_ift_with_lam0_gamma0_is_sft_exactly(paper_literal):
    assert verdict(paper_literal[1], "IFT with λ = 0, γ = 0 is SFT exactly")


@pytest.mark.slow
@pytest.mark.claim
def test_sft_ift_and_orpo_walk_the_optimal_path_and_dpo_collapses(paper_literal):
    results, details = paper_literal
    assert details["rejected_trajectory"] == "DDDRRRU" and details["optimal_trajectory"] == "RRRDD"
    for name in ("SFT", "IFT", "ORPO"):
        assert results[name]["success_rate"]["mean"] == 1.0, name
        assert results[name]["episode_length"]["mean"] == 5.0, name  # RRRDD
    # pushing down a success whose moves are mostly optimal: the greedy walk bumps at S
    assert results["DPO"]["success_rate"]["mean"] == 0.0
