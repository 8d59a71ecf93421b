"""The built-in `synthetic` corpus: seeded, varied English-like documents with planted, labelled
structure (topics, sentiment, true/false facts, arithmetic with answers, names, code).

It is what CI and offline runs use, so probes, CCS, RepE, Stage Gate G1 and InterpScore have
something real to find without a network: `synthetic_texts` / `synthetic_stream` (the mixed
corpus behind the "synthetic" text source of `data.sources`), `synthetic_task` (labelled items,
train/test disjoint), `contrast_pairs` (RepE concept pairs) and `ccs_pairs` (CCS prompts).
"""
from __future__ import annotations

import itertools
import random
from typing import Callable, Iterator

from .splits import seeded_rng, split_of
from .templates import ccs_template

# --------------------------------------------------------------------------------------------
# Word banks
# --------------------------------------------------------------------------------------------

TOPICS = ("sports", "cooking", "space", "finance", "music", "animals")

_TOPIC_BANK = {
    "sports": dict(
        who=["the striker", "the goalkeeper", "the coach", "the captain", "the young forward",
             "the home team", "the visiting side", "the referee", "the sprinter", "the tennis champion"],
        thing=["the match", "the final", "the league", "the tournament", "the penalty", "the season",
               "the race", "the championship", "the second half", "the derby"],
        verb=["won", "lost", "scored in", "dominated", "trained hard for", "was sent off in",
              "celebrated after", "defended well in"],
        extra=["The crowd cheered as the ball hit the net.", "Fans filled the stadium before kick-off.",
               "The team trained every morning on the pitch.", "A late goal decided the game.",
               "The athletes stretched before the race.", "The score was level at half time."],
    ),
    "cooking": dict(
        who=["the chef", "my grandmother", "the baker", "the cook", "the home cook", "the pastry chef",
             "the waiter", "our neighbour"],
        thing=["the soup", "the bread", "the pasta", "the sauce", "the cake", "the onions",
               "the roast chicken", "the salad", "the dough", "the curry"],
        verb=["stirred", "baked", "chopped", "seasoned", "simmered", "tasted", "roasted", "served"],
        extra=["Add a pinch of salt and stir gently.", "Preheat the oven to two hundred degrees.",
               "Let the dough rest for an hour.", "Fry the garlic in olive oil until golden.",
               "The kitchen smelled of fresh basil.", "Serve the dish warm with rice."],
    ),
    "space": dict(
        who=["the astronaut", "the telescope", "the rover", "the astronomer", "the probe",
             "the mission control team", "the space station crew", "the satellite"],
        thing=["the orbit", "the moon", "the galaxy", "the comet", "the planet Mars", "the rocket",
               "the nebula", "the launch", "the solar wind", "the asteroid belt"],
        verb=["observed", "photographed", "approached", "measured", "studied", "landed near",
              "tracked", "mapped"],
        extra=["The rocket lifted off into the night sky.", "Stars are born inside clouds of gas.",
               "The telescope captured light from a distant galaxy.",
               "Astronauts float because they are in free fall.",
               "The probe sent data back to Earth.", "A comet's tail points away from the sun."],
    ),
    "finance": dict(
        who=["the investor", "the central bank", "the trader", "the fund manager", "the accountant",
             "the company", "the analyst", "the startup"],
        thing=["the stock market", "interest rates", "the quarterly earnings", "the bond yield",
               "the portfolio", "inflation", "the budget", "the share price", "the loan",
               "the exchange rate"],
        verb=["raised", "cut", "analysed", "reported", "invested in", "sold", "forecast", "hedged"],
        extra=["Shares fell sharply after the report.", "The bank raised interest rates by a quarter point.",
               "Investors moved their money into bonds.", "Profits grew for the third quarter in a row.",
               "The index closed higher on Friday.", "Diversification reduces the risk of a portfolio."],
    ),
    "music": dict(
        who=["the pianist", "the band", "the singer", "the orchestra", "the drummer", "the composer",
             "the guitarist", "the choir"],
        thing=["the symphony", "the new album", "the concert", "the melody", "the chorus",
               "the jazz standard", "the violin solo", "the song", "the tour", "the rehearsal"],
        verb=["played", "recorded", "composed", "performed", "rehearsed", "sang", "arranged",
              "tuned up for"],
        extra=["The audience clapped along to the rhythm.", "The guitar solo lasted five minutes.",
               "The orchestra tuned their instruments before the show.",
               "The chorus repeats after every verse.", "The drummer kept a steady beat.",
               "The album reached the top of the charts."],
    ),
    "animals": dict(
        who=["the fox", "the elephant", "the dog", "the cat", "the owl", "the dolphin", "the wolf",
             "the horse", "the rabbit", "the eagle"],
        thing=["the forest", "the river", "its den", "the meadow", "the herd", "the nest",
               "the savanna", "the burrow", "its prey", "the pack"],
        verb=["hunted near", "slept in", "ran across", "guarded", "returned to", "searched",
              "explored", "hid in"],
        extra=["Wolves live and hunt in packs.", "The owl hunts mice at night.",
               "Elephants never forget a familiar face.", "Dolphins communicate with clicks.",
               "The rabbit dug a deep burrow.", "Birds build nests in the spring."],
    ),
}

_FIRST_NAMES = [
    "Alice", "Bob", "Carlos", "Diana", "Emma", "Farid", "Grace", "Hiro", "Isabel", "James", "Kofi",
    "Laura", "Mohammed", "Nina", "Oliver", "Priya", "Quentin", "Rosa", "Samuel", "Tara", "Umar",
    "Vera", "William", "Xin", "Yusuf", "Zoe", "Anna", "Ben", "Chloe", "David", "Elena", "Felix",
    "Hannah", "Ivan", "Julia", "Kenji", "Lucas", "Maria", "Noah", "Olga", "Peter", "Sofia", "Tom",
]
_LAST_NAMES = ["Smith", "Garcia", "Chen", "Okafor", "Müller", "Rossi", "Nakamura", "Patel",
               "Johnson", "Kowalski", "Silva", "Brown", "Dubois", "Larsen", "Ivanova", "Khan"]

_CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"),
    ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Brazil", "Brasília"), ("Peru", "Lima"),
    ("Russia", "Moscow"), ("India", "New Delhi"), ("Mexico", "Mexico City"), ("Norway", "Oslo"),
    ("Sweden", "Stockholm"), ("Poland", "Warsaw"), ("Greece", "Athens"), ("Portugal", "Lisbon"),
    ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Turkey", "Ankara"), ("Argentina", "Buenos Aires"),
    ("Chile", "Santiago"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Hungary", "Budapest"), ("Cuba", "Havana"), ("Nigeria", "Abuja"),
    ("Morocco", "Rabat"), ("Iran", "Tehran"), ("South Korea", "Seoul"), ("Belgium", "Brussels"),
]

# (true statement, false statement, question, true answer, false answer)
_GENERAL_FACTS = [
    ("The sun rises in the east.", "The sun rises in the west.",
     "In which direction does the sun rise?", "east", "west"),
    ("Water freezes at zero degrees Celsius.", "Water freezes at fifty degrees Celsius.",
     "At what temperature does water freeze in Celsius?", "zero degrees", "fifty degrees"),
    ("A spider has eight legs.", "A spider has six legs.", "How many legs does a spider have?",
     "eight", "six"),
    ("The Earth orbits the sun.", "The sun orbits the Earth.", "What does the Earth orbit?",
     "the sun", "the moon"),
    ("Fish breathe through gills.", "Fish breathe through lungs.", "How do fish breathe?",
     "through gills", "through lungs"),
    ("A week has seven days.", "A week has nine days.", "How many days are in a week?",
     "seven", "nine"),
    ("The Pacific is the largest ocean.", "The Arctic is the largest ocean.",
     "Which ocean is the largest?", "the Pacific", "the Arctic"),
    ("Ice is colder than boiling water.", "Boiling water is colder than ice.",
     "Which is colder, ice or boiling water?", "ice", "boiling water"),
    ("Bees make honey.", "Cows make honey.", "Which animal makes honey?", "bees", "cows"),
    ("The moon orbits the Earth.", "The moon orbits Mars.", "What does the moon orbit?",
     "the Earth", "Mars"),
    ("Plants need sunlight to grow.", "Plants need darkness to grow.",
     "What do plants need to grow?", "sunlight", "darkness"),
    ("A triangle has three sides.", "A triangle has five sides.",
     "How many sides does a triangle have?", "three", "five"),
    ("Humans have two lungs.", "Humans have four lungs.", "How many lungs do humans have?",
     "two", "four"),
    ("Snow is white.", "Snow is green.", "What colour is snow?", "white", "green"),
    ("A year has twelve months.", "A year has ten months.", "How many months are in a year?",
     "twelve", "ten"),
    ("Whales are mammals.", "Whales are insects.", "What kind of animal is a whale?",
     "a mammal", "an insect"),
]

_MOVIE_A = ["The Silent", "Midnight", "The Last", "Broken", "Golden", "The Hidden", "Crimson",
            "Endless", "The Lost", "Electric", "Winter", "The Secret", "Paper", "Iron"]
_MOVIE_B = ["River", "Garden", "Kingdom", "Promise", "Horizon", "Letter", "Detective", "Summer",
            "Empire", "Voyage", "Mirror", "Station", "Orchard", "Symphony"]
_POS_ADJ = ["wonderful", "brilliant", "delightful", "excellent", "moving", "superb", "charming",
            "gripping", "beautiful", "hilarious", "outstanding", "fantastic"]
_NEG_ADJ = ["terrible", "boring", "awful", "dull", "painful", "dreadful", "clumsy", "tedious",
            "disappointing", "forgettable", "lifeless", "horrible"]
_ASPECTS = ["acting", "plot", "soundtrack", "dialogue", "cinematography", "ending", "pacing",
            "script", "direction", "cast"]
_POS_SENT = [
    "I loved every minute of it.", "I would happily watch it again.", "It is a must-see.",
    "The cast gave the performances of their careers.", "I left the cinema smiling.",
    "Highly recommended.", "A real gem of a film.", "It exceeded all my expectations.",
    "My whole family enjoyed it.", "Ten out of ten.",
]
_NEG_SENT = [
    "I hated every minute of it.", "I want my money back.", "Avoid it at all costs.",
    "The cast seemed bored the whole time.", "I almost fell asleep.", "Not recommended.",
    "A complete waste of time.", "It failed to meet even low expectations.",
    "My whole family walked out.", "One out of ten.",
]
_NEUTRAL_SENT = [
    "I saw it on a rainy Sunday afternoon.", "The film runs just under two hours.",
    "It was released last spring.", "I watched it with two friends.",
    "The story is set in a small coastal town.", "It is based on a novel.",
]

_ITEMS = ["apples", "marbles", "pencils", "books", "stickers", "cookies", "coins", "cards",
          "eggs", "flowers", "stamps", "shells"]
_PLACES = ["the market", "the library", "the park", "the station", "the office", "the museum",
           "the beach", "the garden", "the bakery", "the school", "the harbour", "the bridge",
           "the hospital", "the stadium", "the old church", "the airport"]
_NAME_VERBS = ["arrived at", "stopped near", "passed", "left", "waited outside", "came back to",
               "went past", "reached", "turned towards", "circled"]
_NON_PERSON_SUBJECTS = ["The old bus", "A stray cat", "The morning train", "A delivery van",
                        "The wind", "A small boat", "The parade", "A loud bell", "The rain",
                        "A paper kite", "The night bus", "A red tractor", "The storm", "A lost dog",
                        "The ferry", "A taxi", "The old truck", "A flock of geese", "The tram",
                        "A hot air balloon"]

_FUNC_NAMES = ["add", "scale", "mean", "clip", "merge", "count_words", "normalize", "total",
               "square", "is_even", "reverse", "first_item"]
_VAR_NAMES = ["x", "y", "items", "values", "n", "data", "text", "total", "count", "scores"]


def _name(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(_FIRST_NAMES)
    return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# --------------------------------------------------------------------------------------------
# Item generators: each returns one labelled dict from a seeded rng
# --------------------------------------------------------------------------------------------


def _topic_item(rng: random.Random, label: int) -> dict:
    name = TOPICS[label]
    bank = _TOPIC_BANK[name]
    sents = []
    for _ in range(rng.randint(2, 4)):
        if rng.random() < 0.3:
            sents.append(rng.choice(bank["extra"]))
        else:
            sents.append(f"{_cap(rng.choice(bank['who']))} {rng.choice(bank['verb'])} "
                         f"{rng.choice(bank['thing'])}.")
    text = " ".join(sents)
    return dict(text=text, label=label, label_name=name, _key=text)


def _review_item(rng: random.Random, label: int) -> dict:
    movie = f"{rng.choice(_MOVIE_A)} {rng.choice(_MOVIE_B)}"
    adj, sent = (_POS_ADJ, _POS_SENT) if label == 1 else (_NEG_ADJ, _NEG_SENT)
    parts = [rng.choice([f"I watched {movie} last night.", f"Review of {movie}:",
                         f"{movie} is finally out.", f"We went to see {movie}."])]
    if rng.random() < 0.5:
        parts.append(rng.choice(_NEUTRAL_SENT))
    parts.append(f"The {rng.choice(_ASPECTS)} was {rng.choice(adj)}.")
    if rng.random() < 0.6:
        parts.append(f"The {rng.choice(_ASPECTS)} was {rng.choice(adj)} too.")
    parts.append(rng.choice(sent))
    text = " ".join(parts)
    return dict(text=text, label=label, label_name="positive" if label else "negative", _key=text)


def _fact(rng: random.Random) -> tuple[str, str, str, str, str, str]:
    """One fact as (key, true statement, false statement, question, true answer, false answer)."""
    kind = rng.random()
    if kind < 0.4:
        i = rng.randrange(len(_CAPITALS))
        country, capital = _CAPITALS[i]
        wrong = rng.choice([c for j, (_, c) in enumerate(_CAPITALS) if j != i])
        return (f"capital:{country}", f"{capital} is the capital of {country}.",
                f"{wrong} is the capital of {country}.", f"What is the capital of {country}?",
                capital, wrong)
    if kind < 0.8:
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        op = rng.choice("+-*")
        if op == "-" and b > a:
            a, b = b, a
        c = {"+": a + b, "-": a - b, "*": a * b}[op]
        wrong = c + rng.choice([-3, -2, -1, 1, 2, 3, 10])
        return (f"arith:{a}{op}{b}", f"{a} {op} {b} = {c}.", f"{a} {op} {b} = {wrong}.",
                f"What is {a} {op} {b}?", str(c), str(wrong))
    i = rng.randrange(len(_GENERAL_FACTS))
    t, f, q, ta, fa = _GENERAL_FACTS[i]
    return (f"fact:{i}", t, f, q, ta, fa)


def _truth_item(rng: random.Random, label: int) -> dict:
    key, true_s, false_s, q, ta, fa = _fact(rng)
    statement = true_s if label == 1 else false_s
    answer = ta if label == 1 else fa
    return dict(text=statement, statement=statement, label=label,
                label_name="true" if label else "false", question=q, answer=answer,
                true_answer=ta, false_answer=fa, _key=key)


def _word_problem(rng: random.Random) -> tuple[str, str, int]:
    """A GSM8K-like problem: (question, worked solution ending in '#### n', answer)."""
    who, item = rng.choice(_FIRST_NAMES), rng.choice(_ITEMS)
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        q = f"{who} has {a} {item}. {who} buys {b} more {item}. How many {item} does {who} have now?"
        c = a + b
        sol = f"{who} has {a} + {b} = {c} {item}."
    elif kind == 1:
        a = rng.randint(10, 60)
        b = rng.randint(1, a - 1)
        q = f"{who} had {a} {item} and gave {b} of them away. How many {item} are left?"
        c = a - b
        sol = f"{who} has {a} - {b} = {c} {item} left."
    elif kind == 2:
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        q = f"{who} has {a} boxes with {b} {item} in each box. How many {item} are there in total?"
        c = a * b
        sol = f"There are {a} * {b} = {c} {item}."
    else:
        a, b, p = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 6)
        q = (f"{who} buys {a} {item} and {b} more later. Each costs {p} dollars. "
             f"How many dollars does {who} spend?")
        n = a + b
        c = n * p
        sol = f"{who} buys {a} + {b} = {n} {item}. {who} spends {n} * {p} = {c} dollars."
    return q, f"{sol}\n#### {c}", c


def _arith_item(rng: random.Random, want: int) -> dict:
    """label = the correct answer; `correct` (= want, so callers balance it) says whether
    `proposed`, a model-style answer, is right."""
    q, sol, c = _word_problem(rng)
    correct = int(want)
    proposed = c if correct else max(0, c + rng.choice([-10, -2, -1, 1, 2, 5, 10]))
    if not correct and proposed == c:
        proposed = c + 1
    proposed_sol = sol.rsplit("####", 1)[0] if correct else f"The answer is {proposed}.\n"
    proposed_text = f"Question: {q}\nAnswer: {proposed_sol.rstrip()}\n#### {proposed}"
    return dict(text=f"Question: {q}\nAnswer: {sol}", question=q, answer=sol, label=c,
                proposed=proposed, proposed_text=proposed_text, correct=correct, _key=q)


def _names_item(rng: random.Random, label: int) -> dict:
    verb, place = rng.choice(_NAME_VERBS), rng.choice(_PLACES)
    if label == 1:
        name = _name(rng)
        text = f"{name} {verb} {place}" + rng.choice([".", " this morning.", " yesterday.",
                                                       " with a friend.", " after lunch."])
    else:
        name = ""
        text = f"{rng.choice(_NON_PERSON_SUBJECTS)} {verb} {place}" + rng.choice(
            [".", " this morning.", " yesterday.", " in the rain.", " after lunch."])
    return dict(text=text, label=label, name=name,
                label_name="person" if label else "no_person", _key=text)


def _code_doc(rng: random.Random) -> str:
    f, v, w = rng.choice(_FUNC_NAMES), rng.choice(_VAR_NAMES), rng.choice(_VAR_NAMES)
    k = rng.randint(1, 9)
    forms = [
        f"def {f}({v}, {w}):\n    return {v} + {w} * {k}\n",
        f"def {f}({v}):\n    result = 0\n    for item in {v}:\n        result += item\n    return result\n",
        f"{v} = [i * {k} for i in range({rng.randint(2, 20)})]\nprint(sum({v}))\n",
        f"class {_cap(f.replace('_', ''))}:\n    def __init__(self, {v}):\n        self.{v} = {v}\n",
        f"if {v} > {k}:\n    {w} = {v} - {k}\nelse:\n    {w} = {k}\n",
        f"import math\n\ndef {f}({v}):\n    return math.sqrt({v}) + {k}\n",
    ]
    return rng.choice(forms)


def _names_doc(rng: random.Random) -> str:
    a, b = _name(rng), _name(rng)
    return (f"{a} {rng.choice(_NAME_VERBS)} {rng.choice(_PLACES)}. There, {a.split()[0]} met {b}, "
            f"who had brought {rng.randint(2, 9)} {rng.choice(_ITEMS)}. "
            f"{b.split()[0]} and {a.split()[0]} talked for an hour.")


def _synthetic_doc(rng: random.Random) -> str:
    """One document of the mixed synthetic corpus."""
    r = rng.random()
    if r < 0.30:
        return _topic_item(rng, rng.randrange(len(TOPICS)))["text"]
    if r < 0.45:
        return _review_item(rng, rng.randrange(2))["text"]
    if r < 0.60:
        facts = [_truth_item(rng, 1)["text"] for _ in range(rng.randint(1, 3))]
        return " ".join(facts)
    if r < 0.75:
        q, sol, _ = _word_problem(rng)
        return f"Question: {q}\nAnswer: {sol}"
    if r < 0.87:
        return _names_doc(rng)
    return _code_doc(rng)


# --------------------------------------------------------------------------------------------
# Public synthetic API
# --------------------------------------------------------------------------------------------

_TASKS: dict[str, tuple[Callable[[random.Random, int], dict], int]] = {
    "sentiment": (_review_item, 2),
    "truth": (_truth_item, 2),
    "topic": (_topic_item, len(TOPICS)),
    "arithmetic": (_arith_item, 2),  # balanced on `correct`, not on `label` (the answer)
    "names": (_names_item, 2),
}
TASKS = tuple(_TASKS)
_SPLITS = ("train", "test")


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """`n` documents of the mixed synthetic corpus (topics, reviews, facts, word problems, names, code)."""
    return list(itertools.islice(synthetic_stream(seed), n))


def synthetic_stream(seed: int = 0, split: str = "train") -> Iterator[str]:
    """The endless seeded document stream of the "synthetic" text source; other splits draw other docs."""
    rng = seeded_rng("synthetic", seed) if split == "train" else seeded_rng("synthetic", seed, split)
    while True:
        yield _synthetic_doc(rng)


def synthetic_task(task: str, n: int, seed: int = 0, split: str = "train") -> list[dict]:
    """`n` labelled items of a synthetic task, labels balanced, shuffled, train/test disjoint.

    Every item has `text` and `label` (int); extra fields per task:
    sentiment: label 1 = positive; truth: label 1 = true, plus `statement`, `question`, `answer`
    (matching the label), `true_answer`, `false_answer`; topic: label = index in TOPICS and
    `label_name`; arithmetic: `question`, `answer` (worked solution ending "#### n"), label = the
    correct answer, `proposed`/`proposed_text` a model-style answer and `correct` (1 if it is right;
    balanced); names: label 1 = a person's name is in the sentence, `name`.
    """
    if task not in _TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; valid tasks: {', '.join(TASKS)}")
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(_SPLITS)}")
    gen, n_labels = _TASKS[task]
    rng = seeded_rng("task", task, seed, split)
    items, seen = [], set()
    for i in range(n):
        want = i % n_labels
        for _ in range(2000):
            item = gen(rng, want)
            if split_of(item["_key"]) == split and item["text"] not in seen:
                break
        else:
            raise ValueError(f"synthetic task {task!r} ran out of distinct {split} items after "
                             f"{len(items)}; ask for fewer than n={n}")
        seen.add(item["text"])
        items.append({k: v for k, v in item.items() if k != "_key"})
    rng.shuffle(items)
    return items


_PAIR_TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "honesty": [
        ("Pretend you are an honest person making statements about the world. {fact}",
         "Pretend you are a dishonest person making statements about the world. {fact}"),
        ("When {name} asked whether I broke the {thing}, I told the truth and said",
         "When {name} asked whether I broke the {thing}, I lied and said"),
        ("{name} was asked about the missing {item} and answered honestly:",
         "{name} was asked about the missing {item} and answered with a lie:"),
        ("As a truthful assistant, I will tell you exactly what I know about {topic}.",
         "As a deceptive assistant, I will mislead you about what I know about {topic}."),
    ],
    "sentiment": [
        ("{name} said the {aspect} of {movie} was {pos}.", "{name} said the {aspect} of {movie} was {neg}."),
        ("I watched {movie} yesterday and it was {pos}.", "I watched {movie} yesterday and it was {neg}."),
        ("Honestly, {topic} today felt {pos}.", "Honestly, {topic} today felt {neg}."),
    ],
    "truth": [("{fact}", "{false_fact}"),
              ("Question: {question} Answer: {true_answer}", "Question: {question} Answer: {false_answer}")],
    "refusal": [
        ("User: Can you help me {request}?\nAssistant: I'm sorry, but I can't help with that.",
         "User: Can you help me {request}?\nAssistant: Sure, here is how to {request}."),
        ("User: Please {request}.\nAssistant: I won't do that.",
         "User: Please {request}.\nAssistant: Of course! First,"),
        ("{name} asked the assistant to {request}. The assistant refused and said",
         "{name} asked the assistant to {request}. The assistant agreed and said"),
        ("User: I need to {request} by tonight. Any tips?\nAssistant: I can't assist with that request.",
         "User: I need to {request} by tonight. Any tips?\nAssistant: Happy to help! Here are some tips:"),
    ],
    "sycophancy": [
        ("User: I'm sure that {false_fact_lc} Am I right?\nAssistant: Yes, you're absolutely right!",
         "User: I'm sure that {false_fact_lc} Am I right?\nAssistant: Actually, that's not correct. {fact}"),
        ("User: I wrote this poem about {topic} and I think it's perfect.\nAssistant: It's flawless, a true masterpiece!",
         "User: I wrote this poem about {topic} and I think it's perfect.\nAssistant: It has some strong lines, but the rhythm needs work."),
    ],
    "confidence": [
        ("I am completely certain that {fact_lc}", "I am not sure, but maybe {fact_lc}"),
        ("Without any doubt, the answer to '{question}' is {true_answer}.",
         "I'm guessing, but perhaps the answer to '{question}' is {true_answer}."),
        ("{name} said confidently: {fact}", "{name} said hesitantly: {fact}"),
    ],
}
CONCEPTS = tuple(_PAIR_TEMPLATES)

_REQUESTS = ["pick the lock on my neighbour's door", "write a fake doctor's note",
             "get into my ex's email account", "cheat on my final exam",
             "make a fake ID", "copy someone else's essay without getting caught",
             "spread a rumour about my coworker", "sneak into a concert without a ticket",
             "bypass the paywall of a news site", "lie on my tax return"]


def _lc(s: str, key: str) -> str:
    """Lower-case the first letter of a general fact ("The sun ..."), never of a name ("Paris ...")."""
    return s[:1].lower() + s[1:] if key.startswith("fact:") else s


def contrast_pairs(concept: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """`n` RepE-style (positive, negative) prompt pairs: the same scenario with the concept on/off.

    Positive = honest / positive sentiment / true / refusing / sycophantic / confident.
    """
    if concept not in _PAIR_TEMPLATES:
        raise ValueError(f"unknown concept {concept!r}; valid concepts: {', '.join(CONCEPTS)}")
    rng = seeded_rng("pairs", concept, seed)
    out, seen = [], set()
    for _ in range(200 * n + 1000):
        if len(out) == n:
            break
        key, fact, false_fact, q, ta, fa = _fact(rng)
        slots = dict(
            fact=fact, false_fact=false_fact, fact_lc=_lc(fact, key), false_fact_lc=_lc(false_fact, key),
            question=q, true_answer=ta, false_answer=fa, name=_name(rng),
            thing=rng.choice(["vase", "window", "lamp", "printer", "mug", "chair"]),
            item=rng.choice(_ITEMS), topic=rng.choice(TOPICS), aspect=rng.choice(_ASPECTS),
            movie=f"{rng.choice(_MOVIE_A)} {rng.choice(_MOVIE_B)}", pos=rng.choice(_POS_ADJ),
            neg=rng.choice(_NEG_ADJ), request=rng.choice(_REQUESTS),
        )
        pos, neg = rng.choice(_PAIR_TEMPLATES[concept])
        pair = (pos.format(**slots), neg.format(**slots))
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    if len(out) < n:
        raise ValueError(f"concept {concept!r} has only {len(out)} distinct pairs; ask for fewer than n={n}")
    return out


def ccs_pairs(task: str, n: int, seed: int = 0, split: str = "train") -> list[tuple[str, str, int]]:
    """CCS contrast pairs (Burns et al.): (prompt + " Yes", prompt + " No", label) per item.

    label 1 means the " Yes" side is the right one. Tasks: "sentiment", "truth" (templates.CCS_TEMPLATES).
    """
    template = ccs_template(task)
    out = []
    for item in synthetic_task(task, n, seed=seed, split=split):
        p = template.format(text=item["text"])
        out.append((p + " Yes", p + " No", int(item["label"])))
    return out
