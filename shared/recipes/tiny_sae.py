"""A small TopK SAE trained and exported in about a minute on a CPU: what a smoke run, or a model with no
published SAE, uses in place of a real one (the notebooks' SAE = "train-tiny")."""
from __future__ import annotations

from pathlib import Path

from ..data.packing import context_tokens
from ..model.layout import d_model, layers_path
from ..saes.export import ExportInfo, export_run
from ..saes.topk import TopKConfig
from ..training.config import TrainConfig
from ..training.trainer import train


def train_tiny_sae(model, tokenizer, model_id: str, layer: int, dataset: str, folder: str | Path, *,
                   total_tokens: int = 20_000, d_sae: int | None = None, k: int = 8, context_len: int = 64,
                   seed: int = 0, progress: bool = False) -> Path:
    """Train a small TopK SAE (d_sae = 4 x d_model unless given) at `layer` on `dataset` in about a
    minute on a CPU, export it in SAELens format and return its folder, folder/blocks.<L>.hook_resid_post.
    What a smoke run, or a model with no published SAE, uses in place of a real one."""
    folder = Path(folder)
    sae_cfg = TopKConfig(d_sae=d_sae or 4 * d_model(model), k=k, dead_tokens_threshold=4000)
    cfg = TrainConfig(model_id=model_id, layers=(int(layer),), dataset=(dataset,), context_len=context_len,
                      sae=sae_cfg, total_tokens=total_tokens, batch_tokens=512, model_batch_size=8,
                      block_batches=8, warmup_steps=10, checkpoint_every_tokens=10 * total_tokens,
                      checkpoint_dir=str(folder / "checkpoints"), seed=seed)
    result = train(cfg, model, tokenizer, progress=progress)
    info = ExportInfo(model_name=model_id, layers_path=layers_path(model), context_size=context_len,
                      dataset_path=dataset, tokens_trained=result.tokens, **context_tokens(tokenizer).export_fields())
    return export_run(result.saes, folder, info)[int(layer)]
