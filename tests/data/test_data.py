"""fastvae.data: tokenizer, vocabulary, corpus loaders, datasets and batching."""

import json
import os

import pytest
import torch

from fastvae.data import EOU, Example, TextDataset, Vocab, batches, load_bible, load_dailydialog, load_lines, load_tsv, tokenize
from fastvae.data.corpora import bible_split_of
from fastvae.models import Batch

DATA = os.environ.get("FASTVAE_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ tokenizer


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("Hello, World!", ["hello", ",", "world", "!"]),
        ("  many   spaces\tand\nlines ", ["many", "spaces", "and", "lines"]),
        ("I guess you are right.But", ["i", "guess", "you", "are", "right", ".", "but"]),
        ("Don't stop", ["don't", "stop"]),
        ("I ’ ll come at 5 o ’ clock", ["i'll", "come", "at", "5", "o'clock"]),
        ("God`s word", ["god's", "word"]),
        ("the <unk> is N", ["the", "<unk>", "is", "n"]),
        ("' quoted '", ["'", "quoted", "'"]),
        ("", []),
        ("   ", []),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


def test_tokenize_is_idempotent_and_rejects_non_str():
    text = "Well , I ’ m not sure.What's up -- \"really\"?"
    once = tokenize(text)
    assert tokenize(" ".join(once)) == once
    with pytest.raises(TypeError, match="str"):
        tokenize(["a"])


# --------------------------------------------------------------------- vocab


def test_vocab_build_order_specials_and_limits():
    vocab = Vocab.build([["b", "a", "c"], ["c", "a", "d"], ["c", "<eos>"]])
    assert vocab.itos[:4] == ["<pad>", "<unk>", "<sos>", "<eos>"]
    assert (vocab.pad_id, vocab.unk_id, vocab.sos_id, vocab.eos_id) == (0, 1, 2, 3)
    # c (3) first, then a (2), then the ties b, d alphabetically; <eos> not added twice
    assert vocab.itos[4:] == ["c", "a", "b", "d"]
    assert len(vocab) == 8
    assert Vocab.build([["c", "b"], ["a", "c"]]).itos == Vocab.build([["a", "c"], ["c", "b"]]).itos
    assert Vocab.build([["b", "a", "c"], ["c", "a"]], min_freq=2).itos[4:] == ["a", "c"]  # b seen once
    assert Vocab.build([["x", "y", "y", "z", "z", "z"]], max_size=5).itos == ["<pad>", "<unk>", "<sos>", "<eos>", "z"]
    with pytest.raises(ValueError, match="max_size"):
        Vocab.build([["a"]], max_size=2)
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.build([["a"]], min_freq=0)


def test_vocab_encode_decode():
    vocab = Vocab.build([["the", "cat", "sat"]])
    ids = vocab.encode(["the", "dog", "sat"])
    assert ids == [vocab.stoi["the"], vocab.unk_id, vocab.stoi["sat"]]
    assert vocab.decode(ids) == ["the", "<unk>", "sat"]
    padded = [vocab.sos_id] + vocab.encode(["the", "cat"]) + [vocab.eos_id, vocab.stoi["sat"], vocab.pad_id]
    assert vocab.decode(padded) == ["the", "cat"]  # stops at <eos>
    assert vocab.decode(torch.tensor([vocab.stoi["cat"], 0, 0])) == ["cat"]  # skips <pad>
    with pytest.raises(ValueError, match="outside"):
        vocab.decode([len(vocab)])


def test_vocab_save_load_roundtrip(tmp_path):
    vocab = Vocab.build([["ünïcode", "words", "a"], ["a"]])
    path = tmp_path / "sub" / "vocab.json"
    vocab.save(path)
    loaded = Vocab.load(path)
    assert loaded == vocab and loaded.itos == vocab.itos
    assert loaded.encode(["ünïcode"]) == vocab.encode(["ünïcode"])


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "corrupt"),
        ('{"tokens": ["<pad>"]}', "corrupt"),
        (json.dumps({"format_version": 1, "tokens": "abc"}), "must be a list"),
        (json.dumps({"format_version": 1, "tokens": ["a", "<pad>", "<unk>", "<sos>", "<eos>"]}), "must start with"),
        (json.dumps({"format_version": 1, "tokens": ["<pad>", "<unk>", "<sos>", "<eos>", "a", "a"]}), "more than once"),
        (json.dumps({"format_version": 99, "tokens": ["<pad>", "<unk>", "<sos>", "<eos>"]}), "format"),
    ],
)
def test_vocab_load_corrupt(tmp_path, content, match):
    path = write(tmp_path / "vocab.json", content)
    with pytest.raises(ValueError, match=match) as info:
        Vocab.load(path)
    assert "vocab.json" in str(info.value)


def test_vocab_load_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        Vocab.load(tmp_path / "nothere.json")


# ---------------------------------------------------------------- load_lines


def test_load_lines(tmp_path):
    path = write(tmp_path / "ptb.txt", " the cat sat \nOn the mat .\n")
    assert load_lines(path) == [["the", "cat", "sat"], ["on", "the", "mat", "."]]
    path = write(tmp_path / "pre.txt", "a <unk> 's N\n")
    assert load_lines(path, tokenizer=str.split) == [["a", "<unk>", "'s", "N"]]


def test_load_lines_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_lines(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match=r"empty.txt is empty"):
        load_lines(write(tmp_path / "empty.txt", ""))
    with pytest.raises(ValueError, match=r"blank.txt:2: malformed"):
        load_lines(write(tmp_path / "blank.txt", "one line\n\nthird line\n"))
    with pytest.raises(ValueError, match=r"bad.bin is not valid UTF-8"):
        (tmp_path / "bad.bin").write_bytes(b"ok\n\xff\xfe\n")
        load_lines(tmp_path / "bad.bin")


@pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "ptb")), reason="shared PTB data absent")
def test_load_lines_real_ptb():
    sentences = load_lines(os.path.join(DATA, "ptb", "ptb.valid.txt"), tokenizer=str.split)
    assert len(sentences) == 3370
    assert all(sentences)


# ----------------------------------------------------------------- DailyDialog


def fake_dailydialog(root, n_utterances=8, acts=None):
    utts = [f"Utterance number {i} ." for i in range(n_utterances)]
    write(root / "dialogues_train.txt", " __eou__ ".join(utts) + " __eou__\nHi ! __eou__ Hello , you . __eou__\n")
    acts = acts if acts is not None else " ".join(["1"] * n_utterances)
    write(root / "dialogues_act_train.txt", f"{acts} \n2 3 \n")
    write(root / "dialogues_emotion_train.txt", " ".join(str(i % 7) for i in range(n_utterances)) + "\n0 4\n")
    return utts


def test_dailydialog_context_window(tmp_path):
    fake_dailydialog(tmp_path, n_utterances=8)
    examples = load_dailydialog(tmp_path, "train", with_labels=True)
    assert len(examples) == 7 + 1  # every utterance after the first is a response
    assert all(isinstance(e, Example) for e in examples)
    u = lambda i: ["utterance", "number", str(i), "."]  # noqa: E731

    def joined(ids):
        out = []
        for i in ids:
            out += ([EOU] if out else []) + u(i)
        return out

    first = examples[0]  # 1st response: 1 context utterance
    assert first.source == u(0) and first.target == u(1) and first.source.count(EOU) == 0
    seventh = examples[6]  # 7th response (utterance 7): exactly 5 context utterances, 1..6 minus the first
    assert seventh.target == u(7)
    assert seventh.source == joined([2, 3, 4, 5, 6]) and seventh.source.count(EOU) == 4
    assert examples[4].source == joined([0, 1, 2, 3, 4])  # 5th response: all 5 previous
    assert examples[5].source == joined([1, 2, 3, 4, 5])  # 6th: the window slides
    assert [e.emotion for e in examples[:7]] == [i % 7 for i in range(1, 8)]
    assert examples[7].source == ["hi", "!"] and examples[7].target == ["hello", ",", "you", "."]
    assert (examples[7].act, examples[7].emotion) == (3, 4)
    assert len({e.group for e in examples}) == len(examples)
    assert load_dailydialog(tmp_path)[0].act is None


def test_dailydialog_context_window_through_the_corpus_spec(tmp_path):
    """CorpusSpec.context_window: the utterances before a response that form its context (default 5)."""
    from fastvae.data.sources import CorpusSpec, load_corpus

    (tmp_path / "dailydialog").mkdir()
    fake_dailydialog(tmp_path / "dailydialog", n_utterances=8)
    u = lambda i: ["utterance", "number", str(i), "."]  # noqa: E731
    default = load_corpus(CorpusSpec("dailydialog", data_dir=str(tmp_path)), "train")
    assert default[6].source.count(EOU) == 4  # 5 utterances before the 7th response
    previous = load_corpus(CorpusSpec("dailydialog", data_dir=str(tmp_path), context_window=1), "train")
    assert [e.target for e in previous] == [e.target for e in default]  # the same responses
    assert [e.source for e in previous[:7]] == [u(i) for i in range(7)]  # each with the utterance before it alone
    two = load_corpus(CorpusSpec("dailydialog", data_dir=str(tmp_path), context_window=2), "train")
    assert two[6].source == u(5) + [EOU] + u(6) and two[0].source == u(0)
    assert CorpusSpec.from_dict(CorpusSpec("dailydialog", context_window=2).to_dict()).context_window == 2
    old = CorpusSpec("dailydialog").to_dict()
    del old["context_window"]  # a run.json of an earlier version: the default window
    assert CorpusSpec.from_dict(old).context_window is None
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="context_window must be an integer >= 1"):
            CorpusSpec("dailydialog", context_window=bad).check()
    with pytest.raises(ValueError, match="context_window applies to the dailydialog corpus only, not 'tsv'"):
        CorpusSpec("tsv", train_file="x.tsv", context_window=1).check()


def test_dailydialog_errors(tmp_path):
    fake_dailydialog(tmp_path, n_utterances=4, acts="1 2 3")
    with pytest.raises(ValueError, match=r"dialogues_act_train.txt:1: 3 labels for a dialogue of 4 utterances"):
        load_dailydialog(tmp_path, with_labels=True)
    assert len(load_dailydialog(tmp_path)) == 4  # labels are only read when asked for
    write(tmp_path / "dialogues_emotion_train.txt", "0 0 0 0\n")
    write(tmp_path / "dialogues_act_train.txt", "1 1 1 1\n1 1\n")
    with pytest.raises(ValueError, match=r"dialogues_emotion_train.txt has 1 lines"):
        load_dailydialog(tmp_path, with_labels=True)
    write(tmp_path / "dialogues_act_train.txt", "1 x 1 1\n1 1\n")
    with pytest.raises(ValueError, match=r"dialogues_act_train.txt:1: malformed labels"):
        load_dailydialog(tmp_path, with_labels=True)
    write(tmp_path / "dialogues_train.txt", "a __eou__ b __eou__\na __eou__  __eou__ c __eou__\n")
    with pytest.raises(ValueError, match=r"dialogues_train.txt:2: malformed"):
        load_dailydialog(tmp_path)
    write(tmp_path / "dialogues_train.txt", "a __eou__ b __eou__\n\n")
    with pytest.raises(ValueError, match=r"dialogues_train.txt:2: malformed"):
        load_dailydialog(tmp_path)
    with pytest.raises(FileNotFoundError, match="dialogues_test.txt"):
        load_dailydialog(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="nodir"):
        load_dailydialog(tmp_path / "nodir")
    with pytest.raises(ValueError, match="split"):
        load_dailydialog(tmp_path, "dev2")


@pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "dailydialog")), reason="shared DailyDialog data absent")
def test_dailydialog_real_data():
    examples = load_dailydialog(os.path.join(DATA, "dailydialog"), "validation", with_labels=True)
    assert len(examples) == 7069  # 1,000 dialogues, every utterance after the first
    assert all(e.source and e.target for e in examples)
    assert max(e.source.count(EOU) for e in examples) == 4  # at most 5 context utterances
    assert {e.act for e in examples} <= {1, 2, 3, 4} and {e.emotion for e in examples} <= set(range(7))
    assert all(t == t.lower() for e in examples[:200] for t in e.target)


# ------------------------------------------------------------------------ TSV


def test_tsv_groups(tmp_path):
    path = write(tmp_path / "pairs.tsv", "How are you?\tFine.\nHi\tHello\nhow are you ?\tGood, thanks.\nHi\tHey\n")
    examples = load_tsv(path)
    assert [e.group for e in examples] == [0, 1, 0, 1]
    assert examples[0].source == ["how", "are", "you", "?"] and examples[2].target == ["good", ",", "thanks", "."]


@pytest.mark.parametrize(
    "content, line",
    [("a\tb\nno tab here\n", 2), ("a\tb\tc\n", 1), ("a\tb\n\t b\n", 2), ("a\tb\nx\t  \n", 2), ("a\tb\n\nc\td\n", 2)],
)
def test_tsv_malformed(tmp_path, content, line):
    with pytest.raises(ValueError, match=rf"pairs.tsv:{line}: malformed"):
        load_tsv(write(tmp_path / "pairs.tsv", content))


def test_tsv_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.tsv"):
        load_tsv(tmp_path / "none.tsv")
    with pytest.raises(ValueError, match="e.tsv is empty"):
        load_tsv(write(tmp_path / "e.tsv", "\n\n"))


# ---------------------------------------------------------------------- Bible


def test_bible_small():
    pytest.importorskip("pythonbible")
    examples = load_bible("train", max_verses=5)
    assert len(examples) == 5 * 4
    for v in range(5):
        verse = examples[4 * v : 4 * v + 4]
        assert {e.group for e in verse} == {v}
        assert all(e.source == verse[0].source for e in verse)
        assert [e.origin.split()[0] for e in verse] == ["kjv->web", "kjv->asv", "kjv->ylt", "kjv->dar"]
        assert all(e.source and e.target and "[" not in e.source for e in verse)
    assert examples[0].source[:4] == ["in", "the", "beginning", "god"]  # Genesis 1:1 is a train verse
    assert load_bible("train", max_verses=5) == examples  # deterministic


def test_bible_splits_disjoint_and_capped():
    pytest.importorskip("pythonbible")
    ids = lambda split: {e.origin.split()[1] for e in load_bible(split, max_verses=30)}  # noqa: E731
    train, valid, test = ids("train"), ids("valid"), ids("test")
    assert len(train) == len(valid) == len(test) == 30
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert all(bible_split_of(int(v)) == "valid" for v in valid)
    assert {bible_split_of(v) for v in range(1001001, 1001400)} == {"train", "valid", "test"}
    short = load_bible("test", max_verses=10, max_length=15)
    assert short and all(len(e.source) <= 15 and len(e.target) <= 15 for e in short)
    one = load_bible("valid", targets=("web",), max_verses=3)
    assert [e.group for e in one] == [0, 1, 2]
    with pytest.raises(ValueError, match="bbe"):
        load_bible(targets=("bbe",))
    with pytest.raises(ValueError, match="split"):
        load_bible("validation")


# ------------------------------------------------------------- dataset/batch


def conditional_examples():
    return [
        Example(source=["a"] * (i % 5 + 1), target=["b", "c"][: i % 2 + 1] * (i % 7 + 1), group=i // 3) for i in range(23)
    ]


def test_text_dataset_encoding_and_truncation():
    vocab = Vocab.build([["a", "b", "c"]])
    ds = TextDataset([["a", "b", "zzz"], ["c"]], vocab)
    assert not ds.conditional and len(ds) == 2
    assert ds.targets[0] == [vocab.stoi["a"], vocab.stoi["b"], vocab.unk_id, vocab.eos_id]
    ex = Example(source=["a", "b", "c", "a"], target=["c", "b", "a", "b"], group=7)
    ds = TextDataset([ex], vocab, max_length=3)
    assert ds.targets[0] == vocab.encode(["c", "b"]) + [vocab.eos_id]  # the start of the target, then <eos>
    assert ds.sources[0] == vocab.encode(["c", "a"]) + [vocab.eos_id]  # the end of the context, then <eos>
    assert ds.groups == [7]
    assert TextDataset([ex], vocab, max_length=1).targets[0] == [vocab.eos_id]
    with pytest.raises(ValueError, match="max_length"):
        TextDataset([ex], vocab, max_length=0)
    with pytest.raises(TypeError, match="not a string"):
        vocab.encode("a b")  # would otherwise be encoded character by character
    with pytest.raises(TypeError, match="lists of token strings, got 1"):
        TextDataset([1, 2], vocab)
    with pytest.raises(TypeError, match="lists of token strings"):
        TextDataset([Example(source=["a"], target=[1, 2], group=0)], vocab)
    with pytest.raises(ValueError, match="source"):
        TextDataset([ex, Example(None, ["a"], 0)], vocab)
    with pytest.raises(TypeError, match="tokenize"):
        TextDataset(["a b c"], vocab)


def test_batches_padding_lengths_and_fields():
    vocab = Vocab.build([["a", "b", "c"]])
    ds = TextDataset(conditional_examples(), vocab)
    seen = []
    for indices, batch in batches(ds, 4, generator=torch.Generator().manual_seed(1), with_indices=True):
        assert isinstance(batch, Batch)
        assert batch.target.dtype == batch.context.dtype == torch.int64
        assert batch.target.shape == (len(indices), int(batch.target_lengths.max()))
        assert batch.context.shape == (len(indices), int(batch.context_lengths.max()))
        for row, i in enumerate(indices):
            n, m = int(batch.target_lengths[row]), int(batch.context_lengths[row])
            assert batch.target[row, :n].tolist() == ds.targets[i] and batch.target[row, n - 1] == vocab.eos_id
            assert (batch.target[row, n:] == vocab.pad_id).all()
            assert batch.context[row, :m].tolist() == ds.sources[i] and (batch.context[row, m:] == vocab.pad_id).all()
        seen += indices
    assert sorted(seen) == list(range(len(ds)))  # every example exactly once


def test_batches_bucketing_order_and_determinism():
    vocab = Vocab.build([["a", "b", "c"]])
    ds = TextDataset(conditional_examples(), vocab)
    plain = [b.target.shape[1] for b in batches(ds, 4, shuffle=False, bucket=False)]
    bucketed = list(batches(ds, 4, shuffle=False, bucket=True, with_indices=True))
    widths = [b.target.shape[1] for _, b in bucketed]
    assert widths == sorted(widths)  # one chunk, sorted by target length
    assert sum(b.target.numel() for _, b in bucketed) < sum(w * 4 for w in plain)  # less padding
    assert [len(i) for i, _ in bucketed] == [4, 4, 4, 4, 4, 3]
    assert len(list(batches(ds, 4, shuffle=False, drop_last=True))) == 5
    order = lambda seed: [i for i, _ in batches(ds, 4, generator=torch.Generator().manual_seed(seed), with_indices=True)]  # noqa: E731
    assert order(3) == order(3) and order(3) != order(4)
    sentence = TextDataset([["a"] * k for k in (3, 1, 2)], vocab)
    (batch,) = list(batches(sentence, 8, shuffle=False))
    assert batch.context is None and batch.context_lengths is None
    assert batch.target_lengths.tolist() == [2, 3, 4]  # lengths count <eos>
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(sentence, 0))


def test_batches_feed_a_model():
    from fastvae import CVAE

    vocab = Vocab.build([e.source + e.target for e in conditional_examples()])
    ds = TextDataset(conditional_examples(), vocab)
    model = CVAE(vocab_size=len(vocab), embed_dim=8, hidden_size=8, latent_size=4, backend="reference")
    out = model(next(batches(ds, 5, generator=torch.Generator().manual_seed(0))))
    assert torch.isfinite(out.loss)


def test_bible_full_test_split():
    pytest.importorskip("pythonbible")
    examples = load_bible("test")
    assert len(examples) == 4 * 1535  # 1,535 verses of the 31,098 in all five translations
    assert [e.group for e in examples[::4]] == list(range(1535))
    assert all(examples[i].source == examples[i + 3].source for i in range(0, len(examples), 4))


def test_lines_end_at_newlines_only(tmp_path):
    """A form feed, \\x85 or U+2028 inside a line neither splits it nor shifts the line numbers of errors."""
    path = tmp_path / "odd.txt"
    path.write_bytes("\ufefffirst sentence\nsecond\x0cthird sentence\nfourth\u2028line\r\n\nsixth\n".encode("utf-8"))
    with pytest.raises(ValueError, match=r"odd.txt:4: malformed line"):  # the blank line is physical line 4
        load_lines(path)
    path.write_bytes("\ufefffirst sentence\nsecond\x0cthird sentence\nfourth\u2028line\r\n".encode("utf-8"))
    assert load_lines(path) == [["first", "sentence"], ["second", "third", "sentence"], ["fourth", "line"]]
    tsv = tmp_path / "odd.tsv"
    tsv.write_bytes("a b\tc d\ne\x85f\tg\n".encode("utf-8"))
    assert [ex.target for ex in load_tsv(tsv)] == [["c", "d"], ["g"]]


def test_dailydialog_file_without_responses_is_named(tmp_path):
    folder = tmp_path / "dd"
    folder.mkdir()
    (folder / "dialogues_train.txt").write_text("hello there\njust one utterance __eou__\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dialogues_train.txt: no dialogue has two utterances"):
        load_dailydialog(folder, "train")
    (folder / "dialogues_train.txt").write_text("hi __eou__ hello __eou__\n", encoding="utf-8")
    for bad in (2.5, None, True):
        with pytest.raises(ValueError, match="max_context must be an integer"):
            load_dailydialog(folder, "train", max_context=bad)


def test_vocab_and_batching_argument_checks():
    with pytest.raises(TypeError, match="token_lists must hold lists of tokens"):
        Vocab.build(["hello", "world"])
    for bad in (float("nan"), 0, 1.5):
        with pytest.raises(ValueError, match="min_freq must be an integer >= 1"):
            Vocab.build([["a"]], min_freq=bad)
    with pytest.raises(ValueError, match="max_size must be an integer"):
        Vocab.build([["a"]], max_size=10.0)
    vocab = Vocab.build([["a", "b"]])
    with pytest.raises(ValueError, match="max_length must be an integer"):
        TextDataset([["a"]], vocab, max_length=float("nan"))
    data = TextDataset([["a"], ["b"], ["a", "b"]], vocab)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="bucket_chunk must be an integer >= 1"):
            list(batches(data, 2, shuffle=False, bucket_chunk=bad))
    assert sum(b.target.shape[0] for b in batches(data, 2, shuffle=False, bucket=False, bucket_chunk=0)) == 3
