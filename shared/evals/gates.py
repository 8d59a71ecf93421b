"""Stage Gate G1: does an SAE feature pack track whether the model solves GSM8K?

Protocol (notebook 11, `g1_report.json`):
1. Problems: N held-out GSM8K test problems (`openai/gsm8k` "main", gold = the number after "####"),
   or the offline `synthetic:arithmetic` word problems, which also carry model-style answers, half of
   them wrong (what the smoke run scores when a tiny model cannot solve anything).
2. Responses: greedy generations from a fixed prompt (the chat template when the tokenizer has one).
3. Correctness by the final-answer rule (`final_answer`): the number after the first "####", else in
   the last \\boxed{}, else the last number of the response; commas, "$", "%" and a trailing ".0"
   normalised; equal to the gold value within 1e-6.
4. R_mech per problem: the mean over RESPONSE tokens only (prompt and special tokens excluded) of
   (mean activation of the helpful pack's latents - mean activation of the harmful pack's latents).
5. Spearman rho between R_mech and correctness (scipy.stats.spearmanr); PASS iff rho >= 0.30 and
   p < 0.05, p the two-sided p-value of rho = 0 (P_VALUE_TEST; a one-sided test would halve it). When every response is right, or every one wrong, rho is undefined: null and FAIL.

Packs: latent ids from a catalog (or given), or chosen on a SEPARATE selection split
(`select_packs`: per latent, Welch's t of its per-problem mean response activation between correct
and incorrect responses; the pack_size largest positive t are the helpful pack, the pack_size most
negative the harmful one). `check_disjoint` raises when the selection and evaluation problems share
any question, so the packs are never chosen on the problems that judge them.
"""
from __future__ import annotations

import hashlib
import math
import re
from typing import Sequence

import torch

THRESHOLD_RHO = 0.30
THRESHOLD_P = 0.05
DATASETS = ("gsm8k", "synthetic:arithmetic")
PLAIN_PROMPT = "Question: {question}\nAnswer:"
CHAT_PROMPT = ("{question}\nSolve it step by step, then give the final answer as a number on the last line, "
               "after '####'.")
ANSWER_RULE = ("the number after the first '####', else in the last \\boxed{}, else the last number in the "
               "response; commas, '$', '%' and trailing zeros after a decimal point dropped; correct when it "
               "equals the gold answer within 1e-6")
R_MECH_DEFINITION = ("mean over response tokens (prompt and special tokens excluded) of the helpful pack's mean "
                     "latent activation minus the harmful pack's")
P_VALUE_TEST = ("two-sided p-value of Spearman's rho = 0 over the scored problems (scipy.stats.spearmanr, its t "
                "approximation; ties in the 0/1 correctness get average ranks)")
SELECTION_RULE = ("Welch's t per latent of its per-problem mean response activation, correct vs incorrect "
                  "responses on the selection split; the pack_size largest positive t = helpful, the pack_size "
                  "most negative = harmful")


# ----------------------------------------------------------------------------- problems

def _problem_id(dataset: str, split: str, question: str) -> str:
    return f"{dataset.split(':')[-1]}-{split}-{hashlib.sha1(question.encode('utf-8')).hexdigest()[:10]}"


def load_problems(dataset: str, n: int, split: str = "test", seed: int = 0) -> list[dict]:
    """n problems {id, question, gold, answer, [dataset_response]} of GSM8K (Hub) or synthetic:arithmetic.

    dataset_response (synthetic only): a model-style answer, right or wrong (balanced), to score
    in place of a generation. Fewer than n problems in the split -> one-line ValueError.
    """
    from ..data.tasks import load_task_dataset

    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r}: Stage Gate G1 reads one of {', '.join(DATASETS)}")
    if isinstance(n, bool) or int(n) < 1:
        raise ValueError(f"n={n!r}: ask for at least one problem")
    try:
        items = load_task_dataset(dataset, int(n), split=split, seed=seed)
    except ValueError as e:
        raise ValueError(f"{dataset} split {split!r}: {e}") from None
    if len(items) < int(n):
        raise ValueError(f"{dataset} split {split!r} has only {len(items)} problems but {n} were asked for: "
                         f"lower N_EVAL / N_SELECT to at most {len(items)}")
    out = []
    for it in items:
        p = {"id": _problem_id(dataset, split, it["question"]), "question": it["question"],
             "gold": float(it["label"]), "answer": it["answer"]}
        if "proposed_text" in it:  # "Question: q\nAnswer: ...": the part after the plain prompt
            p["dataset_response"] = it["proposed_text"][len(PLAIN_PROMPT.format(question=it["question"])):]
        out.append(p)
    return out


def _norm_question(q: str) -> str:
    return " ".join(str(q).lower().split())


def check_disjoint(selection: Sequence[dict], evaluation: Sequence[dict]) -> bool:
    """True when no question (whitespace and case folded) is in both sets; else a one-line ValueError."""
    shared = {_norm_question(p["question"]) for p in selection} & {_norm_question(p["question"]) for p in evaluation}
    if shared:
        example = next(iter(shared))
        raise ValueError(f"the selection and evaluation problems share {len(shared)} question(s), e.g. "
                         f"{example[:80]!r}: choose the packs on a split that never overlaps the evaluation set")
    return True


# ----------------------------------------------------------------------------- the final-answer rule

_NUMBER = re.compile(r"(?<![\w.$-])(?:\$[-−]?|[-−]\$?)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d,]*\d)")


def parse_number(text: str) -> float | None:
    """The value of a number written as in GSM8K answers: "1,234", "$5", "-3", "12.50", "7%"; else None."""
    s = str(text).strip().replace("−", "-").replace("$", "").replace(",", "").replace(" ", "").rstrip("%.")
    try:
        value = float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _numbers(text: str) -> list[str]:
    return _NUMBER.findall(text)


def final_answer(response: str) -> str | None:
    """The answer a response commits to (ANSWER_RULE), as its normalised number string, or None."""
    text = str(response)
    candidates: list[str] = []
    if "####" in text:
        candidates = _numbers(text.split("####", 1)[1])[:1]
    if not candidates:
        boxed = re.findall(r"\\boxed\{([^{}]*)\}", text)
        candidates = _numbers(boxed[-1])[-1:] if boxed else []
    if not candidates:
        candidates = _numbers(text)[-1:]
    value = parse_number(candidates[0]) if candidates else None
    if value is None:
        return None
    return str(int(value)) if value == int(value) else f"{value:.10g}"


def is_correct(response: str, gold) -> tuple[str | None, bool]:
    """(the predicted answer, whether it equals gold within 1e-6) by the final-answer rule."""
    predicted = final_answer(response)
    g = parse_number(str(gold)) if not isinstance(gold, (int, float)) else float(gold)
    if g is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    return predicted, predicted is not None and abs(float(predicted) - g) < 1e-6


# ----------------------------------------------------------------------------- prompts and responses

def prompt_ids(tokenizer, question: str) -> tuple[list[int], str]:
    """(prompt token ids, format): the tokenizer's chat template around CHAT_PROMPT when it has one
    (an instruct model), else PLAIN_PROMPT."""
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "user", "content": CHAT_PROMPT.format(question=question)}]
        ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(t) for t in ids], "chat"
    return [int(t) for t in tokenizer(PLAIN_PROMPT.format(question=question)).input_ids], "plain"


def responses(model, tokenizer, problems: Sequence[dict], *, source: str = "generate", max_new_tokens: int = 256,
              batch_size: int = 8) -> list[dict]:
    """Per problem {prompt_ids, response_ids, response, prompt_format}: greedy generations
    (source="generate", steer.greedy_continuations), or the dataset's own model-style answers
    (source="dataset", synthetic:arithmetic only) tokenised after the prompt."""
    from ..model.steer import greedy_continuations

    if source not in ("generate", "dataset"):
        raise ValueError(f"source={source!r}: use 'generate' (the model answers) or 'dataset' (score the "
                         "dataset's own answers)")
    prompts = [prompt_ids(tokenizer, p["question"]) for p in problems]
    if source == "generate":
        outs = greedy_continuations(model, tokenizer, [ids for ids, _ in prompts], max_new_tokens, batch_size)
    else:
        if any("dataset_response" not in p for p in problems):
            raise ValueError("source='dataset' needs problems with model-style answers (synthetic:arithmetic); "
                             "generate the responses for GSM8K")
        outs = [tokenizer(p["dataset_response"], add_special_tokens=False).input_ids for p in problems]
    return [{"prompt_ids": ids, "response_ids": [int(t) for t in out], "prompt_format": fmt,
             "response": tokenizer.decode(out, skip_special_tokens=True)} for (ids, fmt), out in zip(prompts, outs)]


@torch.no_grad()
def response_means(model, tokenizer, sae, layer: int, scored: Sequence[dict]) -> tuple[torch.Tensor, list[int]]:
    """(mean SAE latents over each response's tokens [N, d_sae], the number of response tokens read per
    problem): one forward of prompt + response each, only the response tokens kept (trace.token_latents).
    A response with no ordinary token has a row of NaN."""
    from ..features.trace import token_latents
    from ..saes.load import check_sae_fits

    check_sae_fits(sae, model, layer)
    means, counts = [], []
    for r in scored:
        ids = torch.tensor([list(r["prompt_ids"]) + list(r["response_ids"])])
        _, z = token_latents(model, tokenizer, sae, layer, ids, start=len(r["prompt_ids"]))
        means.append(z.mean(0) if z.shape[0] else torch.full((sae.cfg.d_sae,), float("nan")))
        counts.append(int(z.shape[0]))
    return torch.stack(means) if means else torch.zeros(0, sae.cfg.d_sae), counts


# ----------------------------------------------------------------------------- packs and R_mech

def answer_and_read(model, tokenizer, sae, layer: int, problems: Sequence[dict], *, source: str = "generate",
                    max_new_tokens: int = 256, batch_size: int = 8) -> tuple[list[dict], list[bool], torch.Tensor, list[int]]:
    """The problems answered (`responses`), marked right or wrong by the final-answer rule, and read by
    the SAE over the response tokens (`response_means`): (scored, right, means, counts)."""
    scored = responses(model, tokenizer, problems, source=source, max_new_tokens=max_new_tokens,
                       batch_size=batch_size)
    right = [is_correct(r["response"], p["gold"])[1] for p, r in zip(problems, scored)]
    means, counts = response_means(model, tokenizer, sae, layer, scored)
    return scored, right, means, counts


def check_pack(pack, d_sae: int, name: str = "pack") -> list[int]:
    """The pack as a list of distinct latent ids in 0..d_sae-1; a one-line ValueError otherwise."""
    if not isinstance(pack, (list, tuple)) or not pack:
        raise ValueError(f"{name} is empty: give at least one latent id (or choose the packs on a selection split)")
    bad = [j for j in pack if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < int(d_sae)]
    if bad:
        raise ValueError(f"{name} has ids out of range {bad[:5]}: latent ids run 0..{int(d_sae) - 1} for this SAE")
    if len(set(pack)) != len(pack):
        raise ValueError(f"{name} lists a latent twice: {sorted(pack)}")
    return [int(j) for j in pack]


def check_packs(helpful, harmful, d_sae: int) -> tuple[list[int], list[int]]:
    """Both packs checked (check_pack), and no latent in both."""
    h, b = check_pack(helpful, d_sae, "helpful pack"), check_pack(harmful, d_sae, "harmful pack")
    both = sorted(set(h) & set(b))
    if both:
        raise ValueError(f"latents {both} are in both the helpful and the harmful pack: each belongs to one")
    return h, b


def catalog_pack(catalog, query: str, pack_size: int) -> list[int]:
    """The ids of the first pack_size entries of a feature catalog (feature_catalog.json: path or dict)
    whose label holds every word of query (steer.find_features); a one-line ValueError when none does."""
    from ..model.steer import find_features

    hits = find_features(catalog, query)
    if not hits:
        raise ValueError(f"no feature label in the catalog holds {query!r}: try other words or give latent ids")
    return [int(e["id"]) for e in hits[:int(pack_size)]]


def given_packs(helpful, harmful, catalog, pack_size: int) -> tuple[list[int], list[int], str]:
    """(helpful ids, harmful ids, pack_source) from the notebook's HELPFUL_PACK / HARMFUL_PACK: each a
    list of latent ids, or words to search the catalog's labels (catalog_pack)."""
    packs = [catalog_pack(catalog, p, pack_size) if isinstance(p, str) else list(p) for p in (helpful, harmful)]
    searched = [f"{name} {q!r}" for name, q in (("helpful", helpful), ("harmful", harmful)) if isinstance(q, str)]
    source = f"catalog {catalog} ({', '.join(searched)})" if searched else "given latent ids"
    return packs[0], packs[1], source


def r_mech(means: torch.Tensor, helpful, harmful) -> list[float | None]:
    """R_mech per problem from response_means' rows: helpful-pack mean minus harmful-pack mean (the mean
    over tokens commutes with the pack mean); None where the response had no token."""
    h, b = check_packs(helpful, harmful, means.shape[1])
    values = (means[:, h].mean(1) - means[:, b].mean(1)).tolist()
    return [None if math.isnan(v) else float(v) for v in values]


def select_packs(means: torch.Tensor, correct: Sequence[bool], pack_size: int) -> tuple[list[int], list[int], dict]:
    """(helpful, harmful, info) chosen on a selection split by SELECTION_RULE. Needs both right and wrong
    responses; latents with no positive (negative) t leave the helpful (harmful) pack shorter."""
    if int(pack_size) < 1:
        raise ValueError(f"pack_size={pack_size}: a pack needs at least one latent")
    ok = ~torch.isnan(means).any(1)
    y = torch.tensor([bool(c) for c in correct])[ok]
    x = means[ok].double()
    n_right, n_wrong = int(y.sum()), int((~y).sum())
    if n_right < 2 or n_wrong < 2:
        raise ValueError(f"the selection split has {n_right} right and {n_wrong} wrong responses: packs need at "
                         "least 2 of each to contrast; raise N_SELECT, or give HELPFUL_PACK / HARMFUL_PACK")
    a, c = x[y], x[~y]
    t = (a.mean(0) - c.mean(0)) / (a.var(0) / n_right + c.var(0) / n_wrong + 1e-12).sqrt()
    order = t.argsort(descending=True, stable=True)
    helpful = [int(j) for j in order[:int(pack_size)] if t[j] > 0]
    harmful = [int(j) for j in order.flip(0)[:int(pack_size)] if t[j] < 0]
    if not helpful or not harmful:
        raise ValueError("no latent is more active on right (or on wrong) responses of the selection split: "
                         "raise N_SELECT, or give HELPFUL_PACK / HARMFUL_PACK")
    info = {"rule": SELECTION_RULE, "n_right": n_right, "n_wrong": n_wrong,
            "helpful_t": [round(float(t[j]), 4) for j in helpful], "harmful_t": [round(float(t[j]), 4) for j in harmful]}
    return helpful, harmful, info


# ----------------------------------------------------------------------------- the verdict

def spearman_verdict(scores: Sequence[float | None], correct: Sequence[bool], threshold_rho: float = THRESHOLD_RHO,
                     threshold_p: float = THRESHOLD_P) -> dict:
    """{rho, p_value, pass, reason, n_scored}: Spearman rho of R_mech vs correctness over the problems
    with a score; rho/p None and FAIL (with the reason) when either side is constant."""
    from scipy.stats import spearmanr

    if len(scores) != len(correct):
        raise ValueError(f"{len(scores)} scores but {len(correct)} correctness labels: one of each per problem")
    pairs = [(float(s), float(bool(c))) for s, c in zip(scores, correct) if s is not None]
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    out = {"rho": None, "p_value": None, "pass": False, "n_scored": len(pairs)}
    if len(pairs) < 3:
        return {**out, "reason": f"only {len(pairs)} problems have a response to score: rho needs at least 3"}
    if len(set(ys)) < 2:
        word = "right" if ys[0] else "wrong"
        return {**out, "reason": f"every response is {word}: correctness is constant, so rho is undefined (FAIL)"}
    if len(set(xs)) < 2:
        return {**out, "reason": "R_mech is the same for every problem: rho is undefined (FAIL)"}
    rho, p = spearmanr(xs, ys)
    rho, p = float(rho), float(p)
    passed = rho >= threshold_rho and p < threshold_p
    why = (f"rho {rho:.3f} {'>=' if rho >= threshold_rho else '<'} {threshold_rho:g} and "
           f"p {p:.3g} {'<' if p < threshold_p else '>='} {threshold_p:g}")
    return {**out, "rho": rho, "p_value": p, "pass": passed, "reason": ("PASS: " if passed else "FAIL: ") + why}


def g1_rows(problems: Sequence[dict], scored: Sequence[dict], scores: Sequence[float | None],
            counts: Sequence[int]) -> list[dict]:
    """Per problem {id, question, gold, response, predicted, correct, r_mech, n_response_tokens}."""
    rows = []
    for p, r, s, n in zip(problems, scored, scores, counts):
        predicted, correct = is_correct(r["response"], p["gold"])
        gold = int(p["gold"]) if float(p["gold"]).is_integer() else p["gold"]
        rows.append({"id": p["id"], "question": p["question"], "gold": gold, "response": r["response"],
                     "predicted": predicted, "correct": correct, "r_mech": s, "n_response_tokens": int(n)})
    return rows


def g1_report(rows: Sequence[dict], *, model: str, layer: int, sae: str, helpful_pack, harmful_pack,
              pack_source: str, selection_split_disjoint: bool | None, threshold_rho: float = THRESHOLD_RHO,
              threshold_p: float = THRESHOLD_P, **extra) -> dict:
    """The g1_report.json dict: the verdict over `rows` (g1_rows) and every row."""
    verdict = spearman_verdict([r["r_mech"] for r in rows], [r["correct"] for r in rows], threshold_rho, threshold_p)
    n = len(rows)
    return {"model": model, "layer": int(layer), "sae": sae, "n_eval": n,
            "accuracy": sum(bool(r["correct"]) for r in rows) / n if n else None,
            "rho": verdict["rho"], "p_value": verdict["p_value"], "pass": verdict["pass"],
            "verdict": "PASS" if verdict["pass"] else "FAIL", "reason": verdict["reason"],
            "n_scored": verdict["n_scored"], "threshold_rho": threshold_rho, "threshold_p": threshold_p,
            "helpful_pack": list(helpful_pack), "harmful_pack": list(harmful_pack), "pack_source": pack_source,
            "selection_split_disjoint": selection_split_disjoint, "answer_rule": ANSWER_RULE,
            "r_mech_definition": R_MECH_DEFINITION, "p_value_test": P_VALUE_TEST, **extra, "rows": list(rows)}
