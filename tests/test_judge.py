"""shared.judge with the real anthropic and openai clients against a scripted API on 127.0.0.1."""
from __future__ import annotations

import json
import re

import pytest

from shared.features import judge
from shared.runtime import Secret
from tests.fake_llm import FakeLLM

KEY = "sk-test-SECRET-0123456789abcdef"
LABEL = '{"name": "banana mentions", "desc": "Fires on the word banana.", "confidence": 0.9}'


def is_fuzz(prompt: str) -> bool:
    return '{"correct": [<indices>]}' in prompt


def fuzz_answer(prompt: str, hot: str) -> str:
    """The right fuzzing answer for a latent firing on `hot`: the texts whose marked tokens are all `hot`."""
    block = prompt.split("other tokens of the text.\n\n", 1)[1].rsplit("\n\nIn which texts", 1)[0]
    items = [re.match(r"(\d+)\. (.*)", item, flags=re.S).groups() for item in re.split(r"\n(?=\d+\. )", block)]
    return json.dumps({"correct": [int(i) for i, text in items
                                   if {m.strip() for m in re.findall(r"<<(.*?)>>", text, flags=re.S)} == {hot}]})


def responder(prompt: str) -> str:
    """A judge that knows the planted concept: explains it, picks the texts that hold it, and accepts the
    marks that fall on it."""
    if "What does this feature detect" in prompt:
        return LABEL
    if is_fuzz(prompt):
        return fuzz_answer(prompt, "banana")
    items = re.findall(r"^(\d+)\. (.*)$", prompt, flags=re.M)
    return json.dumps({"activating": [int(i) for i, text in items if "banana" in text]})


def _ex(words, hot=None):
    toks = [" " + w for w in words]
    return {"text": "".join(toks), "tokens": toks, "acts": [3.0 if w == hot else 0.0 for w in words]}


def features(n=2):
    out = []
    for fid in range(n):
        top = [_ex(f"i ate a banana at {k} today f{fid}".split(), "banana") for k in range(8)]
        held = [_ex(f"one banana for lunch at {k} f{fid}".split(), "banana") for k in range(4)]
        silent = [_ex(f"the train left at {k} sharp".split()) for k in range(4)]
        out.append(judge.FeatureEvidence(fid, top, held, silent, fire_rate=0.01, mean_when_fired=3.0))
    return out


def make_backend(kind, api, timeout=5.0, model=None):
    if kind == "anthropic":
        return judge.AnthropicBackend(model or "claude-haiku-4-5", Secret(KEY),
                                      base_url=api.url, timeout=timeout)
    return judge.OpenAIBackend(model or "gpt-4.1-mini", Secret(KEY),
                               base_url=api.url + "/v1", timeout=timeout)


PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}


def _no_key_anywhere(tmp_path, *texts):
    for t in texts:
        assert KEY not in t
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert KEY not in p.read_text(), p


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_explain_then_score_and_cache(kind, tmp_path, capsys):
    lines = []
    with FakeLLM(responder) as api:
        j = judge.Judge(make_backend(kind, api), cache_dir=tmp_path / "cache", max_workers=2,
                        base_delay=0.01, log=lines.append)
        cat = j.label_features(features(2))
        assert len(api.requests) == 6 == j.requests  # explain + detect + fuzz per feature
        assert {r["path"] for r in api.requests} == {PATHS[kind]}
        sent = api.requests[0]["headers"]
        assert KEY in (sent.get("x-api-key", "") + sent.get("authorization", ""))  # the key is sent...
        assert cat["judge_backend"] == kind and cat["judge_model"] == j.backend.model
        f0 = cat["features"][0]
        assert set(f0) == {"id", "rank", "name", "desc", "confidence", "fire_rate", "mean_when_fired",
                           "score", "auroc", "held_out", "fuzzing_score", "fuzzing_items", "top_activating_examples"}
        assert (f0["name"], f0["confidence"], f0["score"], f0["auroc"]) == ("banana mentions", 0.9, 1.0, 1.0)
        assert f0["held_out"] == {"activating": 4, "non_activating": 4}
        assert f0["fuzzing_score"] == 1.0 and f0["fuzzing_items"] == {"correct": 2, "wrong": 2}
        assert cat["fuzzing_metric"] == judge.FUZZING_METRIC
        assert [f["rank"] for f in cat["features"]] == [1, 2]
        assert f0["top_activating_examples"][0]["activation"] == 3.0
        assert "~" in lines[0] and "6 requests to make (0 cached)" in lines[0] and "$" in lines[0]

        j2 = judge.Judge(make_backend(kind, api), cache_dir=tmp_path / "cache", log=lines.append)
        assert j2.label_features(features(2)) == cat
        assert len(api.requests) == 6 and j2.requests == 0  # the re-run made no request, fuzzing's included
        assert "0 requests to make (6 cached)" in lines[1]
    (tmp_path / "feature_catalog.json").write_text(json.dumps(cat, indent=1))  # the catalog as 04 writes it
    _no_key_anywhere(tmp_path, *lines, capsys.readouterr().out, repr(j.backend))  # ...never kept


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
@pytest.mark.parametrize("step", ["429", "500", "hang"])
def test_retries_then_success(kind, step, tmp_path):
    with FakeLLM(responder, script=[step], hang_s=3.0) as api:
        j = judge.Judge(make_backend(kind, api, timeout=0.5), cache_dir=tmp_path, base_delay=0.01,
                        log=lambda s: None)
        cat = j.label_features(features(1))
        assert len(api.requests) == 4  # the failed try, its retry, the detection, the fuzzing
        assert cat["features"][0]["score"] == 1.0


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_malformed_json_repaired_or_reasked(kind, tmp_path):
    broken = "```json\n{'name': 'banana mentions', 'desc': 'fruit', 'confidence': 0.8,}\n```"
    with FakeLLM(responder, script=[("text", broken)]) as api:
        j = judge.Judge(make_backend(kind, api), cache_dir=tmp_path / "a", log=lambda s: None)
        f = j.label_features(features(1))["features"][0]
        assert len(api.requests) == 3 and (f["name"], f["confidence"]) == ("banana mentions", 0.8)
    with FakeLLM(responder, script=[("text", "I think it is about fruit.")]) as api:
        j = judge.Judge(make_backend(kind, api), cache_dir=tmp_path / "b", log=lambda s: None)
        f = j.label_features(features(1))["features"][0]
        assert len(api.requests) == 4  # one re-ask
        assert api.requests[1]["body"]["messages"][0]["content"].endswith(judge.REASK)
        assert f["name"] == "banana mentions" and f["score"] == 1.0


def test_retries_are_bounded_and_failures_not_cached(tmp_path):
    with FakeLLM(responder, script=["500"] * 3) as api:
        j = judge.Judge(make_backend("openai", api), cache_dir=tmp_path, max_attempts=3,
                        base_delay=0.01, log=lambda s: None)
        f = j.label_features(features(1))["features"][0]
        assert len(api.requests) == 3
        assert f["name"] == "" and f["desc"].startswith("judge failed") and f["score"] is None
        assert not list(tmp_path.glob("*.json"))
        f = judge.Judge(make_backend("openai", api), cache_dir=tmp_path,
                        log=lambda s: None).label_features(features(1))["features"][0]
        assert f["score"] == 1.0 and len(api.requests) == 6


@pytest.mark.parametrize("fail, expect", [(2, "FAILED on every feature (2 of 2"), (1, "failed on 1 of 2 features"),
                                          (0, "labelled all 2 features")])
def test_failures_are_counted_and_said_in_one_line(fail, expect, tmp_path):
    """A judge that answers 500 loses the labels but not the run; the catalog counts what failed and the
    summary says so, with the first reason."""
    with FakeLLM(responder, script=["500"] * fail) as api:
        j = judge.Judge(make_backend("anthropic", api), cache_dir=tmp_path, max_workers=1, max_attempts=1,
                        log=lambda s: None)
        cat = j.label_features(features(2))
    assert cat["judge_failed"] == fail and sum(f["name"] == "" for f in cat["features"]) == fail
    assert cat["judge_error"].startswith("InternalServerError") if fail else cat["judge_error"] == ""
    line = judge.summary(cat)
    assert expect in line and "\n" not in line and KEY not in line
    if fail < 2:  # the labelled features' mean scores (the failed ones have none)
        assert f"mean detection 1.00 over {2 - fail}, mean fuzzing 1.00 over {2 - fail}" in line
    else:
        assert "mean" not in line
    assert "failed" not in {k for f in cat["features"] for k in f}  # the marker stays out of the catalog


def test_sdk_is_installed_only_for_the_backend_a_key_picks(monkeypatch):
    """The judge's SDK is not a notebook requirement: it is made importable when its backend is chosen."""
    asked = []
    monkeypatch.setattr(judge, "require_package", lambda spec, why: asked.append(spec))
    for name in judge.KEY_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    judge.pick_backend()
    judge.pick_backend(prefer="anthropic")  # asked for, but no key: the offline labeller, no install
    assert asked == []
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    judge.pick_backend()
    assert asked == ["openai>=1.50"]


def test_non_retryable_error_is_not_retried(tmp_path):
    with FakeLLM(responder) as api:
        b = judge.AnthropicBackend("claude-haiku-4-5", KEY, base_url=api.url + "/nowhere")
        f = judge.Judge(b, log=lambda s: None).label_features(features(1))["features"][0]
        assert len(api.requests) == 1 and "NotFound" in f["desc"]


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_refused_key_stops_the_run_in_one_line(kind, tmp_path):
    with FakeLLM(responder, script=["401"]) as api:
        j = judge.Judge(make_backend(kind, api), cache_dir=tmp_path, max_workers=1, log=lambda s: None)
        with pytest.raises(RuntimeError, match=f"refused the API key.*{judge.KEY_NAMES[kind]}") as err:
            j.label_features(features(1))
        assert len(api.requests) == 1 and KEY not in str(err.value)


def test_pick_backend_and_offline_labeller(monkeypatch, tmp_path):
    for name in judge.KEY_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    b = judge.pick_backend()
    assert isinstance(b, judge.OfflineLabeller)
    lines = []
    cat = judge.label_features(features(2), b, cache_dir=tmp_path, log=lines.append)
    assert cat["judge_backend"] == "offline" and "offline" in lines[0]
    f0 = cat["features"][0]
    assert "Offline heuristic" in f0["desc"] and "banana" in f0["name"] and f0["score"] == 1.0
    assert f0["fuzzing_score"] == 1.0  # the marks on 'banana' are its tokens, the random ones are not
    assert cat == judge.label_features(features(2), b, log=lines.append)  # deterministic

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert isinstance(judge.pick_backend(), judge.OpenAIBackend)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    b = judge.pick_backend(anthropic_model="claude-opus-4-5")
    assert isinstance(b, judge.AnthropicBackend) and b.model == "claude-opus-4-5"
    assert isinstance(judge.pick_backend(prefer="openai"), judge.OpenAIBackend)
    assert KEY not in repr(b)
    with pytest.raises(ValueError, match="prefer"):
        judge.pick_backend(prefer="gemini")


def test_parse_json_repairs():
    assert judge.parse_json('Sure! ```json\n{"a": [1, 2,],}\n``` hope that helps') == {"a": [1, 2]}
    assert judge.parse_json("{'name': 'x', 'ok': True}") == {"name": "x", "ok": True}
    assert judge.parse_json("indices: [0, 3]") == [0, 3]
    with pytest.raises(ValueError):
        judge.parse_json("no json here")


def test_cost_estimate_and_bad_input(tmp_path):
    with FakeLLM(responder) as api:
        j = judge.Judge(make_backend("openai", api, model="my-finetune"), cache_dir=tmp_path)
        assert "price unknown" in j.estimate_cost(features(1))
        assert "~$" in judge.Judge(make_backend("openai", api)).estimate_cost(features(1))
    with pytest.raises(ValueError, match="top_examples"):
        judge.FeatureEvidence.coerce({"id": 1})
    with pytest.raises(ValueError, match="random_examples are not read"):
        judge.FeatureEvidence.coerce({"id": 1, "top_examples": [], "random_examples": []})
    with pytest.raises(ValueError, match="max_workers"):
        judge.Judge(judge.OfflineLabeller(), max_workers=0)


# ------------------------------------------------------------------------- the detection protocol


def test_split_examples_dedupes_by_text_and_refuses_unmeasured_negatives():
    top = [_ex("a banana here".split(), "banana")] * 3 + [_ex("two banana there".split(), "banana")]
    held = [_ex("a banana here".split(), "banana"), _ex("new banana now".split(), "banana"),
            _ex("new banana now".split(), "banana")]
    silent = [_ex("the train left".split()), _ex("the train left".split()), _ex("new banana now".split())]
    f = judge.FeatureEvidence(0, top, held, silent)
    explain, pos, neg, items = judge.split_examples(f, 10, 10)
    texts = [judge._text(e) for e in explain + pos + neg]
    assert len(texts) == len(set(texts)) == 4  # no text twice, none both explained and scored
    assert [judge._text(e) for e in pos] == [" new banana now"] and [judge._text(e) for e in neg] == [" the train left"]
    assert sorted((t, a) for _, t, a in items) == [(False, 0.0), (True, 3.0)]
    with pytest.raises(ValueError, match="measured acts"):
        judge.split_examples(judge.FeatureEvidence(0, top, held, [{"text": "unchecked"}]), 10, 10)
    with pytest.raises(ValueError, match="measured acts"):
        judge.split_examples(judge.FeatureEvidence(0, top, held, [_ex("a banana".split(), "banana")]), 10, 10)


def test_auroc_is_the_activation_separating_the_judges_calls():
    items = [("a", True, 3.0), ("b", True, 1.0), ("c", True, 0.2), ("d", False, 0.0), ("e", False, 0.0)]
    exact = [True, True, True, False, False]
    assert judge.detection_scores(items, exact) == {"score": 1.0, "auroc": 1.0}
    missed_weakest = [True, True, False, False, False]  # its calls still follow the activation
    assert judge.detection_scores(items, missed_weakest) == {"score": pytest.approx(5 / 6), "auroc": 1.0}
    called_a_silent_one = [True, True, True, True, False]  # d (0) called, e (0) not: a tie
    assert judge.detection_scores(items, called_a_silent_one)["auroc"] == pytest.approx((3 + 0.5) / 4)
    assert judge.detection_scores(items, [True] * 5)["auroc"] is None  # no contrast among its calls


TILDE_LABEL = '{"name": "tilde", "desc": "Fires on the ~ character.", "confidence": 0.9}'


def tilde_judge(prompt: str) -> str:
    """A judge that knows the planted latent: explains '~', then picks exactly the texts holding it."""
    if "What does this feature detect" in prompt:
        return TILDE_LABEL
    if is_fuzz(prompt):
        return fuzz_answer(prompt, "~")
    block = prompt.split("the others do not.\n\n", 1)[1].rsplit("\n\nWhich texts activate it?", 1)[0]
    items = [re.match(r"(\d+)\. (.*)", item, flags=re.S).groups() for item in re.split(r"\n(?=\d+\. )", block)]
    return json.dumps({"activating": [int(i) for i, text in items if "~" in text]})


def _dense_tildes(texts, seed):
    """Each text with a '~' word about every 8 characters: ~10 % of the byte-level tokens are '~'."""
    import random

    from planted_sae import TOKEN

    rng, out = random.Random(seed), []
    for t in texts:
        words = t.split(" ")
        for _ in range(max(1, len(t) // 8)):
            words.insert(rng.randrange(len(words) + 1), TOKEN)
        out.append(" ".join(words))
    return out


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
def test_a_right_judge_of_a_frequent_latent_is_scored_right(kind, tiny_model, tmp_path):
    """A planted latent firing on '~', ~10 % of tokens: most 17-token windows hold one, so windows drawn at
    random and labelled "not activating" unchecked would mark a judge that knows the latent wrong. With
    measured-silent negatives and positives across quantiles, that judge scores 1.0; no special token
    (BOS) is shown in any context of either prompt."""
    from planted_sae import LAYER, planted_sae

    from shared.data import synthetic
    from shared.data.packing import token_batches
    from shared.features import stats

    model, tok = tiny_model("llama", device="cpu")
    sae = planted_sae(model, tok)
    seen = list(token_batches(iter(_dense_tildes(synthetic.synthetic_texts(60, seed=41), 1)), tok, 64, 8))
    feature_stats = stats.collect(model, tok, sae, LAYER, seen, 10**9)
    assert 0.07 < float(feature_stats.fire_rate[0]) < 0.13  # a frequent latent (rank_features admits up to 10 %)
    held = token_batches(iter(_dense_tildes(synthetic.synthetic_texts(80, seed=42), 2)), tok, 64, 8)
    contexts = stats.detection_contexts(model, tok, sae, LAYER, held, [0], 20_000)
    share = float((contexts.acts[:, :, 0].amax(1) > 0).float().mean())
    assert share > 0.6  # most windows activate it: unchecked "random = silent" would be wrong most of the time
    (ev,) = stats.judge_evidence(feature_stats, [(0, 1.0)], tok, contexts, seed=3)
    assert [e["quantile"] for e in ev["activating_examples"]] == list(range(10))  # one per activation decile
    peaks = [max(e["acts"]) for e in ev["activating_examples"]]
    assert peaks == sorted(peaks, reverse=True) and peaks[-1] < 0.9 * peaks[0]  # strong to weak, not the top only
    with FakeLLM(tilde_judge) as api:
        cat = judge.Judge(make_backend(kind, api), cache_dir=tmp_path, log=lambda s: None).label_features([ev])
        prompts = [r["body"]["messages"][0]["content"] for r in api.requests]
    f = cat["features"][0]
    assert (f["name"], f["score"], f["auroc"], f["fuzzing_score"]) == ("tilde", 1.0, 1.0, 1.0)
    assert f["held_out"] == {"activating": 10, "non_activating": 10}
    assert f["fuzzing_items"] == {"correct": 5, "wrong": 5}
    specials = [t for t in (tok.bos_token, tok.eos_token, tok.pad_token) if t]
    assert len(prompts) == 3 and not [t for t in specials for p in prompts if t in p]


def test_a_judge_answering_at_random_scores_chance():
    """A judge that picks each detection context, and accepts each fuzzing item's marks, with probability
    1/2 whatever it reads: its mean detection balanced accuracy and AUROC over 40 latents sit at 0.5 (sd
    ~0.015 each), its mean fuzzing balanced accuracy too (sd ~0.025: 5 + 5 items a latent), and a judge
    that inverts a right answer scores 0 on both, so the scores say how well the label picks the contexts
    and the tokens, not how the prompts are laid out."""
    import random

    rng = random.Random(0)

    def random_judge(prompt: str) -> str:
        if "What does this feature detect" in prompt:
            return LABEL
        items = re.findall(r"^(\d+)\. ", prompt, flags=re.M)
        return json.dumps({"correct" if is_fuzz(prompt) else "activating":
                           [int(i) for i in items if rng.random() < 0.5]})

    def inverted_judge(prompt: str) -> str:
        if "What does this feature detect" in prompt:
            return LABEL
        items = re.findall(r"^(\d+)\. (.*)$", prompt, flags=re.M)
        if is_fuzz(prompt):
            right = set(json.loads(fuzz_answer(prompt, "banana"))["correct"])
            return json.dumps({"correct": [int(i) for i, _ in items if int(i) not in right]})
        return json.dumps({"activating": [int(i) for i, text in items if "banana" not in text]})

    feats = []
    for fid in range(40):
        top = [_ex(f"i ate a banana at {k} today f{fid}".split(), "banana") for k in range(8)]
        held = [_ex(f"one banana for lunch at {k} f{fid}".split(), "banana") for k in range(10)]
        silent = [_ex(f"the train left at {k} sharp f{fid}".split()) for k in range(10)]
        feats.append(judge.FeatureEvidence(fid, top, held, silent))
    with FakeLLM(random_judge) as api:
        cat = judge.Judge(make_backend("openai", api), max_workers=1, log=lambda _: None).label_features(feats)
    scores = [f["score"] for f in cat["features"]]
    aurocs = [f["auroc"] for f in cat["features"] if f["auroc"] is not None]
    assert abs(sum(scores) / len(scores) - 0.5) < 0.05 and abs(sum(aurocs) / len(aurocs) - 0.5) < 0.05
    assert min(scores) < 0.5 < max(scores)
    fuzzing = [f["fuzzing_score"] for f in cat["features"]]
    assert abs(sum(fuzzing) / len(fuzzing) - 0.5) < 0.06 and min(fuzzing) < 0.5 < max(fuzzing)
    assert {f["fuzzing_items"]["correct"] for f in cat["features"]} == {5}
    with FakeLLM(inverted_judge) as api:
        cat = judge.Judge(make_backend("openai", api), log=lambda _: None).label_features(feats[:3])
    assert [(f["score"], f["fuzzing_score"]) for f in cat["features"]] == [(0.0, 0.0)] * 3


# --------------------------------------------------------------------------- the fuzzing protocol


def _planted(k):
    """A 10-token context, peak 2.0 at 'c': true tokens (>= 0.3 x 2.0 = 0.6) are c (2.0), e (1.0), g (0.6);
    b (0.5) and i (0.59) fire below the threshold, the rest are 0."""
    toks = [f" {w}{k}" for w in "abcdefghij"]
    return {"text": "".join(toks), "tokens": toks, "acts": [0, 0.5, 2.0, 0, 1.0, 0, 0.6, 0, 0.59, 0]}


def test_fuzz_items_mark_the_true_tokens_or_as_many_others():
    held = [_planted(k) for k in range(9)] + [  # and one context whose every token fires: never marked wrong
        {"text": " x y", "tokens": [" x", " y"], "acts": [1.0, 0.9]}]
    items = judge.fuzz_items(held, fid=7, seed=1)
    assert items == judge.fuzz_items(held, fid=7, seed=1)  # seeded: prompts and cache keys repeat
    assert items != judge.fuzz_items(held, fid=8, seed=1)
    assert len(items) == 10 and sum(not t for _, t, _ in items) == 5  # half the contexts marked wrong
    true = (2, 4, 6)
    for text, correct, marks in items:
        k = re.search(r"j(\d)", text)
        toks = held[int(k.group(1)) if k else -1]["tokens"]
        assert text == "".join(f"<<{t}>>" if i in marks else t for i, t in enumerate(toks))
        if toks == held[-1]["tokens"]:
            assert correct and marks == (0, 1)
        elif correct:
            assert marks == true  # exactly the above-threshold tokens
        else:
            assert len(marks) == len(true) and not set(marks) & set(true)  # as many, none of them true
    wrong_marks = {m for _, t, marks in items if not t for m in marks}
    assert len(wrong_marks) > 3  # drawn at random, not always the same tokens
    assert judge.fuzz_items(held[:1], fid=0) == [(judge._highlight(held[0]["tokens"], true), True, true)]


def test_fuzz_prompt_shows_the_items_and_the_offline_labeller_answers_from_the_marks():
    held = [_planted(k) for k in range(6)]
    items = judge.fuzz_items(held, fid=0)
    prompt = judge.fuzz_prompt("letter c", "fires on c", items)
    assert all(f"{i}. {text}" in prompt.splitlines() for i, (text, *_) in enumerate(items))
    explain = [{**_planted(k), "text": f"e{k}"} for k in range(3)]  # its peak token is ' c<k>': ' c0', ' c1', ' c2'
    lab = judge.OfflineLabeller().label(explain, [], items)
    assert lab["score"] is None and lab["fuzzing_score"] == 0.5  # its label tokens (c0..c2) miss e, g: 'wrong' always
    assert judge.fuzzing_score(items, [t for _, t, _ in items]) == 1.0
    assert judge.fuzzing_score(items, [not t for _, t, _ in items]) == 0.0
