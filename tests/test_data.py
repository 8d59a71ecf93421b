"""Tests of shared/data.py: text sources, mixing, token packing and the labelled datasets."""
import itertools
import json
from collections import Counter

import pytest
import torch

from shared import data, synthetic


@pytest.fixture(scope="module")
def tok():
    """A tiny byte-level tokenizer built in code (no network, no dependence on shared.models)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    t = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens(["<bos>", "<eos>", "<pad>"])
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")


# ---------------------------------------------------------------- token packing


def _content(tok, texts):
    out = []
    for t in texts:
        out += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return out


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_token_batches_packing(tok, prepend_bos):
    texts = synthetic.synthetic_texts(200, seed=0)
    T, B = 32, 4
    batches = list(data.token_batches(texts, tok, T, B, prepend_bos=prepend_bos, chunk_docs=17))
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
    full = list(data.token_batches(texts, tok, 16, 7, drop_last=False))
    assert full[-1].shape[0] <= 7 and all(b.shape == (7, 16) for b in full[:-1])
    # lazy on an infinite stream
    got = list(data.token_batches(data.text_stream("synthetic"), tok, 16, 2, max_batches=3))
    assert len(got) == 3


def test_pack_is_what_token_batches_batches(tok):
    texts = synthetic.synthetic_texts(120, seed=2)
    rows = torch.cat(list(data.pack(texts, tok, 24, chunk_docs=10)))
    assert rows.shape[1] == 24 and (rows[:, 0] == tok.bos_token_id).all()
    batched = torch.cat(list(data.token_batches(texts, tok, 24, 5, drop_last=False, chunk_docs=33)))
    assert torch.equal(rows, batched)  # same rows whatever the chunking and batching
    with pytest.raises(ValueError, match="less than one batch of 1 x 64"):
        list(data.pack(["hi"], tok, 64))
    with pytest.raises(ValueError, match="no text"):
        list(data.pack(["", ""], tok, 64))


def test_token_batches_errors(tok):
    with pytest.raises(ValueError, match="no text"):
        list(data.token_batches([], tok, 16, 2))
    with pytest.raises(ValueError, match="less than one batch"):
        list(data.token_batches(["hi"], tok, 16, 2))
    with pytest.raises(ValueError, match="context_len"):
        list(data.token_batches(["hi"], tok, 1, 2))


# ---------------------------------------------------------------- sources


def test_parse_source_variants(tmp_path):
    assert data.parse_source("synthetic") == data.TextSource("synthetic")
    s = data.parse_source("hf:HuggingFaceFW/fineweb-edu")
    assert (s.kind, s.path, s.name, s.split, s.text_field) == ("hf", "HuggingFaceFW/fineweb-edu", None, "train", "text")
    s = data.parse_source("hf:allenai/c4:en:validation:content@0.2", seed=5)
    assert (s.path, s.name, s.split, s.text_field, s.weight, s.seed) == (
        "allenai/c4", "en", "validation", "content", 0.2, 5)
    s = data.parse_source("hf:imdb::test")
    assert (s.name, s.split) == (None, "test")
    f = tmp_path / "a.txt"
    f.write_text("hello")
    s = data.parse_source(str(f))
    assert (s.kind, s.path) == ("local", str(f))
    assert data.parse_source(str(tmp_path / "*.txt")).kind == "local"
    assert data.parse_source(str(tmp_path)).kind == "local"


def test_parse_source_errors(tmp_path):
    with pytest.raises(ValueError, match="hf:<path>"):
        data.parse_source("hf:")
    with pytest.raises(ValueError, match="hf:<path>"):
        data.parse_source("hf:a:b:c:d:e")
    with pytest.raises(ValueError, match="did you mean 'hf:allenai/c4'"):
        data.parse_source("allenai/c4")
    with pytest.raises(ValueError, match="no local"):
        data.parse_source(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="kind"):
        data.TextSource("s3", path="x")
    with pytest.raises(ValueError, match="weight"):
        data.TextSource("synthetic", weight=0)


def test_local_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first para\nline two\n\n\n  second para \n\n")
    (tmp_path / "b.txt").write_text("whole b")
    (tmp_path / "c.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [{"body": "j1"}, {"body": ""}, {"body": "j2"}]) + "\n")
    src = data.TextSource("local", path=str(tmp_path / "*.txt"))
    assert list(data.text_stream(src)) == ["first para\nline two", "second para", "whole b"]
    src = data.TextSource("local", path=str(tmp_path / "a.txt"), name="file")
    assert list(data.text_stream(src)) == ["first para\nline two\n\n\n  second para \n\n"]
    src = data.TextSource("local", path=str(tmp_path / "c.jsonl"), text_field="body")
    assert list(data.text_stream(src)) == ["j1", "j2"]
    src = data.TextSource("local", path=str(tmp_path), text_field="body")  # folder: all files
    assert len(list(data.text_stream(src))) == 5
    with pytest.raises(ValueError, match="available: body"):
        list(data.text_stream(data.TextSource("local", path=str(tmp_path / "c.jsonl"))))


def test_empty_source_error(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(ValueError, match="yielded no text; check path/split/text_field"):
        list(data.text_stream(str(tmp_path / "empty.txt")))


def test_synthetic_stream():
    a = list(itertools.islice(data.text_stream("synthetic"), 50))
    assert a == synthetic.synthetic_texts(50)
    val = data.TextSource("synthetic", split="validation")
    assert list(itertools.islice(data.text_stream(val), 50)) != a


def _jsonl(path, prefix, n):
    path.write_text("\n".join(json.dumps({"text": f"{prefix}{i}"}) for i in range(n)) + "\n")
    return str(path)


def test_mix_streams_weights_and_determinism(tmp_path):
    srcs = [data.TextSource("local", path=_jsonl(tmp_path / f"{p}.jsonl", p, 50), weight=w)
            for p, w in (("A", 0.7), ("B", 0.2), ("C", 0.1))]
    docs = list(itertools.islice(data.mix_streams(srcs, seed=0), 6000))
    assert docs == list(itertools.islice(data.mix_streams(srcs, seed=0), 6000))
    freq = Counter(d[0] for d in docs)
    for p, w in (("A", 0.7), ("B", 0.2), ("C", 0.1)):
        assert abs(freq[p] / 6000 - w) < 0.03
    # each source is read in order and cycled
    assert [d for d in docs if d[0] == "C"][:52] == [f"C{i}" for i in range(50)] + ["C0", "C1"]
    # without cycling: every doc once, then the mix ends
    once = list(data.mix_streams(srcs, seed=1, cycle=False))
    assert sorted(once) == sorted(f"{p}{i}" for p in "ABC" for i in range(50))
    mixed = list(itertools.islice(data.mix_streams(["synthetic", srcs[0]], seed=0), 100))
    assert any(d.startswith("A") and d[1:].isdigit() for d in mixed)


def test_mix_weight_errors_and_normalisation(tmp_path):
    for spec in ("synthetic@-0.2", "synthetic@0"):
        with pytest.raises(ValueError, match=r"mix weight of source 'synthetic' is -?0\.?2?.*must be > 0") as e:
            data.parse_source(spec)
        assert "\n" not in str(e.value)
    srcs = [data.parse_source(f"{_jsonl(tmp_path / f'{p}.jsonl', p, 5)}@{w}") for p, w in (("A", 7), ("B", 3))]
    with pytest.warns(UserWarning, match=r"^mix weights 7, 3 sum to 10, not 1: normalised to 0\.7, 0\.3$"):
        assert data.mix_weights(srcs) == [0.7, 0.3]
    srcs[1].weight = -1  # set after construction: still refused when mixed
    with pytest.raises(ValueError, match="is -1.*must be > 0"):
        next(data.mix_streams(srcs))


def test_a_mix_source_without_text_is_named(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    srcs = ["synthetic@0.9", f"{tmp_path / 'empty.txt'}@0.1"]
    with pytest.raises(ValueError, match=r"source .*empty\.txt yielded no text;.*drop it from the dataset mix"):
        list(itertools.islice(data.mix_streams(srcs), 500))


def test_mix_token_shares_are_measured_in_tokens(tmp_path, tok):
    """Three sources weighted 0.7/0.2/0.1 whose docs differ in length: the token counts per source
    (content tokens of the packed contexts) come out near the weights times the mean doc lengths."""
    lengths = {"A": 20, "B": 40, "C": 10}
    weights = {"A": 0.7, "B": 0.2, "C": 0.1}
    srcs = [data.TextSource("local", path=_jsonl(tmp_path / f"{p}.jsonl", p * n, 30), weight=weights[p])
            for p, n in lengths.items()]
    counts: dict = {}
    batches = list(data.token_batches(data.mix_streams(srcs, seed=3), tok, context_len=64, batch_size=4,
                                      max_batches=100, counts=counts))
    names = data.mix_names(srcs)
    assert set(counts) == set(names)
    packed = sum(int((b != tok.bos_token_id).sum()) for b in batches)
    assert sum(counts.values()) >= packed  # every packed content token counted (pack runs ahead by < a chunk)
    doc_tokens = {p: len(tok(p * n + "0", add_special_tokens=False)["input_ids"]) + 1 for p, n in lengths.items()}
    expect = {p: weights[p] * doc_tokens[p] for p in lengths}
    total = sum(counts.values())
    for name, p in zip(names, lengths):
        assert abs(counts[name] / total - expect[p] / sum(expect.values())) < 0.03, (p, counts)
    # docs keep telling their source; without counts nothing changes
    doc = next(data.mix_streams(srcs))
    assert isinstance(doc, str) and doc.source in names
    assert [b.tolist() for b in data.token_batches(data.mix_streams(srcs, seed=3), tok, 64, 4, max_batches=100)] == \
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
    src = data.parse_source("hf:org/set:cfg:validation:content", seed=7)
    assert list(data.text_stream(src)) == ["a", "b"]
    assert calls == [("org/set", "cfg", "validation", True)]
    assert fake.shuffled == (7, 10_000)
    # a plain list of dicts works too
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [{"text": "x"}, {"text": "y"}])
    assert list(data.text_stream("hf:org/set")) == ["x", "y"]
    with pytest.raises(ValueError, match="available columns: text"):
        list(data.text_stream("hf:org/set::train:body"))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [{"text": " "}])
    with pytest.raises(ValueError, match="yielded no text"):
        list(data.text_stream("hf:org/set"))

    def boom(*a, **k):
        raise FileNotFoundError("no such dataset")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(RuntimeError, match="could not load HF dataset"):
        list(data.text_stream("hf:org/missing"))


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
    imdb = data.load_task_dataset("imdb", 16, seed=0)
    assert Counter(it["label"] for it in imdb) == {0: 8, 1: 8}
    assert imdb == data.load_task_dataset("stanfordnlp/imdb", 16, seed=0)
    sst = data.load_task_dataset("sst2", 6, split="test")
    assert seen[-1] == ("stanfordnlp/sst2", None, "validation") and len(sst) == 6
    assert set(sst[0]) >= {"text", "label"}
    (g,) = data.load_task_dataset("gsm8k", 5, split="test")
    assert g["label"] == 1007 and g["question"] == "q?"
    tqa_train = data.load_task_dataset("truthful_qa", 20, split="train")
    tqa_test = data.load_task_dataset("truthful_qa", 20, split="test")
    assert Counter(it["label"] for it in tqa_train) == {0: 10, 1: 10}
    assert not {it["question"] for it in tqa_train} & {it["question"] for it in tqa_test}
    assert data.load_task_dataset("synthetic:sentiment", 10, seed=2) == synthetic.synthetic_task("sentiment", 10, seed=2)
    with pytest.raises(ValueError, match="imdb"):
        data.load_task_dataset("mnist", 3)
    amazon = data.load_task_dataset("amazon_sentiment", 12, split="test")  # SAEBench's 5-star vs 1-star reviews
    assert Counter(it["label"] for it in amazon) == {0: 6, 1: 6}
    assert {it["text"] for it in amazon if it["label"] == 0} <= {f"a{i}" for i in range(0, 30, 3)}
    bios = data.load_task_dataset("bias_in_bios_gender", 8)
    assert Counter(it["label"] for it in bios) == {0: 4, 1: 4}
    assert {it["text"] for it in bios if it["label"] == 1} <= {f"b{i}" for i in range(5)}
