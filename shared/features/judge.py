"""Feature labels from an LLM judge (Claude or GPT, whichever key is set) or an offline labeller.

Explain-then-score: prompt 1 shows a feature's top activating contexts (active tokens marked
<<like this>>) and asks for JSON {name, desc, confidence}; prompt 2 shows the explanation and a
shuffled mix of held-out contexts, activating ones sampled across the feature's activation quantiles
and ones where its activation was measured 0, and asks which ones activate (features.DETECTION_PROTOCOL
says how notebook 04 draws them). Texts are deduplicated: none twice, none both explained and scored.
`score` is the balanced accuracy of that detection (0.5 = chance, 1.0 = perfect), so every label
carries a measured score, not only the model's own confidence; `auroc` is the AUROC of the feature's
peak activation in each scored context as a score separating the contexts the judge called
activating from the others (1.0 = its calls follow the activation, 0.5 = unrelated; None when it
called all or none). Prompt 3 (fuzzing, after Delphi's fuzzing scorer) shows the explanation and the
held-out activating contexts again, each with some tokens marked: in about half, the tokens where the
feature truly activates (activation >= FUZZ_THRESHOLD of that context's peak); in the others, as many
tokens drawn at random (seeded) from the rest of the same context. The judge says in which the marks
match the explanation; `fuzzing_score` is the balanced accuracy of that call (0.5 chance, 1.0
perfect), so it measures whether the label says WHICH token fires, not only which context. With no key, `OfflineLabeller` names a feature from its top tokens and
n-grams, says plainly that it is an offline heuristic, and is scored the same way (detection by
token overlap; fuzzing by whether the marked tokens are the label's tokens), so the scores mean the
same thing.

A run prints a cost estimate first, calls the API from a bounded thread pool, retries 429 / 5xx /
timeouts / connection errors with exponential back-off and jitter (honouring retry-after), repairs
malformed JSON (one re-ask if repair fails) and caches every completion on disk, keyed by
(backend, model, prompt hash), so a re-run makes no request. API keys are read through
runtime.get_secret and never printed, logged, cached or written.

A feature to label is a `FeatureEvidence` (or a dict with the same keys):
    id: int                       the latent's index
    top_examples: list[{text, tokens, acts}]   activating contexts to explain, strongest first;
                                  tokens are the decoded token strings and acts their activations
    activating_examples: list[{text, tokens, acts}]      held-out contexts where it fires (max act > 0)
    non_activating_examples: list[{text, tokens, acts}]  held-out contexts where it was measured silent
                                  (acts given, all 0); both score the explanation
    fire_rate, mean_when_fired: optional floats copied into the catalog
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..runtime import get_secret, require_package
from ..training.checkpoint import atomic_write_text

SCORE_METRIC = ("detection balanced accuracy on held-out activating contexts (across activation quantiles) vs "
                "held-out contexts measured non-activating (0.5 = chance)")
AUROC_METRIC = ("AUROC of the feature's peak activation in each scored context, separating the contexts the judge "
                "called activating from the others (1 = its calls follow the activation, 0.5 = unrelated)")
# a token is "where the feature activates" when its activation is at least this fraction of the context's
# peak (Delphi's fuzzing threshold, 0.3)
FUZZ_THRESHOLD = 0.3
FUZZING_METRIC = ("fuzzing balanced accuracy: the judge says whether the marked tokens of a held-out activating "
                  f"context match the explanation; half marked where the feature activates (>= {FUZZ_THRESHOLD} of "
                  "the context's peak), half as many other tokens of the same context at random (0.5 = chance)")
DEFAULT_ANTHROPIC_MODEL = "claude-haiku-4-5"
DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"
KEY_NAMES = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
# each backend's SDK: installed when that backend is chosen (its key is set), not before
SDKS = {"anthropic": "anthropic>=0.40", "openai": "openai>=1.50"}

# USD per million (input, output) tokens, matched by the longest model-name prefix. List prices as
# of 2025; check the provider's pricing page before a large run.
PRICES = {
    "claude-3-5-haiku": (0.80, 4.0), "claude-haiku-4": (1.0, 5.0), "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-sonnet": (3.0, 15.0), "claude-3-7-sonnet": (3.0, 15.0), "claude-sonnet-4": (3.0, 15.0),
    "claude-opus-4": (15.0, 75.0), "claude-opus-4-5": (5.0, 25.0),
    "gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.0), "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.40, 1.60), "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.0), "gpt-5-mini": (0.25, 2.0), "gpt-5-nano": (0.05, 0.40),
}
EXPLAIN_MAX_TOKENS, DETECT_MAX_TOKENS, FUZZ_MAX_TOKENS = 300, 200, 200


# ---------------------------------------------------------------------------------------- evidence
@dataclass
class FeatureEvidence:
    """What the judge sees of one latent (see the module docstring for the example shape)."""

    id: int
    top_examples: list[dict]
    activating_examples: list[dict] = field(default_factory=list)
    non_activating_examples: list[dict] = field(default_factory=list)
    fire_rate: float | None = None
    mean_when_fired: float | None = None

    @classmethod
    def coerce(cls, f) -> "FeatureEvidence":
        """A FeatureEvidence from itself or a dict with the same keys; one-line error otherwise."""
        if isinstance(f, cls):
            return f
        if not isinstance(f, dict) or "id" not in f or "top_examples" not in f:
            raise ValueError("each feature must be a judge.FeatureEvidence or a dict with 'id' and "
                             "'top_examples' (list of {text, tokens, acts})")
        if "random_examples" in f:
            raise ValueError("random_examples are not read (unchecked contexts may activate): give held-out "
                             "activating_examples and measured non_activating_examples (features.judge_evidence)")
        return cls(int(f["id"]), list(f["top_examples"]), list(f.get("activating_examples") or []),
                   list(f.get("non_activating_examples") or []), f.get("fire_rate"), f.get("mean_when_fired"))


def _text(ex: dict) -> str:
    return ex.get("text") or "".join(ex.get("tokens") or [])


def _max_act(ex: dict) -> float:
    return max((float(a) for a in ex.get("acts") or []), default=0.0)


def _highlight(tokens: list[str], positions) -> str:
    """The tokens joined, each one at `positions` wrapped as <<tok>>."""
    marked = set(positions)
    return "".join(f"<<{t}>>" if i in marked else t for i, t in enumerate(tokens))


def _marked(ex: dict) -> str:
    """The context with every token whose activation is > 0 wrapped as <<tok>>."""
    toks, acts = ex.get("tokens") or [], ex.get("acts") or []
    if not toks:
        return _text(ex)
    return _highlight(toks, [i for i, a in enumerate(acts) if a > 0])


def _measured(ex: dict) -> bool:
    return bool(ex.get("acts"))


def split_examples(f: FeatureEvidence, n_explain: int, n_score: int, seed: int = 0):
    """(explain, held-out activating, non-activating, shuffled detection items) for one feature.

    Deduplicated by text: the n_explain strongest distinct top contexts explain; the first n_score
    activating and non-activating examples whose text is new score it. Items are (text,
    is_activating, peak activation), shuffled by a seed derived from the feature id so prompts, and
    so cache keys, repeat exactly. A non-activating example must carry its measured acts, all 0.
    """
    for ex in f.non_activating_examples:
        if not _measured(ex) or _max_act(ex) != 0 or min(float(a) for a in ex["acts"]) != 0:
            raise ValueError(f"feature {f.id}: a non_activating example must carry its measured acts, all 0 "
                             f"(features.detection_contexts measures them); got {_text(ex)[:40]!r}")
    for ex in f.activating_examples:
        if _max_act(ex) <= 0:
            raise ValueError(f"feature {f.id}: an activating example must carry acts with one > 0; "
                             f"got {_text(ex)[:40]!r}")
    seen: set[str] = set()

    def distinct(examples, n):
        out = []
        for e in examples:
            if len(out) < n and _text(e) not in seen:
                seen.add(_text(e))
                out.append(e)
        return out

    explain = distinct(sorted(f.top_examples, key=_max_act, reverse=True), n_explain)
    held = distinct(f.activating_examples, n_score)
    silent = distinct(f.non_activating_examples, n_score)
    items = [(_text(e), True, _max_act(e)) for e in held] + [(_text(e), False, 0.0) for e in silent]
    random.Random(f"{seed}:{f.id}").shuffle(items)
    return explain, held, silent, items


def fuzz_items(held: list[dict], fid: int, seed: int = 0,
               threshold: float = FUZZ_THRESHOLD) -> list[tuple[str, bool, tuple[int, ...]]]:
    """The fuzzing items of one feature from its held-out activating contexts: (marked text, marks correct?,
    marked token positions), shuffled by a seed derived from (seed, feature id).

    A context's true tokens are those with activation >= threshold x its peak. len(held) // 2 contexts,
    drawn at random among those with at least as many other tokens, are marked wrong: as many tokens as
    it has true ones, drawn at random from its other tokens (so the count of marks says nothing and no
    true token is marked); the rest are marked correct, at exactly their true tokens. Each context is shown
    once, so no item can be told from its twin. Contexts without per-token acts are left out.
    """
    rng = random.Random(f"{seed}:{fid}:fuzz")
    usable = [e for e in held if e.get("tokens") and len(e["tokens"]) == len(e.get("acts") or [])]
    true_sets = []
    for e in usable:
        cut = threshold * _max_act(e)
        true_sets.append([i for i, a in enumerate(e["acts"]) if a > 0 and a >= cut])
    eligible = [k for k, t in enumerate(true_sets) if len(usable[k]["tokens"]) - len(t) >= len(t)]
    wrong = set(rng.sample(eligible, min(len(usable) // 2, len(eligible))))
    items = []
    for k, (e, true) in enumerate(zip(usable, true_sets)):
        if k in wrong:
            true_set = set(true)
            others = [i for i in range(len(e["tokens"])) if i not in true_set]
            marks = tuple(sorted(rng.sample(others, len(true))))
        else:
            marks = tuple(true)
        items.append((_highlight(e["tokens"], marks), k not in wrong, marks))
    rng.shuffle(items)
    return items


def balanced_accuracy(truth: list[bool], predicted: list[bool]) -> float | None:
    """Mean of the true-positive and true-negative rates; None without both classes."""
    pos = [p for t, p in zip(truth, predicted) if t]
    neg = [not p for t, p in zip(truth, predicted) if not t]
    if not pos or not neg:
        return None
    return 0.5 * (sum(pos) / len(pos) + sum(neg) / len(neg))


def auroc(labels: list[bool], scores: list[float]) -> float | None:
    """P(score of a random positive > score of a random negative), ties counting 1/2 (the area under the
    ROC curve, Mann-Whitney); None without both labels."""
    pos = [s for t, s in zip(labels, scores) if t]
    neg = [s for t, s in zip(labels, scores) if not t]
    if not pos or not neg:
        return None
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def fuzzing_score(items: list[tuple[str, bool, tuple[int, ...]]], predicted: list[bool]) -> float | None:
    """Balanced accuracy of a fuzzing answer (True = "the marks are right") for items (text, truth, marks)."""
    return balanced_accuracy([t for _, t, _ in items], list(predicted))


def detection_scores(items: list[tuple[str, bool, float]], predicted: list[bool]) -> dict:
    """{score, auroc} of a detection answer (see the module docstring) for items (text, truth, peak)."""
    return {"score": balanced_accuracy([t for _, t, _ in items], predicted),
            "auroc": auroc(predicted, [a for _, _, a in items])}


# ----------------------------------------------------------------------------------------- prompts
def explain_prompt(explain: list[dict]) -> str:
    """Prompt 1: top contexts with active tokens marked; asks for {name, desc, confidence}."""
    lines = [f"{i + 1}. (max activation {_max_act(e):.2f}) {_marked(e)}" for i, e in enumerate(explain)]
    return (
        "You are labelling one latent feature of a sparse autoencoder trained on a language model.\n"
        "Below are the text contexts on which it activates most. Tokens where it activates are "
        "wrapped in <<double angle brackets>>.\n\n" + "\n".join(lines) + "\n\n"
        "What does this feature detect? Answer with only a JSON object: "
        '{"name": "<3-6 word label>", "desc": "<one or two sentences>", '
        '"confidence": <0.0-1.0, how sure you are>}'
    )


def detect_prompt(name: str, desc: str, items: list[tuple[str, bool, float]]) -> str:
    """Prompt 2: the explanation plus numbered unmarked contexts; asks which ones activate."""
    lines = [f"{i}. {text}" for i, (text, *_) in enumerate(items)]
    return (
        "A latent feature of a language model has this explanation:\n"
        f"name: {name}\ndescription: {desc}\n\n"
        "Some of the numbered texts below activate this feature; the others do not.\n\n"
        + "\n".join(lines) + "\n\n"
        'Which texts activate it? Answer with only a JSON object: {"activating": [<indices>]}'
    )


def fuzz_prompt(name: str, desc: str, items: list[tuple[str, bool, tuple[int, ...]]]) -> str:
    """Prompt 3: the explanation plus numbered contexts with marked tokens; asks which marks are right."""
    lines = [f"{i}. {text}" for i, (text, *_) in enumerate(items)]
    return (
        "A latent feature of a language model has this explanation:\n"
        f"name: {name}\ndescription: {desc}\n\n"
        "The feature activates somewhere in every numbered text below. In each text some tokens are wrapped "
        "in <<double angle brackets>>: in some texts those are the tokens where the feature activates, in the "
        "others they are other tokens of the text.\n\n"
        + "\n".join(lines) + "\n\n"
        "In which texts are the marked tokens the ones the explanation predicts? Answer with only a JSON "
        'object: {"correct": [<indices>]}'
    )


REASK = "\n\nYour previous answer was not valid JSON. Reply with the JSON object only, nothing else."


# ------------------------------------------------------------------------------------- JSON repair
def parse_json(text: str):
    """Parse a model's JSON answer, repairing common damage: code fences, prose around the first
    {...} / [...] block, trailing commas, single quotes, Python literals. ValueError if beyond repair."""
    s = re.sub(r"```[a-zA-Z]*", "", text or "").strip()
    starts = [i for i in (s.find("{"), s.find("[")) if i >= 0]
    if starts:
        i = min(starts)
        j = s.rfind("}" if s[i] == "{" else "]")
        s = s[i:j + 1] if j > i else s[i:]
    candidates = [s]
    fixed = re.sub(r",\s*([}\]])", r"\1", s)
    candidates.append(fixed)
    if '"' not in fixed:
        candidates.append(fixed.replace("'", '"'))
    candidates.append(re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false",
                      re.sub(r"\bNone\b", "null", candidates[-1]))))
    for c in candidates:
        try:
            return json.loads(c)
        except (json.JSONDecodeError, TypeError):
            continue
    raise ValueError(f"not valid JSON even after repair: {text[:80]!r}")


# ---------------------------------------------------------------------------------------- backends
class _Backend:
    """An LLM behind an official SDK: complete(prompt) -> text; the retry loop lives in Judge."""

    name = "?"

    def __init__(self, model: str, api_key, base_url: str | None = None, timeout: float = 60.0):
        if not model:
            raise ValueError(f"{type(self).__name__}: model must be a model name, e.g. "
                             f"{DEFAULT_ANTHROPIC_MODEL!r} or {DEFAULT_OPENAI_MODEL!r}")
        if not api_key:
            raise ValueError(f"{type(self).__name__}: api_key is empty; set {KEY_NAMES[self.name]}")
        self.model, self.timeout = model, timeout
        require_package(SDKS[self.name], why=f"the {self.name} judge")
        self._client = self._make_client(str.__str__(api_key), base_url, timeout)

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(model={self.model!r})"

    def retry_after(self, exc: Exception) -> tuple[bool, float | None]:
        """(retryable?, retry-after seconds if the server said) for an exception from complete()."""
        sdk = self._sdk
        if isinstance(exc, sdk.APIConnectionError):  # timeouts are a subclass
            return True, None
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            if status == 429 or status >= 500:
                try:
                    return True, float(exc.response.headers.get("retry-after"))
                except (TypeError, ValueError, AttributeError):
                    return True, None
        return False, None


class AnthropicBackend(_Backend):
    """Claude through `anthropic.Anthropic(...).messages.create`; SDK retries off (Judge retries)."""

    name = "anthropic"

    def _make_client(self, key, base_url, timeout):
        import anthropic

        self._sdk = anthropic
        return anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)

    def complete(self, prompt: str, max_tokens: int) -> str:
        msg = self._client.messages.create(model=self.model, max_tokens=max_tokens,
                                           messages=[{"role": "user", "content": prompt}])
        return "".join(getattr(b, "text", "") for b in msg.content)


class OpenAIBackend(_Backend):
    """GPT through `openai.OpenAI(...).chat.completions.create`; SDK retries off (Judge retries)."""

    name = "openai"

    def _make_client(self, key, base_url, timeout):
        import openai

        self._sdk = openai
        return openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout)

    def complete(self, prompt: str, max_tokens: int) -> str:
        out = self._client.chat.completions.create(model=self.model, max_tokens=max_tokens,
                                                   messages=[{"role": "user", "content": prompt}])
        return out.choices[0].message.content or ""


class OfflineLabeller:
    """No LLM: a label from the tokens the feature fires on most and the n-grams around them.

    Scored like the LLM labels: a held-out or random context is predicted active when it contains
    one of the label's tokens, and `score` is the balanced accuracy of that guess; a fuzzing item is
    called correctly marked when every marked token is one of the label's tokens (`fuzzing_score`).
    """

    name, model = "offline", "top-tokens"

    def __repr__(self) -> str:
        return "OfflineLabeller()"

    def label(self, explain: list[dict], items: list[tuple[str, bool, float]],
              fuzz: list[tuple[str, bool, tuple[int, ...]]] = ()) -> dict:
        peak, bigrams = Counter(), Counter()
        for e in explain:
            toks, acts = e.get("tokens") or [], e.get("acts") or []
            if not toks:
                continue
            i = max(range(len(toks)), key=lambda k: acts[k])
            peak[toks[i].strip()] += 1
            if i > 0:
                bigrams[(toks[i - 1] + toks[i]).strip()] += 1
        tokens = [t for t, _ in peak.most_common(3) if t]
        if not tokens:
            return {"name": "(no activating tokens)", "confidence": 0.0, "score": None, "auroc": None,
                    "fuzzing_score": None,
                    "desc": "Offline heuristic, not an LLM label: the examples hold no activating tokens."}
        grams = [g for g, c in bigrams.most_common(2) if c > 1]
        desc = (f"Offline heuristic from top tokens, not an LLM label (set ANTHROPIC_API_KEY or "
                f"OPENAI_API_KEY for one): "
                f"fires most on {', '.join(map(repr, tokens))}"
                + (f"; common contexts {', '.join(map(repr, grams))}" if grams else "") + ".")
        words = [re.compile(rf"(?<!\w){re.escape(t)}(?!\w)") for t in tokens]
        predicted = [any(w.search(text) for w in words) for text, *_ in items]
        marked_ok = [all(m.strip() in tokens for m in re.findall(r"<<(.*?)>>", text, flags=re.S))
                     for text, *_ in fuzz]
        return {"name": "token " + " / ".join(map(repr, tokens)), "desc": desc,
                "confidence": round(peak.most_common(1)[0][1] / max(1, len(explain)), 3),
                **detection_scores(items, predicted), "fuzzing_score": fuzzing_score(fuzz, marked_ok)}


def pick_backend(prefer: str | None = None, anthropic_model: str = DEFAULT_ANTHROPIC_MODEL,
                 openai_model: str = DEFAULT_OPENAI_MODEL, base_url: str | None = None,
                 timeout: float = 60.0):
    """The backend whose key is set (Anthropic first unless prefer="openai"); OfflineLabeller if none."""
    if prefer not in (None, "anthropic", "openai", "offline"):
        raise ValueError(f"prefer={prefer!r}: use 'anthropic', 'openai', 'offline' or None")
    if prefer == "offline":
        return OfflineLabeller()
    order = ["openai", "anthropic"] if prefer == "openai" else ["anthropic", "openai"]
    for name in order:
        key = get_secret(KEY_NAMES[name])
        if key:
            cls, model = ((AnthropicBackend, anthropic_model) if name == "anthropic"
                          else (OpenAIBackend, openai_model))
            return cls(model, key, base_url=base_url, timeout=timeout)
    return OfflineLabeller()


# ------------------------------------------------------------------------------------------- judge
def price_per_million(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for the longest matching prefix in PRICES, else None."""
    hits = [p for p in PRICES if model.startswith(p)]
    return PRICES[max(hits, key=len)] if hits else None


class Judge:
    """Labels features with one backend: cached, retried, bounded-concurrent calls.

    cache_dir: folder of JSON files, one per completion, keyed by (backend, model, prompt hash);
    None disables the cache. max_attempts bounds the tries per request; back-off waits
    base_delay * 2**attempt (capped at max_delay) times a jitter in [0.5, 1), or the server's
    retry-after when it sends one (also capped). `requests` counts API calls made.
    """

    def __init__(self, backend, cache_dir=None, max_workers: int = 4, max_attempts: int = 5,
                 base_delay: float = 1.0, max_delay: float = 30.0, n_explain: int = 10,
                 n_score: int = 10, seed: int = 0, log: Callable[[str], Any] = print):
        for name, v in (("max_workers", max_workers), ("max_attempts", max_attempts),
                        ("n_explain", n_explain), ("n_score", n_score)):
            if int(v) < 1:
                raise ValueError(f"{name}={v}: must be >= 1")
        if base_delay < 0 or max_delay < 0:
            raise ValueError("base_delay and max_delay must be >= 0 seconds")
        self.backend, self.max_workers, self.max_attempts = backend, max_workers, max_attempts
        self.base_delay, self.max_delay, self.seed, self.log = base_delay, max_delay, seed, log
        self.n_explain, self.n_score = n_explain, n_score
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.requests = 0
        self._rng, self._lock = random.Random(seed), threading.Lock()

    # --- cache
    def _cache_path(self, prompt: str, max_tokens: int) -> Path | None:
        if self.cache_dir is None:
            return None
        h = hashlib.sha256(json.dumps([self.backend.name, self.backend.model, max_tokens, prompt])
                           .encode()).hexdigest()
        return self.cache_dir / f"{self.backend.name}-{h[:32]}.json"

    def _cached(self, prompt: str, max_tokens: int) -> str | None:
        path = self._cache_path(prompt, max_tokens)
        if path is None or not path.exists():
            return None
        try:
            return json.loads(path.read_text())["text"]
        except (OSError, ValueError, KeyError):
            return None  # a damaged entry is asked again and overwritten

    # --- one request
    def complete(self, prompt: str, max_tokens: int) -> str:
        """The completion for `prompt`: from the cache, else the API with bounded retries."""
        hit = self._cached(prompt, max_tokens)
        if hit is not None:
            return hit
        for attempt in range(self.max_attempts):
            try:
                with self._lock:
                    self.requests += 1
                text = self.backend.complete(prompt, max_tokens)
                break
            except Exception as e:
                retryable, after = self.backend.retry_after(e)
                if not retryable or attempt == self.max_attempts - 1:
                    raise
                wait = after if after is not None else (
                    self.base_delay * 2 ** attempt * (0.5 + 0.5 * self._rng.random()))
                time.sleep(min(self.max_delay, max(0.0, wait)))
        path = self._cache_path(prompt, max_tokens)
        if path is not None:
            try:  # a failed cache write (full disk, a twin prompt writing the same file) costs only a re-ask later
                atomic_write_text(path, json.dumps({"backend": self.backend.name, "model": self.backend.model,
                                                    "max_tokens": max_tokens, "prompt": prompt, "text": text}))
            except OSError:
                pass
        return text

    def ask_json(self, prompt: str, max_tokens: int, check: Callable = lambda x: x):
        """check(parse_json(complete())); one re-ask when the answer is beyond repair or check
        raises ValueError (a missing field)."""
        try:
            return check(parse_json(self.complete(prompt, max_tokens)))
        except ValueError:
            return check(parse_json(self.complete(prompt + REASK, max_tokens)))

    # --- one feature
    def _fuzz(self, f: FeatureEvidence, held: list[dict]) -> list[tuple[str, bool, tuple[int, ...]]]:
        """The feature's fuzzing items, [] unless both correctly and wrongly marked ones exist."""
        items = fuzz_items(held, f.id, self.seed)
        return items if len({t for _, t, _ in items}) == 2 else []

    def label_one(self, f: FeatureEvidence) -> dict:
        """{name, desc, confidence, score, auroc, held_out, fuzzing_score, fuzzing_items} for one feature:
        explain, then detect on held-out data (score and auroc None without both activating and
        non-activating contexts), then fuzz on the held-out activating ones (None without two)."""
        explain, held, silent, items = split_examples(f, self.n_explain, self.n_score, self.seed)
        fuzz = self._fuzz(f, held)
        counts = {"held_out": {"activating": len(held), "non_activating": len(silent)},
                  "fuzzing_items": {"correct": sum(t for _, t, _ in fuzz),
                                    "wrong": sum(not t for _, t, _ in fuzz)}}
        if isinstance(self.backend, OfflineLabeller):
            return {**self.backend.label(explain, items if held and silent else [], fuzz), **counts}
        label = self.ask_json(explain_prompt(explain), EXPLAIN_MAX_TOKENS, _as_label)
        out = {**label, "score": None, "auroc": None, "fuzzing_score": None, **counts}
        if held and silent:
            chosen = self.ask_json(detect_prompt(label["name"], label["desc"], items), DETECT_MAX_TOKENS,
                                   _as_indices)
            out.update(detection_scores(items, [i in chosen for i in range(len(items))]))
        if fuzz:
            right = self.ask_json(fuzz_prompt(label["name"], label["desc"], fuzz), FUZZ_MAX_TOKENS,
                                  lambda obj: _as_indices(obj, "correct"))
            out["fuzzing_score"] = fuzzing_score(fuzz, [i in right for i in range(len(fuzz))])
        return out

    # --- cost
    def estimate_cost(self, features: list[FeatureEvidence]) -> str:
        """One line: requests left to make, ~tokens (characters / 4) and ~USD from PRICES."""
        if isinstance(self.backend, OfflineLabeller):
            return "judge: offline labeller (top tokens and n-grams, not an LLM): no requests, no cost"
        n_req = n_cached = chars_in = 0
        for f in features:
            explain, held, silent, items = split_examples(f, self.n_explain, self.n_score, self.seed)
            p1 = explain_prompt(explain)
            hit = self._cached(p1, EXPLAIN_MAX_TOKENS)
            label = None
            try:
                label = _as_label(parse_json(hit)) if hit is not None else None
            except ValueError:
                pass
            name, desc = (label["name"], label["desc"]) if label else ("x" * 40, "x" * 200)  # ~a label's size
            p2 = detect_prompt(name, desc, items)
            p2_cached = label is not None and self._cached(p2, DETECT_MAX_TOKENS) is not None
            asks = [(p1, hit is not None)] + ([(p2, p2_cached)] if held and silent else [])
            fuzz = self._fuzz(f, held)
            if fuzz:
                p3 = fuzz_prompt(name, desc, fuzz)
                asks.append((p3, label is not None and self._cached(p3, FUZZ_MAX_TOKENS) is not None))
            for p, cached in asks:
                if cached:
                    n_cached += 1
                else:
                    n_req += 1
                    chars_in += len(p)
        tok_in, tok_out = chars_in / 4, n_req * 120
        head = (f"judge: {self.backend.name} {self.backend.model}, {len(features)} features, "
                f"{n_req} requests to make ({n_cached} cached), ~{tok_in / 1e3:.1f}k input + "
                f"~{tok_out / 1e3:.1f}k output tokens")
        price = price_per_million(self.backend.model)
        if price is None:
            return head + f"; price unknown for model {self.backend.model!r} (not in judge.PRICES)"
        usd = (tok_in * price[0] + tok_out * price[1]) / 1e6
        return (head + f" -> ~${usd:.4f} (tokens estimated as characters/4, ~120 output tokens a "
                f"request, list prices ${price[0]}/${price[1]} per 1M in/out; retries not counted)")

    # --- many features
    def label_features(self, features) -> dict:
        """The catalog dict for `features` (in rank order): top-level judge_backend, judge_model,
        score_metric, auroc_metric, fuzzing_metric, judge_failed, judge_error and `features`, one entry each
        with id, rank, name, desc, confidence, fire_rate, mean_when_fired, score (detection balanced
        accuracy), auroc, held_out {activating, non_activating: contexts scored}, fuzzing_score,
        fuzzing_items {correct, wrong: items scored} and top_activating_examples[{activation, text}].

        A feature whose requests fail after all retries gets an empty name, a desc saying why and
        score None; the others are unaffected, and a re-run asks only for what is missing.
        `judge_failed` counts those features and `judge_error` is the first one's reason ("" if none);
        `summary` says it in one line.
        """
        feats = [FeatureEvidence.coerce(f) for f in features]
        self.log(self.estimate_cost(feats))

        def one(f):
            try:
                return self.label_one(f)
            except Exception as e:  # one feature's failure must not lose the others...
                if getattr(e, "status_code", None) in (401, 403):  # ...but a refused key fails them all
                    raise RuntimeError(f"{self.backend.name} refused the API key (HTTP {e.status_code}): "
                                       f"check {KEY_NAMES[self.backend.name]}") from None
                return {"name": "", "desc": f"judge failed: {type(e).__name__}: {str(e)[:120]}",
                        "confidence": 0.0, "score": None, "auroc": None, "fuzzing_score": None, "failed": True}

        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            labels = list(pool.map(one, feats))
        entries = []
        for rank, (f, lab) in enumerate(zip(feats, labels), start=1):
            top = sorted(f.top_examples, key=_max_act, reverse=True)
            entries.append({
                "id": f.id, "rank": rank, "name": lab["name"], "desc": lab["desc"],
                "confidence": lab["confidence"], "fire_rate": f.fire_rate,
                "mean_when_fired": f.mean_when_fired, "score": lab["score"], "auroc": lab["auroc"],
                "held_out": lab.get("held_out"), "fuzzing_score": lab.get("fuzzing_score"),
                "fuzzing_items": lab.get("fuzzing_items"),
                "top_activating_examples": [{"activation": round(_max_act(e), 4), "text": _text(e)}
                                            for e in top[:20]],
            })
        failed = [lab for lab in labels if lab.get("failed")]
        return {"judge_backend": self.backend.name, "judge_model": self.backend.model,
                "score_metric": SCORE_METRIC, "auroc_metric": AUROC_METRIC, "fuzzing_metric": FUZZING_METRIC,
                "judge_failed": len(failed),
                "judge_error": failed[0]["desc"].removeprefix("judge failed: ") if failed else "", "features": entries}


def summary(catalog: dict) -> str:
    """One line on how the labelling went, from label_features' dict: all labelled, or how many features
    the judge failed on and why (their names are blank in the catalog); then the mean detection and
    fuzzing scores over the features that have one (0.5 = chance, 1.0 = perfect)."""
    n, failed = len(catalog["features"]), catalog.get("judge_failed", 0)
    who = f"{catalog['judge_backend']} ({catalog['judge_model']})"
    means = []
    for key, what in (("score", "detection"), ("fuzzing_score", "fuzzing")):
        got = [f[key] for f in catalog["features"] if f.get(key) is not None]
        if got:
            means.append(f"mean {what} {sum(got) / len(got):.2f} over {len(got)}")
    scores = f"; {', '.join(means)} (0.5 = chance, 1.0 = perfect)" if means else ""
    if not failed:
        return f"judge {who}: labelled all {n} features" + scores
    if failed == n:
        return (f"judge {who} FAILED on every feature ({n} of {n}; first error: {catalog['judge_error']}): the "
                "catalog's names are blank. Check the key and the service, then run again.")
    return (f"judge {who} failed on {failed} of {n} features (first error: {catalog['judge_error']}): their "
            "names are blank; run again to retry them (the others are cached)" + scores + ".")


def _as_indices(obj, key: str = "activating") -> set[int]:
    """The chosen item indices from {key: [...]} ("activating" for detection, "correct" for fuzzing) or
    a bare list."""
    chosen = obj.get(key) if isinstance(obj, dict) else obj
    if not isinstance(chosen, list):
        raise ValueError(f"the judge's JSON lacks a {key!r} list")
    return {int(i) for i in chosen if not isinstance(i, bool) and str(i).strip().isdigit()}


def _as_label(obj) -> dict:
    """{name, desc, confidence} from a parsed explanation, with a clamped float confidence."""
    if not isinstance(obj, dict) or not obj.get("name"):
        raise ValueError("explanation JSON lacks a 'name'")
    try:
        conf = min(1.0, max(0.0, float(obj.get("confidence", 0.0))))
    except (TypeError, ValueError):
        conf = 0.0
    return {"name": str(obj["name"]), "desc": str(obj.get("desc", "")), "confidence": conf}


def label_features(features, backend=None, *, cache_dir=None, **judge_kwargs) -> dict:
    """Label `features` with `backend` (default: pick_backend()); see Judge for the knobs."""
    return Judge(backend if backend is not None else pick_backend(), cache_dir=cache_dir,
                 **judge_kwargs).label_features(features)
