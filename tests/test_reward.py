import numpy as np
import pytest

from search_r1_plugin.reward import compute_score, f1_score, is_well_formed, normalize_answer


def test_normalization():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a pear.") == "apple pear"
    assert normalize_answer("Ünïcode Straße") == "ünïcode straße"


@pytest.mark.parametrize(
    "response, gt, em",
    [
        ("<answer> the Beatles </answer>", {"target": ["Beatles"]}, 1.0),
        ("<answer>Paris</answer>", {"target": "paris"}, 1.0),
        ("<answer>Paris</answer>", {"target": np.array(["Lyon", "PARIS."])}, 1.0),
        ("<answer>Paris</answer>", ["Lyon"], 0.0),
        ("no answer at all", {"target": ["x"]}, 0.0),
        ("<answer>wrong</answer> ... <answer>Rome</answer>", {"target": ["rome"]}, 1.0),  # last answer scored
        ("<answer>Rome</answer> ... <answer>wrong</answer>", {"target": ["rome"]}, 0.0),
        ("<answer>Rome", {"target": ["rome"]}, 0.0),  # unclosed
        ("<answer></answer>", {"target": [""]}, 1.0),
        ("<answer> 東京 </answer>", {"target": ["東京"]}, 1.0),
    ],
)
def test_em(response, gt, em):
    assert compute_score("nq", response, gt)["score"] == em


def test_single_answer_suffices_unlike_original():
    # The original scored prompt+response and needed >= 2 matches; verl passes the response only.
    assert compute_score("nq", "<think>x</think><answer>Beijing</answer>", {"target": ["Beijing"]})["em"] == 1.0


def test_extra_metrics():
    out = compute_score("nq", "<think>a</think><answer>new york city</answer>", {"target": ["New York"]})
    assert out["em"] == 0.0 and out["sub_em"] == 1.0 and 0 < out["f1"] < 1
    assert out["format_ok"] == 1.0
    assert f1_score("x b c", ["b c d"]) == pytest.approx(2 / 3)
    assert f1_score("a b c", ["b c d"]) == pytest.approx(0.8)  # "a" is an article


def test_well_formed():
    good = "<think>a</think><search>q</search>\n\n<information>docs</information>\n\n<think>b</think><answer>x</answer>"
    assert is_well_formed(good)
    assert not is_well_formed("<answer>x</answer>")  # no think first
    assert not is_well_formed("<think>a</think> stray <answer>x</answer>")
    assert not is_well_formed("<think>a<search>q</search></think><answer>x</answer>")
    assert not is_well_formed("<think>a</think><search>q</search><answer>x</answer>")


def test_format_variant_table():
    gt = {"target": ["x"]}
    wf_right = "<think>a</think><answer>x</answer>"
    wf_wrong = "<think>a</think><answer>y</answer>"
    kw = dict(format_reward=True, structure_format_score=0.2, final_format_score=0.1, retrieval_score=0.0)
    assert compute_score("nq", wf_right, gt, **kw)["score"] == 1.0
    assert compute_score("nq", "junk <answer>x</answer>", gt, **kw)["score"] == pytest.approx(0.8)
    assert compute_score("nq", wf_wrong, gt, **kw)["score"] == pytest.approx(0.2)
    assert compute_score("nq", "junk <answer>y</answer>", gt, **kw)["score"] == pytest.approx(0.1)
    assert compute_score("nq", "junk", gt, **kw)["score"] == 0.0
    hit = "<think>a</think><search>q</search><information>x is here</information><think>b</think><answer>y</answer>"
    assert compute_score("nq", hit, gt, **{**kw, "retrieval_score": 0.1})["score"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    "answer, read",
    [
        ("Ravenor", 1.0),  # a name of the passage, right or wrong
        ("the ravenor", 1.0),  # normalised as EM normalises
        ("Raven", 0.0),  # part of a word is not a word read
        ("Tilsaro", 0.0),  # only in the question and the model's own text, never in a passage
        ("", 0.0),
    ],
)
def test_answer_read_counts_answers_taken_from_the_passages(answer, read):
    response = (
        "<think>Tilsaro?</think><search>Tilsaro</search><information>Doc 1(Title: Kalomi) Kalomi was born in Ravenor."
        f"</information><think>so</think><answer>{answer}</answer>"
    )
    assert compute_score("nq", response, {"target": ["x"]})["answer_read"] == read
    assert compute_score("nq", "<think>a</think><answer>Ravenor</answer>", {"target": ["x"]})["answer_read"] == 0.0  # nothing read


def test_bad_ground_truth_is_a_clear_error():
    with pytest.raises(ValueError, match="target"):
        compute_score("nq", "<answer>x</answer>", {"answers": ["x"]})


def test_rollout_stats_pass_through_extra_info():
    out = compute_score("nq", "<answer>x</answer>", {"target": ["x"]}, {"search_r1": {"searches": 2.0, "turns": 3.0}})
    assert out["num_searches"] == 2.0 and out["rollout/turns"] == 3.0


# (prediction, golds, F1) by the HotpotQA-official rule, which FlashRAG's F1_Score follows.
OFFICIAL_F1_CASES = [
    ("the no yes U.S.", ["no a - the"], 0.0),  # gold normalises to "no": only an exact "no" scores
    ("yes", ["Yes."], 1.0),
    ("yes it is", ["yes"], 0.0),
    ("no", ["no way"], 0.0),  # prediction "no" against a non-special gold that differs
    ("noanswer", ["no answer"], 0.0),
    ("Paris France", ["paris"], 2 / 3),
    ("no", ["yes", "no"], 1.0),  # best over golds
    ("the cat sat", ["a cat sat down"], 0.8),
]


@pytest.mark.parametrize("prediction, golds, f1", OFFICIAL_F1_CASES)
def test_f1_matches_the_official_rule(prediction, golds, f1):
    assert f1_score(prediction, golds) == pytest.approx(f1)
