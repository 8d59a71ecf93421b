"""Stage Gate G1 (shared.gates): the final-answer rule on tricky strings, R_mech over response tokens
only, the disjoint-split check, the undefined-rho FAIL, a planted pack that PASSes, and bad inputs."""
import pytest
import torch

from planted_sae import LAYER, planted_sae
from shared.data import tasks
from shared.evals import gates
from shared.features import trace
from shared.saes import architectures
from shared.saes.relu import ReLUConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("response, want", [
    ("The answer is 18.", "18"),
    ("#### 1,234", "1234"),
    ("She pays $1,234.00 in total", "1234"),
    ("so 10 - 5 = 5", "5"),  # a spaced minus is an operator, not a sign
    ("x = -4", "-4"),
    ("It is 12.0", "12"),
    ("#### 42\nQuestion: Tom has 5 apples.\n#### 7", "42"),  # the first '####' wins over a run-on continuation
    (r"so \boxed{3.50} and then 99", "3.5"),  # \boxed{} wins over a later stray number
    ("no number here", None),
    ("ratio 3.5 and 50%", "50"),
    ("5 apples and 7 pears, total 12 fruit", "12"),
    ("pages 3-4", "3"),
    ("−7 degrees", "-7"),
    ("#### $-5", "-5"),
    ("The answer is 0.", "0"),
    ("", None),
])
def test_final_answer_rule(response, want):
    assert gates.final_answer(response) == want


def test_is_correct_normalises_both_sides():
    assert gates.is_correct("so she earns $1,080.00.", 1080) == ("1080", True)
    assert gates.is_correct("#### 18", "18.0") == ("18", True)
    assert gates.is_correct("about 17.5", 18) == ("17.5", False)
    assert gates.is_correct("no idea", 3) == (None, False)
    with pytest.raises(ValueError, match="gold answer"):
        gates.is_correct("5", "five")


# ------------------------------------------------------------------ the planted SAE: latent 0 fires on '~'

@pytest.fixture(scope="module")
def setup(tiny_model):
    model, tok = tiny_model("llama", device="cpu")
    return model, tok, planted_sae(model, tok)


def _problem(i, question, response, gold=5.0):
    return {"id": f"p{i}", "question": question, "gold": gold, "dataset_response": response}


def test_r_mech_reads_response_tokens_only(setup):
    model, tok, sae = setup
    problems = [_problem(0, "~ ~ how many ~ ~ apples ~ ~?", " there are 5 apples"),
                _problem(1, "how many apples?", " there are ~ 5 ~ apples")]
    scored = gates.responses(model, tok, problems, source="dataset")
    means, counts = gates.response_means(model, tok, sae, LAYER, scored)
    assert counts == [len(r["response_ids"]) for r in scored]  # byte tokens, no special ones
    scores = gates.r_mech(means, [0], [1])
    assert scores[0] == 0.0  # the '~'s of the prompt are read as context but not scored
    _, z_all = trace.token_latents(model, tok, sae, LAYER, torch.tensor([scored[0]["prompt_ids"] + scored[0]["response_ids"]]))
    assert float(z_all[:, 0].mean()) > 0  # ...though scoring the whole sequence would count them
    assert scores[1] > 0
    # the same number from the full sequence's latents, sliced to the response by hand
    ids = torch.tensor([scored[1]["prompt_ids"] + scored[1]["response_ids"]])
    _, z = trace.token_latents(model, tok, sae, LAYER, ids)
    n_resp = len(scored[1]["response_ids"])
    assert scores[1] == pytest.approx(float(z[-n_resp:, 0].mean() - z[-n_resp:, 1].mean()), rel=1e-5)


def test_planted_pack_passes_the_gate(setup):
    """Right answers carry '~', wrong ones do not: the '~' latent as the helpful pack gives rho near 1."""
    model, tok, sae = setup
    problems = []
    for i in range(24):
        right = i % 2 == 0
        answer = 10 + i if right else 99
        problems.append(_problem(i, f"What is {i} + 10?", f" {i} + 10 ~ so ~ #### {answer}" if right
                                 else f" {i} + 10 so #### {answer}", gold=10 + i))
    scored = gates.responses(model, tok, problems, source="dataset")
    means, counts = gates.response_means(model, tok, sae, LAYER, scored)
    rows = gates.g1_rows(problems, scored, gates.r_mech(means, [0], [1]), counts)
    assert [r["correct"] for r in rows] == [i % 2 == 0 for i in range(24)]
    report = gates.g1_report(rows, model="tiny:llama", layer=LAYER, sae="planted", helpful_pack=[0],
                             harmful_pack=[1], pack_source="given", selection_split_disjoint=None)
    assert report["pass"] is True and report["rho"] > 0.8 and report["p_value"] < 1e-4
    assert report["accuracy"] == 0.5 and report["n_eval"] == 24 and len(report["rows"]) == 24
    assert set(report["rows"][0]) >= {"id", "question", "gold", "response", "predicted", "correct", "r_mech"}
    # the reversed packs anti-correlate: FAIL
    flipped = gates.g1_rows(problems, scored, gates.r_mech(means, [1], [0]), counts)
    assert gates.spearman_verdict([r["r_mech"] for r in flipped], [r["correct"] for r in flipped])["pass"] is False


def test_generated_responses_are_the_same_batched_or_one_by_one(setup):
    model, tok, _ = setup
    problems = gates.load_problems("synthetic:arithmetic", 3, split="test")
    one = gates.responses(model, tok, problems, max_new_tokens=5, batch_size=1)
    batched = gates.responses(model, tok, problems, max_new_tokens=5, batch_size=3)
    assert [r["response_ids"] for r in one] == [r["response_ids"] for r in batched]
    enc = tok(gates.PLAIN_PROMPT.format(question=problems[0]["question"]), return_tensors="pt")
    plain = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert one[0]["response_ids"] == plain[0, enc.input_ids.shape[1]:].tolist()[:len(one[0]["response_ids"])]
    assert all(len(r["response_ids"]) <= 5 and r["prompt_format"] == "plain" for r in one)


# ------------------------------------------------------------------ selection, overlap, the verdict

def test_select_packs_picks_the_latents_that_separate_right_from_wrong():
    g = torch.Generator().manual_seed(0)
    means = torch.rand(40, 12, generator=g)
    right = [i % 2 == 0 for i in range(40)]
    means[::2, 3] += 2.0   # fires more on right answers
    means[1::2, 7] += 2.0  # fires more on wrong answers
    means[::2, 5] += 0.5
    helpful, harmful, info = gates.select_packs(means, right, 2)
    assert helpful[0] == 3 and 5 in helpful and harmful[0] == 7
    assert info["n_right"] == 20 and info["n_wrong"] == 20
    with pytest.raises(ValueError, match="2 of each"):
        gates.select_packs(means, [True] * 40, 2)


def test_disjoint_splits_pass_and_an_overlap_raises():
    test = gates.load_problems("synthetic:arithmetic", 30, split="test")
    train = gates.load_problems("synthetic:arithmetic", 30, split="train")
    assert gates.check_disjoint(train, test) is True
    assert all(p["gold"] == float(tasks._gsm8k_answer(p["answer"])) for p in test)
    assert all(gates.is_correct(p["dataset_response"], p["gold"])[1] in (True, False) for p in test)
    leaked = train[:5] + [dict(test[3], question="  " + test[3]["question"].upper())]
    with pytest.raises(ValueError, match="share 1 question"):
        gates.check_disjoint(leaked, test)


def test_degenerate_rho_is_null_and_fails_without_crashing():
    all_right = gates.spearman_verdict([0.1, 0.5, 0.2, 0.9], [True] * 4)
    assert all_right["rho"] is None and all_right["p_value"] is None and all_right["pass"] is False
    assert "every response is right" in all_right["reason"]
    assert "every response is wrong" in gates.spearman_verdict([0.1, 0.5, 0.2], [False] * 3)["reason"]
    flat = gates.spearman_verdict([0.3] * 4, [True, False, True, False])
    assert flat["rho"] is None and "same for every problem" in flat["reason"]
    # a response with no tokens has no score: left out of rho, counted
    some = gates.spearman_verdict([None, 1.0, 2.0, 3.0, 4.0], [False, False, False, True, True])
    from scipy.stats import spearmanr

    assert some["n_scored"] == 4 and some["rho"] == pytest.approx(spearmanr([1, 2, 3, 4], [0, 0, 1, 1])[0])
    rows = [{"r_mech": 0.1 * i, "correct": True} for i in range(5)]
    report = gates.g1_report(rows, model="m", layer=0, sae="s", helpful_pack=[1], harmful_pack=[2],
                             pack_source="given", selection_split_disjoint=None)
    assert report["pass"] is False and report["rho"] is None and report["accuracy"] == 1.0


# ------------------------------------------------------------------ bad inputs: one-line errors

@pytest.mark.parametrize("helpful, harmful, match", [
    ([], [1], "helpful pack is empty"),
    ([0], [], "harmful pack is empty"),
    ([0], [4], r"out of range \[4\]"),
    ([-1], [2], "out of range"),
    ([0, 0], [2], "twice"),
    ([0, 2], [2], "in both"),
])
def test_bad_packs(helpful, harmful, match):
    with pytest.raises(ValueError, match=match) as e:
        gates.r_mech(torch.zeros(3, 4), helpful, harmful)
    assert "\n" not in str(e.value)


def test_fewer_problems_than_asked_is_a_one_line_error(monkeypatch):
    few = tasks.load_task_dataset("synthetic:arithmetic", 3, split="test")
    monkeypatch.setattr(tasks, "load_task_dataset", lambda *a, **k: few)  # a split with only 3 problems
    with pytest.raises(ValueError, match="has only 3 problems but 100 were asked for") as e:
        gates.load_problems("synthetic:arithmetic", 100)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="Stage Gate G1 reads"):
        gates.load_problems("imdb", 10)


def test_sae_of_another_width_is_a_one_line_error(setup):
    model, tok, _ = setup
    wrong = architectures.build_sae(ReLUConfig(d_in=7, d_sae=4)).eval()
    scored = gates.responses(model, tok, [_problem(0, "how many?", " 5")], source="dataset")
    with pytest.raises(ValueError, match="d_in=7") as e:
        gates.response_means(model, tok, wrong, LAYER, scored)
    assert "\n" not in str(e.value)


def test_dataset_responses_need_a_dataset_that_has_them(setup):
    model, tok, _ = setup
    with pytest.raises(ValueError, match="model-style answers"):
        gates.responses(model, tok, [{"id": "x", "question": "q?", "gold": 1.0}], source="dataset")
    with pytest.raises(ValueError, match="source="):
        gates.responses(model, tok, [], source="sample")


def test_packs_from_a_catalog_by_label(tmp_path):
    import json

    catalog = {"features": [{"id": 5, "name": "arithmetic carry", "desc": "adding digits"},
                            {"id": 9, "name": "arithmetic result", "desc": "the sum after '='"},
                            {"id": 2, "name": "confusion", "desc": "hedging, unsure words"}]}
    path = tmp_path / "feature_catalog.json"
    path.write_text(json.dumps(catalog))
    helpful, harmful, source = gates.given_packs("arithmetic", "unsure", str(path), pack_size=1)
    assert (helpful, harmful) == ([5], [2]) and source.startswith(f"catalog {path}")
    assert gates.given_packs("arithmetic", [7], catalog, pack_size=5)[:2] == ([5, 9], [7])
    assert gates.given_packs([1], [7], None, pack_size=5)[2] == "given latent ids"
    with pytest.raises(ValueError, match="no feature label"):
        gates.given_packs("poetry", [1], catalog, pack_size=3)


def test_chat_tokenizers_get_the_chat_template(setup):
    import copy

    _, tok, _ = setup
    chat = copy.deepcopy(tok)
    chat.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    ids, fmt = gates.prompt_ids(chat, "What is 2 + 2?")
    assert fmt == "chat" and all(isinstance(t, int) for t in ids)
    text = chat.decode(ids)
    assert text.startswith("<|user|>What is 2 + 2?\nSolve it step by step") and text.endswith("<|assistant|>")
    ids, fmt = gates.prompt_ids(tok, "What is 2 + 2?")
    assert fmt == "plain" and tok.decode(ids, skip_special_tokens=True) == "Question: What is 2 + 2?\nAnswer:"


def test_dataset_responses_need_synthetic_arithmetic_in_the_notebook_parameters():
    from shared.notebook import parameters

    with pytest.raises(parameters.ParameterError, match=r"^RESPONSES = 'dataset': .*synthetic:arithmetic"):
        parameters.check_parameters({"PROBLEMS": "gsm8k", "RESPONSES": "dataset"})
    assert parameters.check_parameters({"PROBLEMS": "synthetic:arithmetic", "RESPONSES": "dataset"})["RESPONSES"] == "dataset"


def test_the_report_says_its_p_value_is_two_sided_and_it_is():
    """g1_report's p_value is scipy's two-sided p of rho = 0 (not the one-sided half a directional gate might
    suggest), and the report says so beside it (p_value_test)."""
    from scipy.stats import spearmanr

    scores = [0.1, 0.4, 0.35, 0.8, 0.7, 0.2, 0.9, 0.5]
    right = [False, False, True, True, True, False, True, False]
    rows = [{"r_mech": s, "correct": c} for s, c in zip(scores, right)]
    report = gates.g1_report(rows, model="m", layer=0, sae="s", helpful_pack=[0], harmful_pack=[1],
                             pack_source="given latent ids", selection_split_disjoint=None)
    two_sided = spearmanr(scores, [float(c) for c in right]).pvalue
    assert report["p_value"] == pytest.approx(two_sided, rel=1e-12)
    assert report["p_value"] != pytest.approx(spearmanr(scores, right, alternative="greater").pvalue, rel=1e-3)
    assert "two-sided" in report["p_value_test"]
