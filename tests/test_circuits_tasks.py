"""circuits.tasks / circuits.metrics: equal-length pairs, single-token answers, metric values by hand."""
from __future__ import annotations

import re

import pytest
import torch

from shared.circuits import metrics, tasks
from shared.model.tiny import byte_tokenizer


@pytest.fixture(scope="module")
def byte_tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def word_tok():
    """A GPT-2-like word-level tokenizer (' Mary' is one token) over the tasks' own words, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    text = " ".join([*tasks.IOI_NAMES, *tasks.IOI_TEMPLATES, *tasks.IOI_PLACES, *tasks.IOI_OBJECTS,
                     *(w for pair in tasks.SVA_NOUNS for w in pair), *tasks.SVA_TEMPLATES,
                     *(v for pair in tasks.SVA_VERBS for v in pair), "0 1 2 3 4 5 6 7 8 9 + - ="])
    words = sorted(set(re.findall(r"\w+|[^\w\s]", text)))
    vocab = {"<unk>": 0}
    for w in words:
        for piece in (w, "\u0120" + w):
            vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def _decode(tok, i):
    return tok.decode([int(i)])


@pytest.mark.parametrize("name", ["ioi", "sva", "synthetic"])
def test_load_task_pairs_have_one_length_and_single_token_answers(word_tok, name):
    pairs = tasks.load_task(name, word_tok, 12, seed=3)
    assert len(pairs) == 12 and pairs.clean_ids.shape == pairs.corrupt_ids.shape
    assert pairs.answer_ids.shape == pairs.wrong_ids.shape == (12,)
    assert (pairs.answer_ids != pairs.wrong_ids).all()
    # clean and corrupt differ in at least one position, and the text round-trips through the ids
    assert ((pairs.clean_ids != pairs.corrupt_ids).any(1)).all()
    for i in range(12):
        assert word_tok(pairs.clean_text[i]).input_ids == pairs.clean_ids[i].tolist()
    # the same seed gives the same pairs, another seed others
    again = tasks.load_task(name, word_tok, 12, seed=3)
    assert again.clean_text == pairs.clean_text
    assert tasks.load_task(name, word_tok, 12, seed=4).clean_text != pairs.clean_text


@pytest.mark.parametrize("name", ["ioi", "sva", "synthetic"])
def test_find_and_score_splits_share_no_prompt_and_are_deterministic(word_tok, name):
    """Circuits are found on one part and scored on another (issue 21.4): no clean or corrupt prompt is in
    both (synthetic's 40 pairs repeat 13 clean prompts, and 10 corrupt prompts are other pairs' clean ones),
    every pair is on one side, and the same pairs and seed give the same split."""
    pairs = tasks.load_task(name, word_tok, 40, seed=1)
    find, score = tasks.split_pairs(pairs, seed=1)
    texts = lambda p: set(p.clean_text) | set(p.corrupt_text)  # noqa: E731
    assert not texts(find) & texts(score)
    assert len(find) + len(score) == 40 and 10 <= len(score) <= 30
    assert sorted(find.clean_text + score.clean_text) == sorted(pairs.clean_text)
    again = tasks.split_pairs(tasks.load_task(name, word_tok, 40, seed=1), seed=1)
    assert (again[0].clean_text, again[1].clean_text) == (find.clean_text, score.clean_text)
    assert torch.equal(again[1].clean_ids, score.clean_ids) and torch.equal(again[1].answer_ids, score.answer_ids)
    assert {tuple(tasks.split_pairs(pairs, seed=s)[1].clean_text) for s in range(4)} != {tuple(score.clean_text)}


def test_split_keeps_pairs_that_share_a_prompt_together(byte_tok):
    clean = ["1 + 2 = ", "1 + 3 = ", "1 + 2 = ", "5 - 1 = ", "6 - 1 = ", "7 - 1 = "]
    corrupt = ["1 + 3 = ", "1 + 4 = ", "1 + 5 = ", "5 - 2 = ", "6 - 2 = ", "7 - 2 = "]
    pairs = tasks.pairs_from_text(byte_tok, clean, corrupt, ["3", "4", "3", "4", "5", "6"],
                                  ["4", "5", "6", "3", "4", "5"])
    for seed in range(6):
        find, score = tasks.split_pairs(pairs, seed=seed)
        linked = {"1 + 2 = ", "1 + 3 = "}  # pairs 0, 1, 2: a duplicate, and pair 0's corrupt is pair 1's clean
        assert linked <= set(find.clean_text) or linked <= set(score.clean_text)
        assert not (set(find.clean_text) | set(find.corrupt_text)) & (set(score.clean_text) | set(score.corrupt_text))
    with pytest.raises(ValueError, match="2 pairs with different prompts"):
        tasks.split_pairs(pairs.subset([0, 2]))  # one prompt twice: nothing disjoint to score on
    with pytest.raises(ValueError, match="score_share must be between 0 and 1"):
        tasks.split_pairs(pairs, score_share=1.0)


def test_ioi_answer_is_the_name_not_repeated_and_corrupt_flips_it(word_tok):
    pairs = tasks.load_task("ioi", word_tok, 10)
    for i in range(10):
        io, s = _decode(word_tok, pairs.answer_ids[i]).strip(), _decode(word_tok, pairs.wrong_ids[i]).strip()
        count = lambda name, text: len(re.findall(rf"\b{name}\b", text))  # noqa: E731
        assert count(io, pairs.clean_text[i]) == 1 and count(s, pairs.clean_text[i]) == 2
        assert count(s, pairs.corrupt_text[i]) == 1 and count(io, pairs.corrupt_text[i]) == 2


def test_synthetic_works_with_the_byte_tokenizer_and_answers_are_right(byte_tok):
    pairs = tasks.load_task("synthetic", byte_tok, 16)
    assert pairs.clean_ids[:, 0].eq(byte_tok.bos_token_id).all()  # BOS kept when the tokenizer adds one
    for i in range(16):
        c, k = pairs.clean_text[i], pairs.corrupt_text[i]
        assert str(eval(c.rstrip(" ="))) == _decode(byte_tok, pairs.answer_ids[i]).strip()
        assert str(eval(k.rstrip(" ="))) == _decode(byte_tok, pairs.wrong_ids[i]).strip()


def test_subset_and_to(byte_tok):
    pairs = tasks.load_task("synthetic", byte_tok, 6)
    sub = pairs.subset([4, 1])
    assert sub.clean_text == [pairs.clean_text[4], pairs.clean_text[1]]
    assert torch.equal(sub.answer_ids, pairs.answer_ids[[4, 1]])
    assert len(pairs.subset(slice(0, 3))) == 3 and len(pairs.subset(2)) == 1
    assert len(pairs.subset(torch.tensor([True, False] * 3))) == 3
    assert pairs.to("cpu").clean_text == pairs.clean_text


def test_bad_input_one_line_errors(byte_tok, word_tok):
    with pytest.raises(ValueError, match="same token length"):
        tasks.pairs_from_text(byte_tok, ["1 + 2 = "], ["11 + 2 = "], ["3"], ["3"])
    with pytest.raises(ValueError, match="pair 1 is"):
        tasks.pairs_from_text(byte_tok, ["1 + 2 = ", "1 + 22 = "], ["1 + 3 = ", "1 + 23 = "], ["3", "2"], ["4", "3"])
    with pytest.raises(ValueError, match="answer ' 3' of pair 0 is 2 tokens"):
        tasks.pairs_from_text(byte_tok, ["1 + 2 ="], ["1 + 3 ="], [" 3"], [" 4"])
    with pytest.raises(ValueError, match="one entry per pair"):
        tasks.pairs_from_text(byte_tok, ["a", "b"], ["c"], ["x"], ["y"])
    with pytest.raises(ValueError, match="unknown task 'nope'.*ioi, sva, synthetic"):
        tasks.load_task("nope", byte_tok, 4)
    with pytest.raises(ValueError, match="single-token names.*synthetic"):
        tasks.load_task("ioi", byte_tok, 4)
    with pytest.raises(ValueError, match="n must be a positive int"):
        tasks.load_task("synthetic", byte_tok, 0)
    with pytest.raises(ValueError, match="unknown metric 'acc'.*logit_diff, prob, kl"):
        metrics.get_metric("acc")
    for err in (ValueError,):
        with pytest.raises(err):
            metrics.get_metric("kl")(torch.zeros(1, 5), tasks.load_task("synthetic", byte_tok, 1))


def test_metrics_by_hand(byte_tok):
    pairs = tasks.pairs_from_text(byte_tok, ["1 + 2 = ", "4 - 1 = "], ["1 + 3 = ", "4 - 2 = "], ["3", "3"], ["4", "2"])
    v = len(byte_tok)
    logits = torch.randn(2, pairs.clean_ids.shape[1], v)
    last = logits[:, -1]
    a, w = pairs.answer_ids, pairs.wrong_ids
    ld = metrics.get_metric("logit_diff")(logits, pairs)
    assert torch.allclose(ld, last[[0, 1], a] - last[[0, 1], w])
    assert torch.allclose(metrics.logit_diff(last, pairs), ld)  # [n, V] works as the last position
    p = metrics.get_metric("prob")(logits, pairs)
    assert torch.allclose(p, last.softmax(-1)[[0, 1], a])
    kl = metrics.get_metric("kl")
    assert torch.allclose(kl(logits, pairs, clean_logits=logits), torch.zeros(2), atol=1e-6)
    other = torch.randn_like(logits)
    ref = torch.nn.functional.kl_div(other[:, -1].log_softmax(-1), last.log_softmax(-1), log_target=True,
                                     reduction="none").sum(-1)
    assert torch.allclose(kl(other, pairs, clean_logits=logits), ref, atol=1e-5)
    assert (kl(other, pairs, clean_logits=logits) > 0).all()
    with pytest.raises(ValueError, match="logits hold 3 prompts but pairs has 2"):
        metrics.logit_diff(torch.zeros(3, v), pairs)


def test_notebook_rules_name_the_same_tasks_metrics_and_ablations():
    from shared.circuits import patching
    from shared.notebook import parameters
    from shared.notebook.rules import circuits

    for name, options in (("TASK", tasks.TASKS), ("METRIC", metrics.GRADIENT_METRICS),
                          ("COUNTERFACTUAL", patching.ABLATIONS)):
        for value in options:
            assert circuits.RULES[name](value, None) == value
        with pytest.raises(ValueError):
            circuits.RULES[name]("nope", None)
    assert set(metrics.METRICS) - set(metrics.GRADIENT_METRICS) == {"kl"}
    with pytest.raises(parameters.ParameterError, match=r"^METRIC = 'kl': has zero gradient.*use 'logit_diff' or 'prob'$"):
        parameters.check_parameters({"METRIC": "kl"})  # notebooks 14 and 15 attribute with METRIC


def test_task_metrics_and_describe():
    """task_metrics is the metric of the clean and the corrupt run as they are (kl: 0 on the clean run);
    describe names the pairs and shows one with its answers."""
    from shared.circuits import metrics
    from shared.model.loading import load_model

    model, tok = load_model("tiny:gpt2")
    pairs = tasks.load_task("synthetic", tok, 4)
    clean, corrupt, logits = metrics.task_metrics(model, pairs, "logit_diff")
    with torch.no_grad():
        want = metrics.logit_diff(model(pairs.corrupt_ids).logits, pairs)
    assert corrupt == pytest.approx(float(want.mean()), rel=1e-5)
    assert clean == pytest.approx(float(metrics.logit_diff(logits, pairs).mean()), rel=1e-5)
    assert metrics.task_metrics(model, pairs, "kl")[0] == pytest.approx(0.0, abs=1e-6)
    text = pairs.describe(tok)
    assert text.startswith(f"4 synthetic pairs of {pairs.clean_ids.shape[1]} tokens") and "corrupt:" in text
