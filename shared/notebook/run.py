"""A notebook run: `run = start(P)` in the first code cell after the parameters are checked
(`parameters.check_parameters`), before any model loads: it makes OUTPUT_DIR, seeds everything and says
where it runs. Then `run.load_model()` loads MODEL_ID with its one-line summary, `run.save_figure(fig,
name)` saves and shows a figure, and `run.write_report(name, payload)` writes a JSON report stamped under
"run" with the notebook, model, seed, parameters (never a secret) and the vendored core's hash.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .parameters import Parameters, check_parameters

# ------------------------------------------------------------------------------------ set-up and output

FIGURE_DPI = 120  # every saved figure: this dpi, tight bounding box
_SECRET_PART = re.compile(r"(^|_)(TOKEN|KEY|SECRET|PASSWORD)(_|$)")  # HF_TOKEN, API_KEY; not TOTAL_TOKENS


def core_hash() -> tuple[str, str]:
    """(hash, where): the vendored core's content hash as the notebook's activation cell computed it
    ("vendored"), or, run from a checkout, the same hash over every module of shared/ ("checkout")."""
    import shared

    stamped = getattr(shared, "CORE_HASH", None)
    if stamped:
        return stamped, "vendored"
    root = Path(shared.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode("utf-8") + b"\0" + path.read_text(encoding="utf-8").encode("utf-8") + b"\0")
    return h.hexdigest()[:16], "checkout"


def reportable_parameters(params: dict) -> dict:
    """The parameters as set (`Parameters.given`: the names its rule families checked), for a report: never
    a secret's value."""
    from ..runtime import Secret

    return {k: v for k, v in params.items() if not _SECRET_PART.search(k) and not isinstance(v, Secret)}


@dataclass
class Run:
    """One notebook run, from `start`: its checked parameters, output folder, seed and identity."""

    params: Parameters
    raw: dict  # the parameters as the user set them (JSON-able), for the report
    out_dir: Path
    seed: int
    notebook: str
    model_id: str | None = None  # set by load_model
    extra: dict = field(default_factory=dict)

    def load_model(self, **kw):
        """(model, tokenizer) for MODEL_ID on MODEL_DEVICE or DEVICE with MODEL_DTYPE, and its summary line."""
        from ..model import loading

        P = self.params
        kw.setdefault("device", P.get("MODEL_DEVICE", P.get("DEVICE")))
        kw.setdefault("dtype", P.get("MODEL_DTYPE"))
        model, tokenizer = loading.load_model(P.MODEL_ID, **kw)
        self.model_id = P.MODEL_ID
        print(loading.describe(model, P.MODEL_ID))
        return model, tokenizer

    def save_figure(self, fig, name: str) -> Path:
        """Save `fig` (a Figure; or pyplot/None for the current figure) as OUTPUT_DIR/name, then show it."""
        import matplotlib.pyplot as plt

        if fig is None or fig is plt:
            fig = plt.gcf()
        path = self.out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
        plt.show()
        return path

    def stamp(self) -> dict:
        """What every report records about the run that wrote it."""
        digest, where = core_hash()
        model = self.model_id or self.raw.get("MODEL_ID")
        return {"notebook": self.notebook, **({"model": model} if model else {}), "seed": self.seed,
                "parameters": reportable_parameters(self.raw), "core_hash": digest, "core": where,
                "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def write_report(self, name: str, payload: dict) -> Path:
        """Write `payload` as OUTPUT_DIR/name (JSON) with the run's stamp added under "run"; its keys stay as given."""
        if "run" in payload:
            raise ValueError(f"report {name}: the key 'run' is the stamp's; rename that field")
        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**payload, "run": self.stamp()}, indent=1, default=str))
        print(f"wrote {path}")
        return path


def start(params: dict, *families) -> Run:
    """Set a notebook up: check the parameters (`check_parameters`' result, or globals() to check here by
    `families`' rules), make OUTPUT_DIR, seed Python/NumPy/torch with SEED, and print where it runs."""
    import shared

    from .. import runtime

    checked = params if isinstance(params, Parameters) else check_parameters(params, *families)
    raw = checked.given
    out_dir = Path(checked["OUTPUT_DIR"])
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = int(checked.get("SEED", 0))
    runtime.seed_everything(seed)
    name = getattr(shared, "NOTEBOOK_ID", None) or out_dir.name  # set by the rendered notebook
    digest, where = core_hash()
    print(f"{name} on {runtime.platform()}: seed {seed}, outputs in {out_dir}, core {digest} ({where})")
    for g in runtime.gpu_info():
        print(f"  cuda:{g.index} {g.name}: {g.free_gb:.1f} of {g.total_gb:.1f} GiB free, bf16={g.bf16}")
    return Run(params=checked, raw=raw, out_dir=out_dir, seed=seed, notebook=name)

