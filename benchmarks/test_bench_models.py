"""Whole models, fused backend vs the reference backend (same weights, same batch).

* SLCVAE training step (both phases, Adam steps included) at the SLCVAE
  paper's DailyDialog size: V=10,000, E=H=32, Z=8, 2 layers, B=64, T~20.
  Target >= 3x.
* SentenceVAE training step at the PTB size: V=10k, E=300, H=256, Z=16,
  B=32, T~40. Target >= 1.5x.
* Generation: 64 contexts x 10 samples, greedy, max_length 30 (sentences per
  second, i.e. the time ratio). Target >= 5x.
"""

import torch

from fastvae import SLCVAE, Batch, SentenceVAE

V = 10_000


def random_batch(B, T, seed, conditional):
    g = torch.Generator().manual_seed(seed)

    def tokens(length):
        lengths = torch.randint(max(1, length // 2), length + 1, (B,), generator=g)
        lengths[0] = length
        x = torch.randint(4, V, (B, length), generator=g)
        x[torch.arange(length).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
        x[torch.arange(B), lengths - 1] = 3
        return x, lengths

    target, target_lengths = tokens(T)
    if not conditional:
        return Batch(target, target_lengths)
    context, context_lengths = tokens(T)
    return Batch(target, target_lengths, context, context_lengths)


def twins(cls, **kw):
    torch.manual_seed(0)
    fused = cls(V, backend="fused", **kw)
    ref = cls(V, backend="reference", **kw)
    ref.load_state_dict(fused.state_dict())
    return fused, ref


def test_slcvae_training_step(ratio_bench):
    fused, ref = twins(SLCVAE, embed_dim=32, hidden_size=32, latent_size=8, num_layers=2)
    batch = random_batch(64, 20, seed=1, conditional=True)

    def stepper(model):
        cvae = torch.optim.Adam(model.cvae_parameters(), lr=1e-4)
        label = torch.optim.Adam(model.labeling_parameters(), lr=1e-4)
        seed = [0]

        def step():
            seed[0] += 1
            out = model.train_step(batch, cvae, label, kl_weight=0.5, generator=torch.Generator().manual_seed(seed[0]))
            return (torch.tensor([out["loss"], out["label_nll"]]),)

        return step

    ratio_bench(
        "SLCVAE train step (both phases)",
        "DailyDialog V10k E=H32 Z8 L2 B64 T20",
        "reference backend",
        stepper(fused),
        stepper(ref),
        target=3.0,
    )


def test_sentence_vae_training_step(ratio_bench):
    fused, ref = twins(SentenceVAE, embed_dim=300, hidden_size=256, latent_size=16)
    batch = random_batch(32, 40, seed=2, conditional=False)

    def stepper(model):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        seed = [0]

        def step():
            seed[0] += 1
            opt.zero_grad(set_to_none=True)
            out = model(batch, kl_weight=0.5, generator=torch.Generator().manual_seed(seed[0]))
            out.loss.backward()
            opt.step()
            return (out.loss.detach().reshape(1),)

        return step

    ratio_bench(
        "SentenceVAE train step",
        "PTB V10k E300 H256 Z16 B32 T40",
        "reference backend",
        stepper(fused),
        stepper(ref),
        target=1.5,
    )


def test_generation(ratio_bench):
    fused, ref = twins(SLCVAE, embed_dim=32, hidden_size=32, latent_size=8, num_layers=2)
    batch = random_batch(64, 20, seed=3, conditional=True)

    def generator_of(model):
        def gen():
            tokens, lengths = model.generate(
                batch.context, batch.context_lengths, num_samples=10, max_length=30,
                generator=torch.Generator().manual_seed(4),
            )
            return tokens.float(), lengths.float()

        return gen

    ratio_bench(
        "generation 64 x 10 greedy",
        "DailyDialog V10k E=H32 L2 max_len 30",
        "reference backend",
        generator_of(fused),
        generator_of(ref),
        target=5.0,
    )
