"""Circuit tasks as clean/corrupt prompt pairs of equal token length, with single-token answers.

A task is what circuit discovery explains: the model's preference for the clean prompt's answer
over the competing token (the corrupt prompt's answer), read at the last position. `load_task`
builds the built-in tasks ("ioi", "sva", "synthetic") for any tokenizer; `pairs_from_text` builds
your own and refuses pairs of different token lengths or answers that are not one token. `split_pairs`
parts a task into the pairs that find a circuit and disjoint ones that score it.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from ..data.splits import seeded_rng

TASKS = ("ioi", "sva", "synthetic")


@dataclass
class PromptPairs:
    """n clean/corrupt prompt pairs of equal token length; metrics read the last position."""
    name: str
    clean_ids: torch.Tensor    # [n, T] long (BOS included when the tokenizer adds one)
    corrupt_ids: torch.Tensor  # [n, T] long, same T
    answer_ids: torch.Tensor   # [n] long: the right next token after clean
    wrong_ids: torch.Tensor    # [n] long: the competing token (the corrupt prompt's answer)
    clean_text: list[str]
    corrupt_text: list[str]

    def __len__(self) -> int:
        return int(self.clean_ids.shape[0])

    def subset(self, idx) -> "PromptPairs":
        """The pairs at `idx` (a slice, an int, a list or tensor of indices, or a bool mask)."""
        rows = torch.arange(len(self))[idx] if isinstance(idx, slice) else torch.as_tensor(idx).reshape(-1)
        if rows.dtype == torch.bool:
            rows = rows.nonzero().flatten()
        rows = rows.long()
        pick = rows.tolist()
        return PromptPairs(self.name, self.clean_ids[rows], self.corrupt_ids[rows], self.answer_ids[rows],
                           self.wrong_ids[rows], [self.clean_text[i] for i in pick],
                           [self.corrupt_text[i] for i in pick])

    def describe(self, tokenizer, i: int = 0) -> str:
        """How many pairs of how many tokens, and pair i's prompts with their answers, for printing."""
        answer, wrong = tokenizer.decode([int(self.answer_ids[i])]), tokenizer.decode([int(self.wrong_ids[i])])
        return (f"{len(self)} {self.name} pairs of {self.clean_ids.shape[1]} tokens, e.g.\n"
                f"  clean:   {self.clean_text[i]!r} -> {answer!r}\n  corrupt: {self.corrupt_text[i]!r} -> {wrong!r}")

    def to(self, device) -> "PromptPairs":
        """The same pairs with their tensors on `device`."""
        return PromptPairs(self.name, self.clean_ids.to(device), self.corrupt_ids.to(device),
                           self.answer_ids.to(device), self.wrong_ids.to(device),
                           list(self.clean_text), list(self.corrupt_text))


# ----------------------------------------------------------------------------- find / score split


def split_pairs(pairs: PromptPairs, *, seed: int = 0, score_share: float = 0.5) -> tuple[PromptPairs, PromptPairs]:
    """(find, score): `pairs` in two disjoint parts. A circuit is found on `find` and its faithfulness and
    completeness scored on `score` (Marks et al.'s code finds on a train split and evaluates on a test split),
    so a method that fits its prompts (ACDC's exact forwards above all) gains nothing there.

    Pairs that share a prompt (a duplicate, or one pair's corrupt prompt another's clean one) stay on one
    side, so no clean or corrupt text is in both; the sides are drawn by a shuffle seeded by the task's name
    and `seed` (the same pairs and seed give the same split), about score_share of the pairs scoring."""
    if not 0 < score_share < 1:
        raise ValueError(f"score_share must be between 0 and 1 (the share of pairs that score the circuit), got {score_share!r}")
    n = len(pairs)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, texts in enumerate(zip(pairs.clean_text, pairs.corrupt_text)):
        for text in texts:
            parent[root(i)] = root(first.setdefault(text, i))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    order = list(groups.values())
    seeded_rng("circuit-split", pairs.name, seed).shuffle(order)
    want = min(max(round(n * score_share), 1), n - 1)
    score: list[int] = []
    find: list[int] = []
    for group in order:
        (score if len(score) < want else find).extend(group)
    if not find or not score:
        raise ValueError(f"the {n} prompt pair(s) cannot be split into a find part and a disjoint score part (pairs "
                         f"sharing a prompt stay together): give at least 2 pairs with different prompts")
    return pairs.subset(sorted(find)), pairs.subset(sorted(score))


# ----------------------------------------------------------------------------- from text


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text).input_ids)


def _answer_id(tokenizer, answer, what: str, i: int) -> int:
    if isinstance(answer, int) and not isinstance(answer, bool):
        return answer
    if not isinstance(answer, str):
        raise ValueError(f"{what} of pair {i} must be a string (or a token id), got {type(answer).__name__}")
    ids = tokenizer(answer, add_special_tokens=False).input_ids
    if len(ids) != 1:
        pieces = [tokenizer.decode([t]) for t in ids]
        raise ValueError(f"{what} {answer!r} of pair {i} is {len(ids)} tokens {pieces}, not one; "
                         f"answers must be single tokens for this tokenizer (e.g. drop or add the leading space)")
    return int(ids[0])


def pairs_from_text(tokenizer, clean: Sequence[str], corrupt: Sequence[str], answers, wrongs,
                    name: str = "custom") -> PromptPairs:
    """PromptPairs from texts: answers/wrongs are single-token strings (or token ids), one per pair.

    Every clean/corrupt pair must tokenize to the same length and all pairs to one length T, so that
    position t means the same in both runs and the batch stacks; a one-line ValueError names the pair.
    """
    clean, corrupt, answers, wrongs = list(clean), list(corrupt), list(answers), list(wrongs)
    counts = dict(clean=len(clean), corrupt=len(corrupt), answers=len(answers), wrongs=len(wrongs))
    if len(set(counts.values())) != 1:
        raise ValueError(f"clean, corrupt, answers and wrongs must have one entry per pair, got {counts}")
    if not clean:
        raise ValueError("no prompt pairs given: pass at least one clean/corrupt pair")
    clean_ids, corrupt_ids = [], []
    for i, (c, k) in enumerate(zip(clean, corrupt)):
        a, b = _encode(tokenizer, c), _encode(tokenizer, k)
        if len(a) != len(b):
            raise ValueError(f"pair {i}: clean prompt {c!r} is {len(a)} tokens but corrupt prompt {k!r} is "
                             f"{len(b)}; clean and corrupt prompts must have the same token length")
        if clean_ids and len(a) != len(clean_ids[0]):
            raise ValueError(f"pair {i} is {len(a)} tokens but pair 0 is {len(clean_ids[0])}; every pair must "
                             f"have the same token length (use one template, or one PromptPairs per length)")
        clean_ids.append(a)
        corrupt_ids.append(b)
    ans = [_answer_id(tokenizer, a, "answer", i) for i, a in enumerate(answers)]
    wrong = [_answer_id(tokenizer, w, "wrong answer", i) for i, w in enumerate(wrongs)]
    return PromptPairs(name, torch.tensor(clean_ids, dtype=torch.long), torch.tensor(corrupt_ids, dtype=torch.long),
                       torch.tensor(ans, dtype=torch.long), torch.tensor(wrong, dtype=torch.long), clean, corrupt)


# ----------------------------------------------------------------------------- built-in tasks

# Indirect object identification (Wang et al. 2022): the answer is the name not repeated.
IOI_NAMES = ("Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Kate", "Anna", "Paul", "Mark",
             "Lisa", "Sarah", "Jane", "Mike", "David", "Alex", "Ben", "Emma")
IOI_TEMPLATES = (
    "When {A} and {B} went to the {place}, {S} gave a {obj} to",
    "Then, {A} and {B} had a long chat at the {place}. {S} handed a {obj} to",
    "After {A} and {B} arrived at the {place}, {S} passed a {obj} to",
)
IOI_PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "station", "park")
IOI_OBJECTS = ("drink", "ring", "book", "bone", "ball", "computer", "necklace", "snack", "apple", "letter")

# Subject-verb agreement: the verb agrees with the subject, not the nearer attractor noun.
SVA_NOUNS = (("boy", "boys"), ("girl", "girls"), ("dog", "dogs"), ("cat", "cats"), ("teacher", "teachers"),
             ("doctor", "doctors"), ("key", "keys"), ("car", "cars"), ("house", "houses"), ("friend", "friends"),
             ("player", "players"), ("student", "students"))
SVA_TEMPLATES = ("The {subj} near the {attr}", "The {subj} behind the {attr}", "The {subj} with the {attr}")
SVA_VERBS = ((" is", " are"), (" was", " were"))


def _ioi(rng: random.Random, _form) -> tuple[str, str, str, str]:
    io, s = rng.sample(IOI_NAMES, 2)
    a, b = (io, s) if rng.random() < 0.5 else (s, io)
    t, place, obj = rng.choice(IOI_TEMPLATES), rng.choice(IOI_PLACES), rng.choice(IOI_OBJECTS)
    clean = t.format(A=a, B=b, S=s, place=place, obj=obj)
    corrupt = t.format(A=a, B=b, S=io, place=place, obj=obj)  # the repeated name flipped: answer flips
    return clean, corrupt, " " + io, " " + s


def _sva(rng: random.Random, _form) -> tuple[str, str, str, str]:
    sg, pl = rng.choice(SVA_NOUNS)
    attr = rng.choice(rng.choice([n for n in SVA_NOUNS if n[0] != sg]))
    t, (v_sg, v_pl) = rng.choice(SVA_TEMPLATES), rng.choice(SVA_VERBS)
    if rng.random() < 0.5:
        return t.format(subj=sg, attr=attr), t.format(subj=pl, attr=attr), v_sg, v_pl
    return t.format(subj=pl, attr=attr), t.format(subj=sg, attr=attr), v_pl, v_sg


def _synthetic(rng: random.Random, spaced: bool) -> tuple[str, str, str, str]:
    """One-digit arithmetic in the built-in corpus' fact form ("3 + 4 = 7."); the corrupt changes b."""
    op = rng.choice("+-")
    while True:
        a, b, b2 = rng.randint(0, 9), rng.randint(0, 9), rng.randint(0, 9)
        c, c2 = (a + b, a + b2) if op == "+" else (a - b, a - b2)
        if b != b2 and 0 <= c <= 9 and 0 <= c2 <= 9:
            break
    tail = " =" if spaced else " = "
    lead = " " if spaced else ""
    return f"{a} {op} {b}{tail}", f"{a} {op} {b2}{tail}", f"{lead}{c}", f"{lead}{c2}"


_MAKERS: dict[str, Callable[[random.Random, bool], tuple[str, str, str, str]]] = dict(
    ioi=_ioi, sva=_sva, synthetic=_synthetic)
_NEEDS = dict(ioi="single-token names (' Mary', ' John', ...)", sva="single-token nouns and verbs (' is', ' are')",
              synthetic="single-token digits")


def _usable(tokenizer, item) -> bool:
    clean, corrupt, ans, wrong = item
    ok = len(_encode(tokenizer, clean)) == len(_encode(tokenizer, corrupt))
    return ok and all(len(tokenizer(w, add_special_tokens=False).input_ids) == 1 for w in (ans, wrong))


def _candidates(name: str, tokenizer, seed: int) -> Iterator[tuple[str, str, str, str]]:
    rng = seeded_rng("circuit-task", name, seed)
    spaced = len(tokenizer(" 7", add_special_tokens=False).input_ids) == 1  # " 7" one token (GPT-2 style)
    while True:
        yield _MAKERS[name](rng, spaced)


def load_task(name: str, tokenizer, n: int, seed: int = 0) -> PromptPairs:
    """n seeded pairs of a built-in task, all of one token length, for any tokenizer.

    "ioi": indirect object identification, corrupt = the repeated name flipped (the answer flips);
    "sva": subject-verb agreement with an attractor noun, corrupt = the subject's number flipped;
    "synthetic": one-digit arithmetic in the built-in corpus' form, works with the byte-level tiny
    tokenizer (corrupt = the second operand changed). Pairs the tokenizer cannot express (multi-token
    answers, unequal lengths) are skipped; the most common token length is kept.
    """
    if name not in _MAKERS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)} (or build your own with pairs_from_text)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the number of prompt pairs), got {n!r}")
    buckets: dict[int, list] = defaultdict(list)
    for tries, item in enumerate(_candidates(name, tokenizer, seed)):
        if _usable(tokenizer, item):
            bucket = buckets[len(_encode(tokenizer, item[0]))]
            bucket.append(item)
            if len(bucket) == n:
                return pairs_from_text(tokenizer, *zip(*bucket), name=name)
        if tries >= 200 * n + 1000:
            break
    best = max((len(b) for b in buckets.values()), default=0)
    if best == 0:
        raise ValueError(f"task {name!r} needs {_NEEDS[name]} and this tokenizer splits them; "
                         f"use task 'synthetic' (works with byte-level tokenizers) or a model with a larger vocabulary")
    raise ValueError(f"task {name!r}: only {best} pairs of one token length could be built for this tokenizer; "
                     f"lower n to {best} or less")
