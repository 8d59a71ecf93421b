"""Tests of shared/data.py: text sources, mixing, token packing and the labelled datasets."""
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from shared.data import mixing, packing, sources, splits, synthetic, tasks


def _byte_tokenizer(specials=("<bos>", "<eos>", "<pad>"), bos_first: str | None = "<bos>", **config):
    """A tiny byte-level tokenizer built in code (no network, no dependence on shared.models): the
    `specials` added as special tokens, a post-processor that puts `bos_first` first (as Llama 3's
    tokenizer.json does; None: adds nothing, as Qwen's and GPT-2's), then the tokenizer_config
    fields in `config` (bos/eos/pad/unk tokens, add_bos_token, ...) applied as transformers does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    t = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens(list(specials))
    if bos_first is not None:
        t.post_processor = processors.TemplateProcessing(
            single=f"{bos_first} $A", pair=f"{bos_first} $A $B", special_tokens=[(bos_first, t.token_to_id(bos_first))])
    return PreTrainedTokenizerFast(tokenizer_object=t, **config)


@pytest.fixture(scope="module")
def tok():
    """The byte-level tokenizer with <bos> <eos> <pad>; like Gemma's and Llama's, it puts <bos> first."""
    return _byte_tokenizer(bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


# ---------------------------------------------------------------- token packing


def _content(tok, texts):
    out = []
    for t in texts:
        out += tok(t, add_special_tokens=False, split_special_tokens=True)["input_ids"] + [tok.eos_token_id]
    return out


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_token_batches_packing(tok, prepend_bos):
    texts = synthetic.synthetic_texts(200, seed=0)
    T, B = 32, 4
    batches = list(packing.token_batches(texts, tok, T, B, prepend_bos=prepend_bos, chunk_docs=17))
    assert batches and all(b.shape == (B, T) and b.dtype == torch.long for b in batches)
    rows = torch.cat(batches)
    if prepend_bos:
        assert (rows[:, 0] == tok.bos_token_id).all()
        rows = rows[:, 1:]
    flat = rows.reshape(-1).tolist()
    expected = _content(tok, texts)
    assert flat == expected[: len(flat)]  # nothing lost or reordered
    n_content = T - int(prepend_bos)
    assert len(expected) - len(flat) < n_content * (B + 1)  # only the tail is dropped
    assert tok.bos_token_id not in flat  # no special tokens from the tokenizer itself


def test_token_batches_partial_and_max(tok):
    texts = synthetic.synthetic_texts(50, seed=0)
    full = list(packing.token_batches(texts, tok, 16, 7, drop_last=False))
    assert full[-1].shape[0] <= 7 and all(b.shape == (7, 16) for b in full[:-1])
    # lazy on an infinite stream
    got = list(packing.token_batches(sources.text_stream("synthetic"), tok, 16, 2, max_batches=3))
    assert len(got) == 3


def test_pack_is_what_token_batches_batches(tok):
    texts = synthetic.synthetic_texts(120, seed=2)
    rows = torch.cat(list(packing.pack(texts, tok, 24, chunk_docs=10)))
    assert rows.shape[1] == 24 and (rows[:, 0] == tok.bos_token_id).all()
    batched = torch.cat(list(packing.token_batches(texts, tok, 24, 5, drop_last=False, chunk_docs=33)))
    assert torch.equal(rows, batched)  # same rows whatever the chunking and batching
    with pytest.raises(ValueError, match="less than one batch of 1 x 64"):
        list(packing.pack(["hi"], tok, 64))
    with pytest.raises(ValueError, match="no text"):
        list(packing.pack(["", ""], tok, 64))


def test_literal_special_tokens_in_text_stay_text(tok):
    """Web text that spells "<eos>" or "<bos>" is tokenised as those characters: the only separator
    ids in the packed stream are the ones between documents, the only start ids the context starts."""
    texts = ["a page about <eos> markers", "it writes <bos> too", "plain"] * 20
    expected = _content(tok, texts)
    assert expected.count(tok.eos_token_id) == len(texts) and tok.bos_token_id not in expected
    rows = torch.cat(list(packing.token_batches(texts, tok, 32, 2, drop_last=False)))
    assert (rows[:, 0] == tok.bos_token_id).all()
    flat = rows[:, 1:].reshape(-1).tolist()
    assert flat == expected[: len(flat)]
    assert tok.decode(flat[:26]) == "a page about <eos> markers"


def test_token_batches_errors(tok):
    with pytest.raises(ValueError, match="no text"):
        list(packing.token_batches([], tok, 16, 2))
    with pytest.raises(ValueError, match="less than one batch"):
        list(packing.token_batches(["hi"], tok, 16, 2))
    with pytest.raises(ValueError, match="context_len"):
        list(packing.token_batches(["hi"], tok, 1, 2))


# ---------------------------------------------------------------- sources


def test_parse_source_variants(tmp_path):
    assert sources.parse_source("synthetic") == sources.TextSource("synthetic")
    s = sources.parse_source("hf:HuggingFaceFW/fineweb-edu")
    assert (s.kind, s.path, s.name, s.split, s.text_field) == ("hf", "HuggingFaceFW/fineweb-edu", None, "train", "text")
    s = sources.parse_source("hf:allenai/c4:en:validation:content@0.2", seed=5)
    assert (s.path, s.name, s.split, s.text_field, s.weight, s.seed) == (
        "allenai/c4", "en", "validation", "content", 0.2, 5)
    s = sources.parse_source("hf:imdb::test")
    assert (s.name, s.split) == (None, "test")
    f = tmp_path / "a.txt"
    f.write_text("hello")
    s = sources.parse_source(str(f))
    assert (s.kind, s.path) == ("local", str(f))
    assert sources.parse_source(str(tmp_path / "*.txt")).kind == "local"
    assert sources.parse_source(str(tmp_path)).kind == "local"


def test_parse_source_errors(tmp_path):
    with pytest.raises(ValueError, match="hf:<path>"):
        sources.parse_source("hf:")
    with pytest.raises(ValueError, match="hf:<path>"):
        sources.parse_source("hf:a:b:c:d:e")
    with pytest.raises(ValueError, match="did you mean 'hf:allenai/c4'"):
        sources.parse_source("allenai/c4")
    with pytest.raises(ValueError, match="no local"):
        sources.parse_source(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="kind"):
        sources.TextSource("s3", path="x")
    with pytest.raises(ValueError, match="weight"):
        sources.TextSource("synthetic", weight=0)


def test_local_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first para\nline two\n\n\n  second para \n\n")
    (tmp_path / "b.txt").write_text("whole b")
    (tmp_path / "c.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [{"body": "j1"}, {"body": ""}, {"body": "j2"}]) + "\n")
    src = sources.TextSource("local", path=str(tmp_path / "*.txt"))
    assert list(sources.text_stream(src)) == ["first para\nline two", "second para", "whole b"]
    src = sources.TextSource("local", path=str(tmp_path / "a.txt"), name="file")
    assert list(sources.text_stream(src)) == ["first para\nline two\n\n\n  second para \n\n"]
    src = sources.TextSource("local", path=str(tmp_path / "c.jsonl"), text_field="body")
    assert list(sources.text_stream(src)) == ["j1", "j2"]
    src = sources.TextSource("local", path=str(tmp_path), text_field="body")  # folder: all files
    assert len(list(sources.text_stream(src))) == 5
    with pytest.raises(ValueError, match="available: body"):
        list(sources.text_stream(sources.TextSource("local", path=str(tmp_path / "c.jsonl"))))


def test_empty_source_error(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(ValueError, match="yielded no text; check path/split/text_field"):
        list(sources.text_stream(str(tmp_path / "empty.txt")))


def test_synthetic_stream():
    a = list(itertools.islice(sources.text_stream("synthetic"), 50))
    assert a == synthetic.synthetic_texts(50)
    val = sources.TextSource("synthetic", split="validation")
    assert list(itertools.islice(sources.text_stream(val), 50)) != a


def _jsonl(path, prefix, n):
    path.write_text("\n".join(json.dumps({"text": f"{prefix}{i}"}) for i in range(n)) + "\n")
    return str(path)


def test_mix_streams_weights_and_determinism(tmp_path):
    srcs = [sources.TextSource("local", path=_jsonl(tmp_path / f"{p}.jsonl", p, 50), weight=w)
            for p, w in (("A", 0.7), ("B", 0.2), ("C", 0.1))]
    docs = list(itertools.islice(mixing.mix_streams(srcs, seed=0), 6000))
    assert docs == list(itertools.islice(mixing.mix_streams(srcs, seed=0), 6000))
    freq = Counter(d[0] for d in docs)
    for p, w in (("A", 0.7), ("B", 0.2), ("C", 0.1)):
        assert abs(freq[p] / 6000 - w) < 0.03
    # each source is read in order and cycled
    assert [d for d in docs if d[0] == "C"][:52] == [f"C{i}" for i in range(50)] + ["C0", "C1"]
    # without cycling: every doc once, then the mix ends
    once = list(mixing.mix_streams(srcs, seed=1, cycle=False))
    assert sorted(once) == sorted(f"{p}{i}" for p in "ABC" for i in range(50))
    mixed = list(itertools.islice(mixing.mix_streams(["synthetic", srcs[0]], seed=0), 100))
    assert any(d.startswith("A") and d[1:].isdigit() for d in mixed)


def test_mix_weight_errors_and_normalisation(tmp_path):
    for spec in ("synthetic@-0.2", "synthetic@0"):
        with pytest.raises(ValueError, match=r"mix weight of source 'synthetic' is -?0\.?2?.*must be > 0") as e:
            sources.parse_source(spec)
        assert "\n" not in str(e.value)
    srcs = [sources.parse_source(f"{_jsonl(tmp_path / f'{p}.jsonl', p, 5)}@{w}") for p, w in (("A", 7), ("B", 3))]
    with pytest.warns(UserWarning, match=r"^mix weights 7, 3 sum to 10, not 1: normalised to 0\.7, 0\.3$"):
        assert mixing.mix_weights(srcs) == [0.7, 0.3]
    srcs[1].weight = -1  # set after construction: still refused when mixed
    with pytest.raises(ValueError, match="is -1.*must be > 0"):
        next(mixing.mix_streams(srcs))


def test_a_mix_source_without_text_is_named(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    srcs = ["synthetic@0.9", f"{tmp_path / 'empty.txt'}@0.1"]
    with pytest.raises(ValueError, match=r"source .*empty\.txt yielded no text;.*drop it from the dataset mix"):
        list(itertools.islice(mixing.mix_streams(srcs), 500))


def test_mix_token_shares_are_measured_in_tokens(tmp_path, tok):
    """Three sources weighted 0.7/0.2/0.1 whose docs differ in length, mixed per document (no tokenizer):
    the token counts per source
    (content tokens of the packed contexts) come out near the weights times the mean doc lengths."""
    lengths = {"A": 20, "B": 40, "C": 10}
    weights = {"A": 0.7, "B": 0.2, "C": 0.1}
    srcs = [sources.TextSource("local", path=_jsonl(tmp_path / f"{p}.jsonl", p * n, 30), weight=weights[p])
            for p, n in lengths.items()]
    counts: dict = {}
    batches = list(packing.token_batches(mixing.mix_streams(srcs, seed=3), tok, context_len=64, batch_size=4,
                                      max_batches=100, counts=counts))
    names = mixing.mix_names(srcs)
    assert set(counts) == set(names)
    packed = sum(int((b != tok.bos_token_id).sum()) for b in batches)
    assert sum(counts.values()) >= packed  # every packed content token counted (pack runs ahead by < a chunk)
    doc_tokens = {p: len(tok(p * n + "0", add_special_tokens=False)["input_ids"]) + 1 for p, n in lengths.items()}
    expect = {p: weights[p] * doc_tokens[p] for p in lengths}
    total = sum(counts.values())
    for name, p in zip(names, lengths):
        assert abs(counts[name] / total - expect[p] / sum(expect.values())) < 0.03, (p, counts)
    # docs keep telling their source; without counts nothing changes
    doc = next(mixing.mix_streams(srcs))
    assert isinstance(doc, str) and doc.source in names
    assert [b.tolist() for b in packing.token_batches(mixing.mix_streams(srcs, seed=3), tok, 64, 4, max_batches=100)] == \
        [b.tolist() for b in batches]


# ---------------------------------------------------------------- HF sources (monkeypatched)


class _FakeStream:
    """Stands in for a streaming IterableDataset: iterable of dicts, with a seeded shuffle."""

    def __init__(self, rows):
        self.rows = rows
        self.shuffled = None

    def shuffle(self, seed=None, buffer_size=None):
        self.shuffled = (seed, buffer_size)
        return self

    def __iter__(self):
        return iter(self.rows)


def test_hf_source(monkeypatch):
    import datasets

    calls = []
    fake = _FakeStream([{"content": "a"}, {"content": ""}, {"content": None}, {"content": "b"}])

    def load_dataset(path, name=None, split=None, streaming=False, **kw):
        calls.append((path, name, split, streaming))
        return fake

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    src = sources.parse_source("hf:org/set:cfg:validation:content", seed=7)
    assert list(sources.text_stream(src)) == ["a", "b"]
    assert calls == [("org/set", "cfg", "validation", True)]
    assert fake.shuffled == (7, 10_000)
    # a plain list of dicts works too
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [{"text": "x"}, {"text": "y"}])
    assert list(sources.text_stream("hf:org/set")) == ["x", "y"]
    with pytest.raises(ValueError, match="available columns: text"):
        list(sources.text_stream("hf:org/set::train:body"))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [{"text": " "}])
    with pytest.raises(ValueError, match="yielded no text"):
        list(sources.text_stream("hf:org/set"))

    def boom(*a, **k):
        raise FileNotFoundError("no such dataset")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(RuntimeError, match="could not load HF dataset"):
        list(sources.text_stream("hf:org/missing"))


def test_load_task_dataset(monkeypatch):
    import datasets

    tables = {
        ("stanfordnlp/imdb", None, "train"): [{"text": f"r{i}", "label": int(i >= 30)} for i in range(40)],
        ("stanfordnlp/sst2", None, "validation"): [{"sentence": f"s{i}", "label": i % 2} for i in range(20)],
        ("openai/gsm8k", "main", "test"): [{"question": "q?", "answer": "3 + 4 = 7\n#### 1,007"}],
        ("truthfulqa/truthful_qa", "generation", "validation"): [
            {"question": f"Q{i}?", "best_answer": "good", "incorrect_answers": ["bad", "worse"]}
            for i in range(50)],
        ("canrager/amazon_reviews_mcauley_1and5", None, "test"): [
            {"text": f"a{i}", "rating": 5.0 if i % 3 else 1.0, "category": 2} for i in range(30)],
        ("LabHC/bias_in_bios", None, "train"): [
            {"hard_text": f"b{i}", "gender": int(i < 5), "profession": 21} for i in range(30)],
    }
    seen = []

    def load_dataset(path, name=None, split=None, **kw):
        seen.append((path, name, split))
        return list(tables[(path, name, split)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    imdb = tasks.load_task_dataset("imdb", 16, seed=0)
    assert Counter(it["label"] for it in imdb) == {0: 8, 1: 8}
    assert imdb == tasks.load_task_dataset("stanfordnlp/imdb", 16, seed=0)
    sst = tasks.load_task_dataset("sst2", 6, split="test")
    assert seen[-1] == ("stanfordnlp/sst2", None, "validation") and len(sst) == 6
    assert set(sst[0]) >= {"text", "label"}
    (g,) = tasks.load_task_dataset("gsm8k", 5, split="test")
    assert g["label"] == 1007 and g["question"] == "q?"
    tqa_train = tasks.load_task_dataset("truthful_qa", 20, split="train")
    tqa_test = tasks.load_task_dataset("truthful_qa", 20, split="test")
    assert Counter(it["label"] for it in tqa_train) == {0: 10, 1: 10}
    assert not {it["question"] for it in tqa_train} & {it["question"] for it in tqa_test}
    assert tasks.load_task_dataset("synthetic:sentiment", 10, seed=2) == synthetic.synthetic_task("sentiment", 10, seed=2)
    with pytest.raises(ValueError, match="imdb"):
        tasks.load_task_dataset("mnist", 3)
    amazon = tasks.load_task_dataset("amazon_sentiment", 12, split="test")  # SAEBench's 5-star vs 1-star reviews
    assert Counter(it["label"] for it in amazon) == {0: 6, 1: 6}
    assert {it["text"] for it in amazon if it["label"] == 0} <= {f"a{i}" for i in range(0, 30, 3)}
    bios = tasks.load_task_dataset("bias_in_bios_gender", 8)
    assert Counter(it["label"] for it in bios) == {0: 4, 1: 4}
    assert {it["text"] for it in bios if it["label"] == 1} <= {f"b{i}" for i in range(5)}


# ---------------------------------------------------------------- mix in tokens (issue 20, item 4)


def _docs(path, letter, n_docs, n_bytes):
    """A jsonl source of n_docs documents of exactly n_bytes bytes (n_bytes tokens of the byte tokenizer)."""
    path.write_text("".join(json.dumps({"text": f"{i:05d} " + letter * (n_bytes - 6)}) + "\n" for i in range(n_docs)))
    return str(path)


def test_mix_in_tokens_gives_each_source_its_weight_in_tokens(tmp_path, tok):
    """Sources of 100- and 1,000-token documents (separator included) at 0.5/0.5: drawn per document they
    give 9/91 % of the tokens; drawn with a tokenizer, ~50/50. The draw is seeded and replays."""
    short = sources.TextSource("local", path=_docs(tmp_path / "short.jsonl", "s", 400, 99), weight=0.5)
    long = sources.TextSource("local", path=_docs(tmp_path / "long.jsonl", "l", 400, 999), weight=0.5)
    names = mixing.mix_names([short, long])

    def shares(docs, n_tokens=600_000):
        got = {n: 0 for n in names}
        for doc in docs:
            got[doc.source] += len(tok(doc, add_special_tokens=False)["input_ids"]) + 1
            if sum(got.values()) >= n_tokens:
                return {n: c / sum(got.values()) for n, c in got.items()}

    per_doc = shares(mixing.mix_streams([short, long], seed=0))
    assert per_doc[names[0]] == pytest.approx(100 / 1100, abs=0.03)  # what a per-document draw gives
    in_tokens = shares(mixing.mix_streams([short, long], seed=0, tokenizer=tok))
    assert in_tokens[names[0]] == pytest.approx(0.5, abs=0.03), in_tokens
    a = list(itertools.islice(mixing.mix_streams([short, long], seed=4, tokenizer=tok), 3000))
    b = list(itertools.islice(mixing.mix_streams([short, long], seed=4, tokenizer=tok), 3000))
    assert a == b and [d.ids for d in a] == [d.ids for d in b]
    assert a[0].ids == tok(a[0], add_special_tokens=False)["input_ids"]  # docs bring their ids to pack


def test_trainer_stream_mixes_in_tokens(tmp_path, tok):
    """The trainer's own stream (train._token_stream) over a 100/1,000-token mix at 0.5/0.5: the tokens
    per source it reports, and those it packs, are ~50/50."""
    from shared.training.config import TrainConfig
    from shared.training.stream import _token_stream

    specs = (f"{_docs(tmp_path / 'short.jsonl', 's', 400, 99)}@0.5", f"{_docs(tmp_path / 'long.jsonl', 'l', 400, 999)}@0.5")
    cfg = TrainConfig(model_id="tiny:gpt2", layers=(1,), dataset=specs, context_len=128, model_batch_size=8,
                      total_tokens=400_000)
    counts: dict = {}
    stream = _token_stream(cfg, tok, counts)
    batches = [next(stream) for _ in range(400)]
    total = sum(counts.values())
    assert counts[str(tmp_path / "short.jsonl")] / total == pytest.approx(0.5, abs=0.03), counts
    text = tok.decode(torch.cat(batches).reshape(-1).tolist())
    assert text.count("s") / (text.count("s") + text.count("l")) == pytest.approx(0.5, abs=0.03)


# ---------------------------------------------------------------- validation by split_of (item 6)


def _marked(path, n):
    path.write_text("".join(json.dumps({"text": f"d{i:04d} " * 6}) + "\n" for i in range(n)))
    return str(path)


def test_validation_and_training_never_share_a_document(tmp_path, tok):
    """A small single-file set (no VAL_DATASET): training cycles its documents many times, validation
    reads it under another seed; every document lands on exactly one side (split_of), the held-out
    side holds about a fifth, and validation with the training set named as VAL_DATASET is the same."""
    import re

    from shared.training.config import TrainConfig
    from shared.training.stream import _token_stream, validation_batches

    spec = _marked(tmp_path / "small.jsonl", 200)
    cfg = TrainConfig(model_id="tiny:gpt2", layers=(1,), dataset=(spec,), context_len=64, model_batch_size=4,
                      total_tokens=50_000)

    def marks(batches):
        return set(re.findall(r"d\d{4}", tok.decode(torch.cat(batches).reshape(-1).tolist())))

    stream = _token_stream(cfg, tok)
    trained = marks([next(stream) for _ in range(200)])  # ~51k tokens: every training document, ~5 times
    held_out = marks(validation_batches(cfg, tok, 100_000))  # more than there is: all of the held-out part
    test_docs = {f"d{i:04d}" for i in range(200) if splits.split_of(f"d{i:04d} " * 6) == "test"}
    assert 0.1 < len(test_docs) / 200 < 0.3
    assert trained == {f"d{i:04d}" for i in range(200)} - test_docs
    assert held_out <= test_docs and len(held_out) >= len(test_docs) - 7  # less a last partial batch (256 tokens)
    assert marks(validation_batches(cfg, tok, 100_000, dataset=spec)) == held_out


def test_a_source_with_no_training_documents_is_named(tmp_path):
    path = tmp_path / "one.jsonl"
    text = next(f"held out {i}" for i in range(100) if splits.split_of(f"held out {i}") == "test")
    path.write_text(json.dumps({"text": text}) + "\n")
    src = sources.TextSource("local", path=str(path), part="train")
    with pytest.raises(ValueError, match=r"has no training documents: data\.splits\.split_of routes all 1 of its "
                                         r"documents to validation"):
        list(sources.text_stream(src))
    assert list(sources.text_stream(sources.TextSource("local", path=str(path), part="test"))) == [text]


# ---------------------------------------------------------------- context shuffle window (item 5)


def test_shuffle_window_is_a_seeded_permutation(tok):
    """Every packed context comes out once, in an order set by the seed alone; the per-source counts
    follow the contexts out of the window."""
    texts = synthetic.synthetic_texts(400, seed=1)
    plain = torch.cat(list(packing.token_batches(texts, tok, 32, 4, drop_last=False)))
    counts: dict = {}
    mixed = torch.cat(list(packing.token_batches([mixing.SourcedText(t, "syn") for t in texts], tok, 32, 4,
                                              drop_last=False, shuffle_window=50, seed=3, counts=counts)))
    again = torch.cat(list(packing.token_batches(texts, tok, 32, 4, drop_last=False, shuffle_window=50, seed=3)))
    other = torch.cat(list(packing.token_batches(texts, tok, 32, 4, drop_last=False, shuffle_window=50, seed=4)))
    assert torch.equal(mixed, again) and not torch.equal(mixed, other) and not torch.equal(mixed, plain)
    assert sorted(map(tuple, mixed.tolist())) == sorted(map(tuple, plain.tolist()))
    assert counts == {"syn": plain.shape[0] * 31}
    # contexts travel up to about a window: early ones leave late, late ones can leave early
    position = {tuple(row): i for i, row in enumerate(plain.tolist())}
    moved = [abs(position[tuple(row)] - i) for i, row in enumerate(mixed.tolist())]
    assert max(moved) > 50 and sum(moved) / len(moved) > 10


def test_trainer_forwards_read_many_documents_at_once(tmp_path, tok):
    """Documents of ~10 contexts each (reasoning traces): in stream order a forward of 8 contexts holds
    one or two documents; through the trainer's window it holds ~8 different ones."""
    import re

    from shared.training.config import TrainConfig
    from shared.training.stream import _token_stream

    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"text": f"d{i:04d} " * 100}) + "\n" for i in range(300)))

    def docs_per_forward(shuffle_tokens):
        cfg = TrainConfig(model_id="tiny:gpt2", layers=(1,), dataset=(str(path),), context_len=64, model_batch_size=8,
                          total_tokens=100_000, shuffle_tokens=shuffle_tokens)
        stream = _token_stream(cfg, tok)
        per = [len(set(re.findall(r"d\d{4}", tok.decode(next(stream).reshape(-1).tolist())))) for _ in range(40)]
        return sum(per) / len(per)

    assert docs_per_forward(0) < 2.5
    assert docs_per_forward(100_000) > 6


def test_hf_streams_read_row_groups_from_all_over_the_data_set(tmp_path, monkeypatch):
    """A real streaming Parquet dataset (datasets' own reader, local files) of two files with ten row
    groups each: with a small shuffle buffer the first documents still come from many row groups of
    both files, not from the first rows of each file."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = []
    for f in range(2):
        pq.write_table(pa.table({"text": [f"f{f} row {i}" for i in range(1000)]}), tmp_path / f"p{f}.parquet",
                       row_group_size=100)
        files.append(str(tmp_path / f"p{f}.parquet"))
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: real(
        "parquet", data_files=files, split="train", streaming=True))
    src = sources.TextSource("hf", path="org/set", shuffle_buffer=20, seed=1)
    first = list(itertools.islice(sources.text_stream(src), 40))
    groups = {(t.split()[0], int(t.split()[2]) // 100) for t in first}
    assert len(groups) >= 6 and {g[0] for g in groups} == {"f0", "f1"}, sorted(groups)
    assert first == list(itertools.islice(sources.text_stream(src), 40))  # seeded: a replay reads the same


# ---------------------------------------------------------------- context starts per model (item 7)

MODELS = Path(__file__).parent / "data" / "models"
# Whether the model's tokenizer.json post-processor puts a BOS first by itself (not in tokenizer_config;
# see tests/data/models/TOKENIZERS.md). Where tokenizer_config sets add_bos_token, transformers rebuilds
# the post-processor from it and this is overridden.
POST_PROCESSOR_BOS = {"google__gemma-2-2b": "<bos>", "meta-llama__Llama-3.1-8B": "<|begin_of_text|>",
                      "mistralai__Mistral-7B-v0.3": "<s>", "microsoft__Phi-3-mini-4k-instruct": "<s>"}
# model folder -> (context start, document separator, SAELens prepend_bos)
EXPECTED_CONTEXT = {
    "google__gemma-2-2b": ("<bos>", "<eos>", True),
    "Qwen__Qwen3.5-4B": ("<|endoftext|>", "<|endoftext|>", False),
    "Qwen__Qwen3.6-27B": ("<|endoftext|>", "<|endoftext|>", False),
    "meta-llama__Llama-3.1-8B": ("<|begin_of_text|>", "<|end_of_text|>", True),
    "mistralai__Mistral-7B-v0.3": ("<s>", "</s>", True),
    "microsoft__Phi-3-mini-4k-instruct": ("<|endoftext|>", "<|endoftext|>", False),
    "gpt2": ("<|endoftext|>", "<|endoftext|>", True),
}


def _model_tokenizer(folder: str):
    """A byte-level tokenizer with the special tokens and settings of tests/data/models/<folder>."""
    config = json.loads((MODELS / folder / "tokenizer_config.json").read_text())
    special_map = MODELS / folder / "special_tokens_map.json"
    if special_map.exists():
        config = {**json.loads(special_map.read_text()), **config}
    keys = ("bos_token", "eos_token", "pad_token", "unk_token", "add_bos_token", "add_eos_token",
            "additional_special_tokens")
    fields = {k: config[k] for k in keys if k in config}
    specials = [t["content"] for t in config.get("added_tokens_decoder", {}).values() if t["special"]]
    specials += [v for k, v in fields.items() if k.endswith("_token") and isinstance(v, str) and v not in specials]
    return _byte_tokenizer(specials=specials, bos_first=POST_PROCESSOR_BOS.get(folder), **fields)


@pytest.mark.parametrize("folder", sorted(EXPECTED_CONTEXT))
def test_each_default_model_starts_and_separates_contexts_as_it_was_trained(folder):
    """Gemma / Llama / Mistral start with the BOS their tokenizers add; Qwen (no BOS, EOS <|im_end|>
    after post-training), Phi-3 (add_bos_token=false) and GPT-2 start with the end-of-text token that
    separates their pretraining documents; a literal special token in text stays text; the export
    records prepend_bos and both tokens; training rows never include them."""
    from shared.model.capture import token_mask
    from shared.saes import export

    tok = _model_tokenizer(folder)
    start, separator, prepend_bos = EXPECTED_CONTEXT[folder]
    ctx = packing.context_tokens(tok)
    assert (ctx.start_token, ctx.separator_token, ctx.start_is_bos) == (start, separator, prepend_bos)
    assert ctx.start == tok.convert_tokens_to_ids(start) and ctx.separator == tok.convert_tokens_to_ids(separator)
    texts = [f"doc {i} quotes {start} and {separator} and <|im_end|> verbatim" for i in range(30)]
    rows = torch.cat(list(packing.token_batches(texts, tok, 48, 2, drop_last=False)))
    assert (rows[:, 0] == ctx.start).all()
    body = rows[:, 1:].reshape(-1).tolist()
    assert body.count(ctx.separator) == sum(1 for _ in re.finditer("verbatim", tok.decode(body)))
    assert not token_mask(rows, tok)[:, 0].any()
    assert not (token_mask(rows, tok)[:, 1:] & (rows[:, 1:] == ctx.separator)).any()
    info = export.ExportInfo(model_name=folder.replace("__", "/"), **ctx.export_fields())
    assert info.prepend_bos is prepend_bos
    assert info.extra == {"context_start_token": start, "document_separator": separator}
