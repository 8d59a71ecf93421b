"""The models a tier trains and their recipes: each default model's shape (from its real config,
checked in tests/test_planning.py), each tier's recipe as its catalog notebook runs it, and which tier
notebooks are released today (read from the generated catalog)."""

from __future__ import annotations

from dataclasses import dataclass

from ..notebook.catalog import NOTEBOOKS


@dataclass(frozen=True)
class ModelShape:
    """A default model's shape, from its config (tests/data/models/<org>__<name>/config.json, checked there)."""

    model_id: str
    n_params: float  # parameters of the model transformers loads (text-only for the Qwen hybrids), embeddings in
    n_layers: int
    d_model: int
    vocab: int
    tied: bool  # input and output embeddings shared
    n_heads: int
    kv_dim: int  # num_key_value_heads * head_dim: one of K or V per token and layer in a KV cache
    eager_attention: bool = False  # Gemma-2 soft-capping: the [heads, T, T] scores are materialised
    logit_softcap: bool = False  # Gemma-2's final soft-cap: one more [batch, seq, vocab] temporary
    checkpoint_bytes: int = 2  # bytes per parameter of the Hub checkpoint (what a first run downloads)
    # forward speed relative to the GPU class's MFU, where measured otherwise: Qwen3.5-4B's Gated-DeltaNet
    # blocks run transformers' plain-PyTorch delta rule (no flash-linear-attention) at 0.68 of it (H200)
    fwd_mfu_scale: float = 1.0

    @property
    def embed_params(self) -> float:
        return self.vocab * self.d_model * (1 if self.tied else 2)

    @property
    def block_params(self) -> float:
        """Parameters of one decoder block (norms included), from the total minus the embeddings."""
        return (self.n_params - self.embed_params) / self.n_layers


SHAPES: dict[str, ModelShape] = {
    s.model_id: s
    for s in (
        ModelShape("google/gemma-2-2b", 2.6143e9, 26, 2304, 256000, True, 8, 4 * 256, eager_attention=True,
                   logit_softcap=True, checkpoint_bytes=4),  # its Hub weights are float32
        ModelShape("google/gemma-2-2b-it", 2.6143e9, 26, 2304, 256000, True, 8, 4 * 256, eager_attention=True,
                   logit_softcap=True),
        ModelShape("microsoft/Phi-3-mini-4k-instruct", 3.8211e9, 32, 3072, 32064, False, 32, 32 * 96),
        ModelShape("Qwen/Qwen3.5-4B", 4.2058e9, 32, 2560, 248320, True, 16, 4 * 256, fwd_mfu_scale=0.68),
        ModelShape("meta-llama/Llama-3.1-8B", 8.0303e9, 32, 4096, 128256, False, 32, 8 * 128),
        ModelShape("mistralai/Mistral-7B-v0.3", 7.2480e9, 32, 4096, 32768, False, 32, 8 * 128),
        ModelShape("Qwen/Qwen3.6-27B", 26.896e9, 64, 5120, 248320, False, 24, 4 * 256),
        ModelShape("gpt2", 0.12444e9, 12, 768, 50257, True, 12, 768, checkpoint_bytes=4),
        ModelShape("EleutherAI/pythia-70m-deduped", 0.07043e9, 6, 512, 50304, False, 8, 512),
    )
}


@dataclass(frozen=True)
class ModelSpec:
    """A tier recipe: a model and the parameters its catalog notebook trains with (tests/test_planning.py
    checks every field against notebooks_src/catalog.toml, so notebook 07 recommends what the notebook runs)."""

    shape: ModelShape
    tier: int
    notebook: str
    layers: tuple[int, ...]  # LAYER
    d_sae: int  # D_SAE
    k: int  # K
    ctx: int = 1024  # CONTEXT_LEN
    sae_batch_tokens: int = 4096  # BATCH_TOKENS
    fwd_batch_seqs: int = 8  # MODEL_BATCH_SIZE
    block_batches: int | str = 32  # BLOCK_BATCHES: forwards per shuffled block, or "auto" (from free memory)
    total_tokens: int = 50_000_000  # TOTAL_TOKENS
    val_tokens: int = 500_000  # VAL_TOKENS
    placement: str = "auto"  # "auto": one GPU, or split over two (model cuda:0, SAE cuda:1); "spread"

    def __getattr__(self, name):  # the shape's fields read as the recipe's own (m.d_model, m.n_params, ...)
        if name == "shape":
            raise AttributeError(name)
        return getattr(self.shape, name)

    @property
    def model_id(self) -> str:
        return self.shape.model_id

    def default_layers(self) -> tuple[int, ...]:
        return self.layers

    def buffer_rows(self, fwd_batch_seqs: int | None = None) -> int | None:
        """Rows of the activation buffer for an integer BLOCK_BATCHES (None for "auto")."""
        if not isinstance(self.block_batches, int):
            return None
        return self.block_batches * (fwd_batch_seqs or self.fwd_batch_seqs) * self.ctx + self.sae_batch_tokens


MODELS: dict[str, ModelSpec] = {
    m.model_id: m
    for m in (
        ModelSpec(SHAPES["google/gemma-2-2b"], 1, "01_hobbyist_gemma2_2b_colab", (12,), 16384, 64),
        ModelSpec(SHAPES["microsoft/Phi-3-mini-4k-instruct"], 1, "10_hobbyist_phi3_mini_colab", (16,), 24576, 64,
                  fwd_batch_seqs=4, block_batches=16),
        ModelSpec(SHAPES["Qwen/Qwen3.5-4B"], 2, "02_explorer_qwen35_4b_kaggle", (18,), 40960, 128,
                  fwd_batch_seqs=4, block_batches="auto", total_tokens=150_000_000),  # hybrid: 24 DeltaNet + 8 attention
        ModelSpec(SHAPES["meta-llama/Llama-3.1-8B"], 2, "08_explorer_llama3_8b_kaggle", (16,), 32768, 64,
                  block_batches=8, total_tokens=100_000_000, placement="spread"),
        ModelSpec(SHAPES["mistralai/Mistral-7B-v0.3"], 2, "09_explorer_mistral_7b_kaggle", (16,), 32768, 64,
                  block_batches=8, total_tokens=100_000_000, placement="spread"),
        ModelSpec(SHAPES["Qwen/Qwen3.6-27B"], 3, "03_papergrade_qwen36_27b_cloud", (11, 31, 55), 65536, 128,
                  fwd_batch_seqs=2, block_batches="auto", total_tokens=200_000_000, val_tokens=1_000_000),
    )
}


# The tier notebooks of the catalog that exist today (read from the generated catalog module). Every
# tier notebook renders from the same recipe source, so a tier whose own notebook is not out yet
# runs in a released one with its parameters.
TIER_SOURCE = "tier_recipe.py"
RELEASED_NOTEBOOKS = tuple(n["id"] for n in NOTEBOOKS if n["source"] == TIER_SOURCE)


def notebook_to_open(notebook: str) -> str:
    """`notebook` if it is released, else the first released tier notebook (the same recipe source)."""
    return notebook if notebook in RELEASED_NOTEBOOKS else RELEASED_NOTEBOOKS[0]
