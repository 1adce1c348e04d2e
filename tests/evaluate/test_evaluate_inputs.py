"""Edge and bad inputs of fastvae.evaluate: inputs it would misread are refused by name."""

import pytest

from fastvae import CVAE


def test_evaluation_refuses_inputs_it_would_misread(tmp_path):
    from fastvae.data import Example, TextDataset, Vocab
    from fastvae.evaluate import evaluate_generation, evaluate_random_responses, split_by_seen

    words = ["in", "the", "beginning", "earth", "was"]
    vocab = Vocab.build([words])
    good = TextDataset([Example(["in"], ["the"], 0), Example(["in"], ["earth"], 0), Example(["was"], ["the"], 1)], vocab)
    model = CVAE(len(vocab), embed_dim=4, hidden_size=4, latent_size=2, num_layers=1)
    # two sources under one group id: the second would vanish from the scores
    merged = TextDataset([Example(["in"], ["the"], 0), Example(["was"], ["earth"], 0)], vocab)
    with pytest.raises(ValueError, match="share group 0 but have different sources"):
        evaluate_generation(model, merged, vocab, num_samples=1)
    # a vocabulary of the same size in another order would decode other words
    shuffled = Vocab(vocab.itos[:4] + vocab.itos[4:][::-1])
    with pytest.raises(ValueError, match="not the vocabulary dataset was encoded with"):
        evaluate_generation(model, good, shuffled, num_samples=1)
    with pytest.raises(TypeError, match="vocab must be a fastvae.data.Vocab"):
        evaluate_generation(model, good, None, num_samples=1)
    with pytest.raises(TypeError, match="responses must hold token-id lists"):
        evaluate_random_responses(good, [["the", "earth"]], vocab)
    with pytest.raises(TypeError, match="responses must hold token-id lists"):
        evaluate_random_responses(good, [[4.7]], vocab)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="max_inputs"):
            split_by_seen(good, good.sources, max_inputs=bad)
    assert evaluate_generation(model, good, vocab, num_samples=2)["inputs"] == 2
    from fastvae.evaluate import evaluate_likelihood

    for device, words in (("gpu", "device must name a device"), ("mps", "device must be cpu or cuda")):
        with pytest.raises(ValueError, match=words):
            evaluate_likelihood(model, good, device=device)
