"""A tiny GPT-2 whose answer flows through known components, set by hand: the circuit methods' ground truth.

Task: prompts such as "kq3x=" (letters around one digit, then "="); the answer is the digit ("3"), the
corrupt prompt has another digit at the same place. Two layers, four heads each:

- L0.mlp turns the digit's token embedding (one-hot E_d) into a value feature V_d at the digit's position;
- L1.h0 attends from "=" (query: the "seek" feature) to the digit (key: "is-digit"), with a saturated
  softmax (score ~20), and its OV writes V_d into E_d at the last position, which the unembedding reads.

Every other head and L1.mlp keeps random weights (active, small, task-irrelevant). All planted
directions are zero-mean (e_2k − e_2k+1) so LayerNorm's centring leaves them alone, and a large constant
"bias" direction keeps LayerNorm's scale nearly fixed. Used by circ-core's tests and by circ-acdc /
circ-sfc: `build_planted_model()`, `planted_pairs(tokenizer, n)`, `PLANTED_CIRCUIT`.
"""
from __future__ import annotations

import math
import random

import torch

PLANTED_CIRCUIT = ("L0.mlp", "L1.h0")  # the components the answer flows through
COPY_HEAD = (1, 0)  # (layer, head) of the copying head
PLANTED_MISS = "L0.h1"  # with planted_miss=True: a node AtP and AtP* both rank low, large exact effect
DIGITS = "0123456789"
LETTERS = "abcdefghjkmnpqrstuvwxyz"
_BIAS, _E, _IS_DIGIT, _SEEK, _V, _EQ = 0, 1, 11, 12, 13, 23  # feature indices (E and V take 10 each)
_B = 100.0  # size of the constant bias feature: LayerNorm's scale ~ 8/_B, nearly fixed


def _dir(k: int, d: int = 64) -> torch.Tensor:
    v = torch.zeros(d)
    v[2 * k], v[2 * k + 1] = 1 / math.sqrt(2), -1 / math.sqrt(2)
    return v


def build_planted_model(seed: int = 0, other_scale: float = 1.0, planted_miss: bool = False):
    """(model, tokenizer): the planted 2-layer GPT-2 on the byte-level tiny tokenizer, eval mode, no grads.
    other_scale multiplies the random weights of the components outside the circuit.

    planted_miss: "=" no longer carries the seek feature itself; head L0.h1 (uniform attention) brings it
    to the last position, where L1.h0's saturated query reads it. Zero-ablating L0.h1 leaves L1.h0 attending
    uniformly (a large exact effect), but the gradient through the saturated softmax is ~0, so AtP misses it,
    and so does AtP* (its QK fix recomputes the softmax for query and key nodes, not for what feeds them)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from shared.model.tiny import byte_tokenizer

    tok = byte_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=2, n_head=4, n_inner=128,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(cfg).eval()
    tr = model.transformer
    dh = 16
    with torch.no_grad():
        for block in tr.h:  # random components outside the circuit, at a chosen scale
            for mod in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                mod.weight.mul_(other_scale * 2.5)
        # token embeddings: the bias feature everywhere, digits one-hot in E plus is-digit, "=" seeks
        tr.wte.weight.zero_()
        tr.wte.weight[:] = _B * _dir(_BIAS)
        for i, ch in enumerate(DIGITS):
            t = tok.convert_tokens_to_ids(ch)
            tr.wte.weight[t] += _dir(_E + i) + _dir(_IS_DIGIT)
        tr.wte.weight[tok.convert_tokens_to_ids("=")] += _dir(_EQ if planted_miss else _SEEK)
        if planted_miss:  # L0.h1: uniform attention (q = k = 0); its value reads EQ, its output writes SEEK
            attn0 = tr.h[0].attn
            for s in (slice(dh, 2 * dh), slice(64 + dh, 64 + 2 * dh), slice(128 + dh, 128 + 2 * dh)):
                attn0.c_attn.weight[:, s] = 0
                attn0.c_attn.bias[s] = 0
            attn0.c_attn.weight[:, 128 + dh] = 0.1 * _B * _dir(_EQ)
            attn0.c_proj.weight[dh:2 * dh] = 0
            attn0.c_proj.weight[dh] = 7.5 * _dir(_SEEK)  # ~ the embedding's unit SEEK at the last of 6 tokens
        # L0.mlp: neuron i fires on E_i (threshold from the bias feature, so LayerNorm's scale cancels)
        fc, proj = tr.h[0].mlp.c_fc, tr.h[0].mlp.c_proj
        fc.weight[:, :10] = 0
        fc.bias[:10] = 0
        proj.weight[:10] = 0
        for i in range(10):
            fc.weight[:, i] = 2.5 * _B * (_dir(_E + i) - 0.5 * _dir(_BIAS) / _B)
            proj.weight[i] = 0.1 * _dir(_V + i)
        # L1.h0: q reads seek, k reads is-digit (score ~20 on the digit), v reads V, o writes E
        attn = tr.h[1].attn
        q, k, v = slice(0, dh), slice(64, 64 + dh), slice(128, 128 + dh)
        for s in (q, k, v):
            attn.c_attn.weight[:, s] = 0
            attn.c_attn.bias[s] = 0
        attn.c_attn.weight[:, q.start] = 1.12 * _B * _dir(_SEEK)
        attn.c_attn.weight[:, k.start] = 1.12 * _B * _dir(_IS_DIGIT)
        attn.c_proj.weight[:dh] = 0
        for i in range(10):
            attn.c_attn.weight[:, v.start + i] = 0.1 * _B * _dir(_V + i)
            attn.c_proj.weight[i] = 5 * _dir(_E + i)
        # unembedding: digit logits read E; every other token reads nothing
        model.lm_head.weight.zero_()
        for i, ch in enumerate(DIGITS):
            model.lm_head.weight[tok.convert_tokens_to_ids(ch)] = 0.5 * _B * _dir(_E + i)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def planted_pairs(tokenizer, n: int = 16, seed: int = 0, length: int = 4):
    """n PromptPairs of the planted task: `length` characters (letters and one digit) then "="."""
    from shared.circuits.tasks import pairs_from_text

    rng = random.Random(seed)
    clean, corrupt, answers, wrongs = [], [], [], []
    for _ in range(n):
        a, b = rng.sample(DIGITS, 2)
        chars = [rng.choice(LETTERS) for _ in range(length)]
        pos = rng.randrange(length)
        c, k = list(chars), list(chars)
        c[pos], k[pos] = a, b
        clean.append("".join(c) + "=")
        corrupt.append("".join(k) + "=")
        answers.append(a)
        wrongs.append(b)
    return pairs_from_text(tokenizer, clean, corrupt, answers, wrongs, name="planted")
