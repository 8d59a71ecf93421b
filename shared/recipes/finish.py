"""The end of a tier notebook's run, one function for the notebooks and `python -m shared.train` alike
(`validate_and_export`): validation on held-out tokens (val_report.json), every SAE exported in SAELens'
format with its model card and Neuronpedia metadata (export/), each export reloaded and checked against
the trained SAE, the upload when one is asked for (behind hub.guarded_upload), and run_report.json."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from ..data import packing
from ..evals import metrics
from ..model import capture, layout
from ..saes import export, load
from ..training import stream
from . import sessions, tier


@dataclass
class Finished:
    """What validate_and_export wrote and found, by layer (also in run_report.json)."""

    validation: dict  # evaluate_saes' report (val_report.json): "<layer>" -> metrics
    folders: dict  # layer -> its export folder
    reloads_identically: dict  # layer -> the reloaded export encodes as the trained SAE does
    uploads: dict  # "<layer>" -> the upload's entry; {} when no upload was asked for
    report: dict  # run_report.json


def validate_and_export(P: Mapping, run, cfg, model, tokenizer, result) -> Finished:
    """Validate, export, reload-check, upload (when HF_REPO or HF_USERNAME asks) and report a finished
    training run into run.out_dir. P: the checked tier parameters; run: notebook.run.start(P);
    cfg: tier.config_from_params(P, ...); result: trainer.train(cfg, model, tokenizer)."""
    val_batches = stream.validation_batches(cfg, tokenizer, P["VAL_TOKENS"], dataset=P["VAL_DATASET"] or None)
    sparsity: dict = {}
    report = metrics.evaluate_saes(model, tokenizer, result.saes, val_batches, sparsity=sparsity)
    print(metrics.summarize(report))
    data_name = tier.dataset_name(cfg)  # the source, or the mix's sources with their weights
    metrics.write_val_report(report, run.out_dir / "val_report.json", model=P["MODEL_ID"],
                              tokens_trained=result.tokens, val_dataset=P["VAL_DATASET"] or data_name)

    repo_id = sessions.export_repo(P["HF_REPO"], P.get("HF_USERNAME") or "", P["RUN_NAME"])  # None: no upload
    info = export.ExportInfo(model_name=P["MODEL_ID"], layers_path=layout.layers_path(model),
                             context_size=P["CONTEXT_LEN"], dataset_path=data_name, tokens_trained=result.tokens,
                             repo_id=repo_id, **packing.context_tokens(tokenizer).export_fields())
    folders = export.export_run(result.saes, run.out_dir / "export", info, report=report, sparsity=sparsity,
                                definitions=metrics.METRIC_DEFINITIONS)  # what each number of the model card means
    same = reloads_identically(model, result.saes, folders, val_batches[0][:1])
    for layer, folder in folders.items():
        print(f"export at {folder}; reloaded SAE encodes identically: {same[layer]}")
    uploads = export.upload_export(folders, repo_id, private=P["HF_PRIVATE"])  # never raises

    run_report = {
        "model": P["MODEL_ID"], "layers": list(cfg.layers), "d_model": layout.d_model(model),
        "d_sae": cfg.sae.d_sae, "k": cfg.sae.k, "dataset": list(cfg.dataset),
        "tokens_by_source": result.tokens_by_source, "mix_shares": stream.mix_shares(result.tokens_by_source),
        "tokens_trained": result.tokens, "steps": result.steps,
        "resumed_from": result.resumed_from, "checkpoint_dir": cfg.checkpoint_dir, "validation": report,
        "resume": result.resume,  # the stream's hash check and replay time, allowed changes, model dtypes
        "export": {str(layer): str(folder) for layer, folder in folders.items()},
        "export_reloads_identically": {str(layer): ok for layer, ok in same.items()},
        "hub": uploads,
    }
    run.write_report("run_report.json", run_report)
    return Finished(report, folders, same, uploads, run_report)


def reloads_identically(model, saes: Mapping, folders: Mapping[int, Path], tokens: torch.Tensor) -> dict:
    """layer -> whether the export folder, loaded back (saes.load.load_sae), encodes the model's
    activations on `tokens` as the trained SAE does (to 1e-5)."""
    acts = capture.capture_residuals(model, tokens.to(layout.model_device(model)), list(folders))
    same = {}
    for layer, folder in folders.items():
        trained = saes[layer]
        reloaded = load.load_sae(folder, d_in=layout.d_model(model), device=trained.device)  # trained stays put
        x = acts[layer][0].float().to(trained.device)
        same[layer] = torch.allclose(reloaded.encode(x), trained.encode(x), atol=1e-5)
    return same
