"""Every notebook's parameters checked up front, in the first cell: `check_parameters(globals(), common,
data, ...)` checks each parameter by the rule of its NAME in the rule families the notebook names (the
modules of `notebook.rules`: one family per concept, so LAYER or BATCH_SIZE mean the same everywhere); a
bad value stops the notebook with a one-line `ParameterError` naming the parameter, the value and what to
change. It returns the values normalised (`Parameters`: layers as non-negative indices, devices resolved,
dtypes as torch dtypes). A rendered notebook also names its own parameters (NOTEBOOK_PARAMETERS, written by
build_notebooks.py): any other upper-case setting (papermill's `-p LAYRE 12`, a parameter of another
notebook) stops there too, in one line that names the parameter meant.

This module is the engine and the generic rule builders (a whole number, a choice, layers, a device, ...);
the rules themselves live beside the concept they check, in `notebook.rules`. A notebook vendors only the
families it imports, so 19's first cell carries no circuit or SAE-training rules.
"""
from __future__ import annotations

import difflib
import importlib
import numbers
import os
import pkgutil
import re
from types import ModuleType
from typing import Any, Callable

from .. import runtime
from ..model import layout, loading
from . import rules as _rules_package


class ParameterError(ValueError):
    """A notebook parameter with a bad value; the message is one line: NAME = value: what to change."""


class Parameters(dict):
    """The checked, normalised parameters by name; also readable as attributes (P.LAYER).

    `given` holds the same parameters as the user set them (what reports record)."""

    def __init__(self, *args, given: dict | None = None, **kw):
        super().__init__(*args, **kw)
        self.given = dict(given or {})

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}; this notebook has {', '.join(self)}") from None

    def one_layer(self, name: str = "LAYER") -> int:
        """The one block index that `name` holds, for a notebook that reads a single layer."""
        layers = self[name]
        if len(layers) != 1:
            raise ParameterError(f"{name} = {self.given.get(name, layers)!r}: this notebook reads one layer; "
                                 "give one block index")
        return layers[0]


class Context:
    """What a rule may consult: every raw parameter, the name being checked, and the model's layer count
    read from its config."""

    def __init__(self, params: dict):
        self.params = params
        self.name = ""  # the parameter being checked
        self._n_layers: int | None = None

    def n_layers(self) -> int:
        if self._n_layers is None:
            self._n_layers = layout.n_layers(loading.load_config(self.params["MODEL_ID"]))
        return self._n_layers


# A rule: (the raw value, the Context) -> the normalised value, or a ValueError / TypeError / KeyError whose
# message says what is wrong (check_parameters prefixes "NAME = value: ").
Rule = Callable[[Any, Context], Any]


# ------------------------------------------------------------------------------------ rule builders

def whole(minimum: int | None = None, hint: str = "") -> Rule:
    """A whole number (an int, or a float with no fraction), at least `minimum`."""
    def rule(v, ctx):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or float(v) != int(v):
            raise ValueError(f"must be a whole number{hint}")
        v = int(v)
        if minimum is not None and v < minimum:
            raise ValueError(f"must be >= {minimum}{hint}")
        return v
    return rule


POSITIVE = whole(1)
NON_NEGATIVE = whole(0)


def number(low: float = 0.0, *, open_low: bool = True, high: float | None = None, open_high: bool = True,
           hint: str = "") -> Rule:
    """A real number above `low` (or at it, open_low=False) and below `high` (or at it), as a float."""
    def rule(v, ctx):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != v:
            raise ValueError(f"must be a number{hint}")
        if (v <= low if open_low else v < low) or (high is not None and (v >= high if open_high else v > high)):
            lo = f"{'>' if open_low else '>='} {low:g}"
            hi = "" if high is None else f" and {'<' if open_high else '<='} {high:g}"
            raise ValueError(f"must be {lo}{hi}{hint}")
        return float(v)
    return rule


def choice(*options) -> Rule:
    """One of `options`, as given."""
    def rule(v, ctx):
        if v not in options:
            raise ValueError(f"must be one of {', '.join(map(repr, options))}")
        return v
    return rule


def flag(v, ctx):
    """True or False (not 1, not "yes")."""
    if not isinstance(v, bool):
        raise ValueError("must be True or False")
    return v


def text(empty_ok: bool = False) -> Rule:
    """A string, non-blank unless empty_ok."""
    def rule(v, ctx):
        if not isinstance(v, str) or (not empty_ok and not v.strip()):
            raise ValueError("must be a non-empty string" if not empty_ok else "must be a string")
        return v
    return rule


def text_list(v, ctx):
    """A non-empty list of non-blank strings (prompts)."""
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(s, str) and s.strip() for s in v):
        raise ValueError('must be a non-empty list of non-empty strings, e.g. ["The cat", "The dog"]')
    return list(v)


def number_list(v, ctx):
    """A non-empty list of numbers, as floats."""
    if (not isinstance(v, (list, tuple)) or not v
            or not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in v)):
        raise ValueError("must be a non-empty list of numbers, e.g. [-4, 0, 4]")
    return [float(x) for x in v]


def string_pairs(v, ctx):
    """A list of (positive, negative) string pairs, as tuples; [] is allowed."""
    ok = isinstance(v, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(s, str) and s.strip() for s in p) for p in v)
    if not ok:
        raise ValueError('must be a list of (positive, negative) string pairs, or [] to generate them')
    return [tuple(p) for p in v]


def layers(allow_empty: bool = False) -> Rule:
    """A "which layers" spec (layout.resolve_layers) read against MODEL_ID's config, as sorted block indices."""
    def rule(v, ctx):
        return sorted(layout.resolve_layers(v, ctx.n_layers(), allow_empty=allow_empty, name=ctx.name))
    return rule


def device(auto: str, empty_ok: bool = False) -> Rule:
    """A device name resolved by runtime.resolve_device ("auto" picks the `auto` GPU); '' -> None if empty_ok."""
    def rule(v, ctx):
        if not isinstance(v, str) or (not v.strip() and not empty_ok):
            raise ValueError("must be a device name such as 'auto', 'cpu' or 'cuda:0'")
        if not v.strip():
            return None
        return str(runtime.resolve_device(v, auto=auto))
    return rule


def repo_id(v: str) -> str:
    """v, once huggingface_hub accepts it as a repo id (its HFValidationError, a ValueError, says why not)."""
    from huggingface_hub.utils import validate_repo_id

    validate_repo_id(v)
    return v


def folder(v, ctx):
    """A folder path (it need not exist yet; an existing file is refused)."""
    text()(v, ctx)
    if os.path.isfile(v):
        raise ValueError("is an existing file; name a folder")
    return v


def distinct(items: list, what: str) -> list:
    """items, or a one-line error when one appears twice."""
    if len(set(items)) != len(items):
        raise ValueError(f"lists a {what} twice ({items}): give each {what} once")
    return items


def short(value) -> str:
    """A value as an error message shows it: its repr, cut to 60 characters."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


# ------------------------------------------------------------------------------------ the check

_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
# A rendered notebook's global: the names its parameters cell assigns (build_notebooks.py writes it in the set-up).
DECLARED = "NOTEBOOK_PARAMETERS"
# Upper-case names a rendered notebook binds before its check that are no parameters: the install cell's
# REQUIREMENTS and the vendored core's set-up (tests/test_parameters.py keeps this in step with build_notebooks.py).
SETUP_NAMES = frozenset({"REQUIREMENTS", "CORE_HASH", "NOTEBOOK_ID", DECLARED, "CORE_DIR"})
# What a parameter's value can be (a parameters cell's literals; what papermill injects): a name bound to anything
# else (a module, the checked P of an earlier run, a Secret) is no setting.
_SETTING_TYPES = (str, int, float, bool, type(None), list, tuple, dict)
_SECRET = re.compile(r"TOKEN|KEY|SECRET|PASSWORD")  # an undeclared name like these: its value is not shown


def family_name(family: ModuleType) -> str:
    """A rule family's name: its module's ("shared.notebook.rules.circuits" -> "circuits")."""
    return family.__name__.rsplit(".", 1)[-1]


def every_family() -> list[ModuleType]:
    """Every rule family present (in a checkout all of them; in a rendered notebook the ones it vendored),
    `common` first: MODEL_ID is checked before the rules that read its config."""
    names = sorted((m.name for m in pkgutil.iter_modules(_rules_package.__path__)), key=lambda n: (n != "common", n))
    return [importlib.import_module(f"{_rules_package.__name__}.{name}") for name in names]


def _rules_of(families) -> dict[str, Rule]:
    """NAME -> rule over the families, in their order (each family's rules in its table's order)."""
    merged: dict[str, Rule] = {}
    for family in families:
        merged.update(family.RULES)
    return merged


def _unnamed_family_error(params: dict, rules: dict, families) -> ParameterError | None:
    """A parameter that no named family checks but another family does: the notebook forgot to name that
    family (the error names it). Upper-case names no family knows (REQUIREMENTS, ...) are not parameters."""
    named = [family_name(f) for f in families]
    unchecked = [name for name in params if _NAME.fullmatch(name) and name not in rules]
    others = [f for f in every_family() if family_name(f) not in named] if unchecked else []
    for name in unchecked:
        knowers = [family_name(f) for f in others if name in f.RULES]
        if knowers:
            return ParameterError(f"{name} = {short(params[name])}: no rule family this notebook names "
                                  f"({', '.join(named)}) checks {name}; the {' and '.join(knowers)} family does: "
                                  "add it to check_parameters")
    return None


def closest(name: str, names, cutoff: float = 0.6) -> str | None:
    """The one of `names` that `name` most likely misspells (difflib ratio >= cutoff), or None when none is."""
    found = difflib.get_close_matches(name, list(names), n=1, cutoff=cutoff)
    return found[0] if found else None


# On a re-run in the same kernel, a name this close to a parameter (difflib ratio) is still taken for its typo.
RERUN_TYPO_RATIO = 0.8


def _undeclared_error(params: dict, declared) -> ParameterError | None:
    """An upper-case setting that the notebook's parameters cell does not assign (a typo, a parameter of another
    notebook): one line naming it and, where one is close, the parameter meant.

    On a first run (papermill's, or Run all in a fresh kernel) the globals hold only what ran above the check, so
    every such name is refused. On a re-run in the same kernel (the checked P of the run before is there) they
    also hold what the user's own cells below bound: only a near-certain typo of a parameter is refused, any
    other name is said to be ignored, in one printed line."""
    rerun = any(isinstance(value, Parameters) for value in params.values())
    for name, value in params.items():
        if (_NAME.fullmatch(name) and name not in declared and name not in SETUP_NAMES
                and type(value) in _SETTING_TYPES):
            shown = "***" if _SECRET.search(name) else short(value)
            meant = closest(name, declared)
            if rerun and closest(name, declared, RERUN_TYPO_RATIO) is None:
                print(f"{name} is not a parameter of this notebook: ignored (a name a later cell bound on the run "
                      "before?)" + (f"; did you mean {meant}?" if meant else ""))
                continue
            hint = f"did you mean {meant}?" if meant else f"its parameters are {', '.join(declared)}"
            return ParameterError(f"{name} = {shown}: not a parameter of this notebook; {hint}")
    return None


def check_parameters(params: dict, *families: ModuleType, declared=None) -> Parameters:
    """Check every parameter in `params` (a notebook's globals(), or a dict) by the rules of `families`
    (modules of `notebook.rules`, `common` first; none given: every family, as the command line checks).

    Returns the normalised values by name. The first bad value raises a one-line ParameterError:
    "NAME = value: what is wrong and what to set"; so does a parameter that another family than the named
    ones checks, and an upper-case setting that is not one of the notebook's `declared` parameter names
    (default: params' NOTEBOOK_PARAMETERS, which a rendered notebook sets; none: not checked). Other upper-case
    names no family knows are skipped (tests/test_parameters.py makes sure every notebook's parameters have a
    rule in the families it names).
    """
    if declared is None:
        declared = params.get(DECLARED)
    if declared is not None:
        error = _undeclared_error(params, tuple(declared))
        if error:
            raise error
    rules = _rules_of(families or every_family())
    if families:
        error = _unnamed_family_error(params, rules, families)
        if error:
            raise error
    raw = {k: v for k, v in params.items() if _NAME.fullmatch(k) and k in rules}
    ctx = Context(raw)
    out = Parameters(given=raw)
    order = list(rules)
    for name in sorted(raw, key=order.index):
        ctx.name = name
        try:
            out[name] = rules[name](raw[name], ctx)
        except (ValueError, TypeError, KeyError) as e:
            reason = " ".join(str(e).split())
            error = ParameterError(f"{name} = {short(raw[name])}: {reason}")
        else:
            continue
        raise error from None
    return out
