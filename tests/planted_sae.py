"""A ReLU SAE with one planted latent that fires exactly on a known token ('~') of a tiny model.

Latent 0 reads a linear separator of '~' tokens from the rest at the layer, fitted by a hinge loss on synthetic text sprinkled with '~' and biased to the midpoint between the two classes;
its decoder row is the same direction, unit-norm. The other latents never fire (weights 0, bias < 0)."""
from __future__ import annotations

import random

import torch

from shared.data import synthetic
from shared.model import capture
from shared.model.layout import d_model
from shared.saes import architectures
from shared.saes.relu import ReLUConfig

TOKEN = "~"
LAYER = 0


def sprinkle(texts: list[str], seed: int, n: int = 3) -> list[str]:
    """Each text with n '~' words inserted at random word boundaries."""
    rng, out = random.Random(seed), []
    for t in texts:
        words = t.split()
        for _ in range(n):
            words.insert(rng.randrange(len(words) + 1), TOKEN)
        out.append(" ".join(words))
    return out


def residuals(model, tok, texts, layer=LAYER):
    """Residual rows and 'is the planted token' labels over texts (special tokens dropped)."""
    tid = tok.convert_tokens_to_ids(TOKEN)
    xs, ys = [], []
    for t in texts:
        ids = tok(t, return_tensors="pt", truncation=True, max_length=256)["input_ids"]
        keep = capture.token_mask(ids, tok)[0]
        xs.append(capture.capture_residuals(model, ids, [layer])[layer][0][keep])
        ys.append(ids[0][keep] == tid)
    return torch.cat(xs), torch.cat(ys)


def planted_sae(model, tok, d_sae: int = 4):
    x, y = residuals(model, tok, sprinkle(synthetic.synthetic_texts(80, seed=11), seed=0))
    mu = x.mean(0)
    sign = y.float() * 2 - 1
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    torch.manual_seed(0)
    for _ in range(400):  # a hinge-loss linear separator, '~' weighted up (it is rare)
        margin = sign * ((x - mu) @ w + b)
        loss = (torch.relu(1 - margin) * (1 + 20 * y.float())).mean()
        opt.zero_grad(), loss.backward(), opt.step()
    w = w.detach()
    s = (x - mu) @ w
    assert s[y].min() > s[~y].max(), "the planted token is not linearly separable at this layer"
    cut = float(s[y].min() + s[~y].max()) / 2
    sae = architectures.build_sae(ReLUConfig(d_in=d_model(model), d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc_T.zero_(), sae.W_dec.zero_(), sae.b_dec.zero_()
        sae.b_enc.fill_(-1.0)
        sae.W_enc_T[0] = w
        sae.b_enc[0] = -float(mu @ w) - cut
        sae.W_dec[0] = w / w.norm()
        for j in range(1, d_sae):
            sae.W_dec[j] = torch.nn.functional.one_hot(torch.tensor(j), d_model(model)).float()
    return sae.eval()
