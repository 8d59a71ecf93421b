"""Exact resume by replay, checked: a running hash of the token batches a run consumes.

A resumed run re-streams its data from the start and skips the forwards its checkpoint already
trained on (capture.residual_rows' `skip`: the batches are re-read and re-tokenized, never run
through the model). That is exact only if the stream is the same one, and its order depends on
things a new session can change: the `datasets` version (its streaming shuffle changed between
releases), the dataset's Hub revision, the tokenizer, the data code. So every checkpoint records
the hash chain of the token batches consumed so far (`StreamLedger`: h_n = sha256(h_{n-1} || batch
n's shape and token ids)), with the stream's identity (`stream_identity`: the Hub revision of each
`hf:` source, pinned at the run's start and reused by every resume, the `datasets` version and a
hash of the tokenizer). On resume the chain is recomputed over the skipped batches and compared at
the checkpoint's position: a different stream stops the run with one line naming what changed,
unless the user allows it (`allow_change`), and then the change is recorded and reported. The
replay's time is measured and printed.

Why replay rather than positioning the stream: `datasets`' IterableDataset.state_dict() /
load_state_dict() can restart a stream at its shard and example without re-reading, but it is exact
only for a stream read in order: the HF sources here shuffle through a 10k-document buffer, which
`datasets` does not save (on load it warns "Loading a state dict of a shuffle buffer of a dataset
without the buffer content" and refills it, so the examples after the resume point differ); and the
batches also depend on the mixer's random draws and the packer's partial context. None of our
streams meets that condition, so the trainer always replays, and the hash proves the replay exact.
"""
from __future__ import annotations

import collections
import hashlib
import json
import time
from typing import Iterable, Iterator, Mapping

import torch

GENESIS = hashlib.sha256(b"sae-ladder token stream v1").hexdigest()  # h_0: the chain before any batch
HISTORY = 4096  # digests kept for lookup: a checkpoint asks for one a few batches behind the reader


class StreamChanged(ValueError):
    """The replayed stream is not the one the checkpoint trained on; str() is one line."""


def batch_digest(previous: str, batch) -> str:
    """h_n from h_{n-1} and batch n (a LongTensor of token ids, or a mapping holding input_ids)."""
    ids = batch["input_ids"] if isinstance(batch, Mapping) else batch
    ids = ids.detach().to("cpu", torch.int64).contiguous()
    h = hashlib.sha256(bytes.fromhex(previous))
    h.update(json.dumps(list(ids.shape)).encode())
    h.update(ids.numpy().astype("<i8").tobytes())
    return h.hexdigest()


def tokenizer_hash(tokenizer) -> str:
    """A short hash of what tokenizes: the class, its vocabulary and rules (a fast tokenizer's
    serialised pipeline, less its padding/truncation state, which calls change), the special tokens
    and the add-BOS/EOS flags."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("padding", None)
        spec.pop("truncation", None)
    else:
        spec = sorted(tokenizer.get_vocab().items())
    special = {k: str(v) for k, v in sorted((getattr(tokenizer, "special_tokens_map", None) or {}).items())}
    flags = {name: getattr(tokenizer, name, None) for name in ("add_bos_token", "add_eos_token")}
    text = json.dumps([type(tokenizer).__name__, spec, special, flags], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_revision(path: str) -> str | None:
    """The commit a Hub dataset's default branch points at now, or None (offline, unreachable, a
    local dataset): the revision a run pins so that every later session streams the same files."""
    try:
        from huggingface_hub import HfApi, constants

        if constants.HF_HUB_OFFLINE:
            return None
        from .. import runtime

        token = runtime.hf_token()
        return HfApi().dataset_info(path, token=str(token) if token else None, timeout=15).sha
    except Exception:  # noqa: BLE001 - unpinned: the hash still checks the stream on resume
        return None


def stream_identity(sources, tokenizer, pinned: Mapping[str, str | None] | None = None) -> dict:
    """What the token stream depends on beyond the run's settings: {"revisions": {source: commit or
    None}, "datasets": version or None, "tokenizer": hash}. `sources` are data.TextSource (kind,
    path, describe()); an hf source's revision is `pinned`'s (the first session's) when given,
    else resolved now."""
    revisions = {}
    for source in sources:
        if source.kind == "hf":
            name = source.describe()
            revisions[name] = (pinned or {}).get(name) or resolve_revision(source.path)
    try:  # the installed version, without importing datasets (a run on local or synthetic data never does)
        from importlib.metadata import version as installed

        version = installed("datasets")
    except Exception:  # noqa: BLE001 - PackageNotFoundError: not installed
        version = None
    return {"revisions": revisions, "datasets": version, "tokenizer": tokenizer_hash(tokenizer)}


def describe_changes(then: Mapping | None, now: Mapping) -> str:
    """The parts of a stream's identity that differ between a checkpoint's and this run's, in words."""
    if not then:
        return "the checkpoint did not record what its stream depended on"
    changes = []
    if then.get("datasets") != now.get("datasets"):
        changes.append(f"datasets {then.get('datasets')} -> {now.get('datasets')}")
    if then.get("tokenizer") != now.get("tokenizer"):
        changes.append("the tokenizer changed")
    for name in sorted(set(then.get("revisions", {})) | set(now.get("revisions", {}))):
        a, b = then.get("revisions", {}).get(name), now.get("revisions", {}).get(name)
        if a != b:
            changes.append(f"{name} revision {a or 'unpinned'} -> {b or 'unpinned'}")
    return "; ".join(changes) or "nothing recorded changed (the data code or a local file did)"


class StreamLedger:
    """The hash chain of the token batches a run consumes, checked against a checkpoint's on resume.

    `track(batches, skip)` wraps the token stream (every rank reads all of it under torchrun) and
    hashes each batch as it is taken; when `skip` (the checkpoint's forwards) batches are in, the
    chain is compared with `expected` (the checkpoint's "stream" record). `state_at(n)` is what a
    checkpoint written after n forwards records. `allow_change`: a mismatch is recorded in
    `changes` and the run goes on (the next checkpoints chain over the new stream) instead of
    stopping. `replay` holds the last resume's measured replay (forwards, seconds, verified)."""

    def __init__(self, identity: dict, expected: Mapping | None = None, *, allow_change: bool = False,
                 speak: bool = True, clock=time.perf_counter):
        self.identity, self.expected, self.allow_change, self.speak = identity, expected, allow_change, speak
        self.changes: list[dict] = list((expected or {}).get("changes", []))
        self.replay: dict | None = None
        self.clock = clock
        self._history: collections.deque = collections.deque(maxlen=HISTORY)
        self._count, self._digest = 0, GENESIS

    def track(self, batches: Iterable, skip: int = 0) -> Iterator:
        """The batches, hashed on the way; the chain restarts (the stream replays from its start)."""
        self._history.clear()
        self._count, self._digest = 0, GENESIS
        self._history.append((0, GENESIS))
        started = self.clock()
        for batch in batches:
            self._digest = batch_digest(self._digest, batch)
            self._count += 1
            self._history.append((self._count, self._digest))
            if skip and self._count == skip:
                self._check(skip, self.clock() - started)
            yield batch
        if skip and self._count < skip:
            self._check(skip, self.clock() - started)

    def state_at(self, forwards: int) -> dict:
        """The checkpoint record after `forwards` batches: position, chain digest, identity, changes."""
        for count, digest in reversed(self._history):
            if count == forwards:
                return {"forwards": forwards, "sha256": digest, "identity": self.identity,
                        "changes": list(self.changes)}
        raise RuntimeError(f"no digest for {forwards} forwards (have {self._history[0][0]}..{self._count})")

    def _check(self, skip: int, seconds: float) -> None:
        expected = self.expected or {}
        verified = None
        if expected.get("forwards") == skip and expected.get("sha256"):
            verified = self._count == skip and self._digest == expected["sha256"]
        self.replay = {"forwards": skip, "seconds": round(seconds, 3), "verified": verified}
        if verified is None and skip == 0:
            return
        if verified is None and expected.get("unhashed"):  # a layout that kept no hash: legacy.py
            self._unhashed(skip, expected["unhashed"])
            return
        if verified is None:  # written before checkpoints recorded the stream, by a core whose stream differs
            what = "the checkpoint predates the stream hash, so its place in the stream cannot be checked"
            self._refuse_or_record(
                skip, what, "an earlier core's stream", None,
                refusal=f"This checkpoint was written by an earlier version of the core ({what}), and the token "
                "stream has changed since then (mix weights in tokens, the context shuffle window, held-out "
                "documents routed away from training): resuming would train some documents twice and others "
                "never. Start afresh in a new CHECKPOINT_DIR (or RUN_NAME), or set ALLOW_STREAM_CHANGE = True "
                "(allow_stream_change) to go on from it with the new stream (recorded in the report's 'resume').",
                warning=f"WARNING: {what}; going on with this core's stream as allowed (recorded in the report's "
                "'resume'): the run is no longer the one an uninterrupted run would give.")
            return
        if verified:
            if self.speak:
                print(f"Replayed {skip:,} token batches in {seconds:.1f} s (re-read and re-tokenized, no model "
                      "forward): they hash as the checkpoint recorded, so the resume is exact.")
            return
        what = (f"the stream ended after {self._count:,} batches, the checkpoint had consumed {skip:,}"
                if self._count < skip else f"its first {skip:,} token batches hash differently from the ones "
                                           "the checkpoint trained on")
        why = describe_changes(expected.get("identity"), self.identity)
        self._refuse_or_record(
            skip, what, why, expected.get("identity"),
            refusal=f"The data stream changed since the checkpoint ({what}; {why}): resuming would train some "
            "documents twice and others never. Restore the same data and library versions, or set "
            "ALLOW_STREAM_CHANGE = True (allow_stream_change) to go on with the new stream "
            "(recorded in the report's 'resume'), or start afresh in a new CHECKPOINT_DIR.",
            warning=f"WARNING: the data stream changed since the checkpoint ({what}; {why}); going on with the new "
            "stream as allowed (recorded in the report's 'resume'): the run is no longer the one an "
            "uninterrupted run would give.")

    def _unhashed(self, skip: int, writer: str) -> None:
        """A checkpoint whose writer kept no hash of its stream (though that stream may be today's): its
        replay cannot be checked, so it is refused in one line unless allowed, then recorded."""
        what = f"it was written by {writer}, which kept no hash of the token stream"
        self._refuse_or_record(
            skip, what, "no stream hash to check", None,
            refusal=f"This checkpoint cannot be checked against the data: {what}. If the stream changed since (the "
            "datasets version, a dataset's Hub revision, the tokenizer), resuming would train some documents "
            "twice and others never. Set ALLOW_STREAM_CHANGE = True (allow_stream_change) to go on from it "
            "(recorded in the report's 'resume'), or start afresh in a new CHECKPOINT_DIR (or RUN_NAME).",
            warning=f"WARNING: {what}; going on as allowed (recorded in the report's 'resume'): the replayed "
            "batches are the checkpoint's only if the stream did not change since.")

    def _refuse_or_record(self, skip: int, what: str, why: str, identity_then, *, refusal: str, warning: str) -> None:
        """A replay that cannot be trusted: refused in one line (`refusal`) unless allow_change, else recorded
        in `changes` (the checkpoint's record and the run report's 'resume') and said once (`warning`)."""
        if not self.allow_change:
            raise StreamChanged(refusal)
        self.changes.append({"at_forwards": skip, "found": what, "why": why, "identity_then": identity_then,
                             "identity_now": self.identity})
        if self.speak:
            print(warning)
