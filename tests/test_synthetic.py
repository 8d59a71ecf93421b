"""Tests of shared/synthetic.py: the offline corpus, its labelled tasks, RepE and CCS pairs."""
from collections import Counter

import pytest

from shared.data import synthetic, templates
from shared.readouts import probes


def test_synthetic_texts_deterministic_and_diverse():
    a, b = synthetic.synthetic_texts(300, seed=0), synthetic.synthetic_texts(300, seed=0)
    assert a == b
    assert a != synthetic.synthetic_texts(300, seed=1)
    assert all(isinstance(t, str) and t.strip() for t in a)
    assert len(set(a)) > 250
    joined = "\n".join(a)
    for marker in ("####", "capital of", "def ", "The ", "was"):
        assert marker in joined


@pytest.mark.parametrize("task", synthetic.TASKS)
def test_synthetic_task_deterministic_balanced_disjoint(task):
    n = 120
    train = synthetic.synthetic_task(task, n, seed=3)
    assert train == synthetic.synthetic_task(task, n, seed=3)
    assert train != synthetic.synthetic_task(task, n, seed=4)
    test = synthetic.synthetic_task(task, 60, seed=3, split="test")
    assert len(train) == n and len(test) == 60
    for it in train + test:
        assert isinstance(it["text"], str) and it["text"]
        assert isinstance(it["label"], int)
    # balanced
    key = "correct" if task == "arithmetic" else "label"
    counts = Counter(it[key] for it in train)
    n_classes = len(synthetic.TOPICS) if task == "topic" else 2
    assert len(counts) == n_classes and max(counts.values()) - min(counts.values()) <= 1
    # splits disjoint, also across seeds
    other_test = synthetic.synthetic_task(task, 60, seed=99, split="test")
    train_texts = {it["text"] for it in train}
    assert not train_texts & {it["text"] for it in test + other_test}
    assert len(train_texts) == n  # no duplicates inside a split


def test_task_fields():
    for it in synthetic.synthetic_task("topic", 30):
        assert synthetic.TOPICS[it["label"]] == it["label_name"]
    for it in synthetic.synthetic_task("truth", 30):
        assert it["statement"] == it["text"] and it["question"].endswith("?")
        assert it["answer"] == (it["true_answer"] if it["label"] else it["false_answer"])
        assert it["true_answer"] != it["false_answer"]
    for it in synthetic.synthetic_task("arithmetic", 40):
        assert it["answer"].endswith(f"#### {it['label']}")
        assert it["text"].startswith("Question: ") and it["question"] in it["text"]
        assert (it["proposed"] == it["label"]) == bool(it["correct"])
        assert it["proposed_text"].endswith(f"#### {it['proposed']}")
    for it in synthetic.synthetic_task("names", 30):
        assert (it["name"] in it["text"]) and bool(it["name"]) == bool(it["label"])


def test_truth_test_split_holds_out_facts():
    train_q = {it["question"] for it in synthetic.synthetic_task("truth", 300)}
    test_q = {it["question"] for it in synthetic.synthetic_task("truth", 100, split="test")}
    assert not train_q & test_q


def test_unknown_task_concept_split():
    with pytest.raises(ValueError, match="sentiment"):
        synthetic.synthetic_task("nope", 3)
    with pytest.raises(ValueError, match="honesty"):
        synthetic.contrast_pairs("nope", 3)
    with pytest.raises(ValueError, match="truth"):
        synthetic.ccs_pairs("topic", 3)
    with pytest.raises(ValueError, match="train"):
        synthetic.synthetic_task("truth", 3, split="validation")


@pytest.mark.parametrize("concept", synthetic.CONCEPTS)
def test_contrast_pairs(concept):
    pairs = synthetic.contrast_pairs(concept, 32, seed=1)
    assert pairs == synthetic.contrast_pairs(concept, 32, seed=1)
    assert len(pairs) == 32 and len(set(pairs)) == 32
    for pos, neg in pairs:
        assert isinstance(pos, str) and isinstance(neg, str) and pos != neg
    for c in ("honesty", "sentiment", "truth", "refusal", "sycophancy", "confidence"):
        assert c in synthetic.CONCEPTS


@pytest.mark.parametrize("task", ["sentiment", "truth"])
def test_ccs_pairs(task):
    pairs = synthetic.ccs_pairs(task, 40, seed=0)
    assert len(pairs) == 40
    assert Counter(lab for _, _, lab in pairs) == {0: 20, 1: 20}
    for yes, no, _ in pairs:
        assert yes.endswith(" Yes") and no.endswith(" No") and yes[:-4] == no[:-3]


def test_ccs_pairs_share_the_probe_wording():
    """One home for the CCS prompts: synthetic pairs and probes.ccs_prompt_pairs read the same template."""
    for task in templates.CCS_TEMPLATES:
        items = synthetic.synthetic_task(task, 12, seed=5)
        pos, neg, y = probes.ccs_prompt_pairs(items, task)
        assert list(zip(pos, neg, y.tolist())) == synthetic.ccs_pairs(task, 12, seed=5)
        assert all(p.startswith(templates.ccs_template(task).split("{text}")[0]) for p in pos)
    with pytest.raises(ValueError, match="unknown CCS task 'topic'; valid tasks: sentiment, truth"):
        templates.ccs_template("topic")
