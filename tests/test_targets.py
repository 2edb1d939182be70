"""Targets: every spec form resolves to the right rows and scores."""

import pytest
import torch

from salience.errors import TargetError
from salience.targets import CallableTarget, ClassTarget, resolve_target

NAMES = ["tabby, tabby cat", "tiger cat", "espresso", "dog"]
LOGITS = torch.tensor([[0.1, 3.0, 2.0, -1.0], [5.0, 0.0, 1.0, 2.0]])


def scores_of(target, output=LOGITS):
    rows = torch.arange(len(target))
    return target.score(output[target.image_index], rows)


def test_top1_picks_argmax_and_scores_logit():
    t = resolve_target("top1", LOGITS, NAMES)
    assert t.classes.tolist() == [1, 0]
    assert torch.equal(scores_of(t), torch.tensor([3.0, 5.0]))
    assert t.labels() == ["tiger cat", "tabby, tabby cat"]


def test_topk_gives_k_rows_per_image_best_first():
    t = resolve_target("topk:2", LOGITS, NAMES)
    assert t.image_index.tolist() == [0, 0, 1, 1]
    assert t.classes.tolist() == [1, 2, 0, 3]
    assert torch.equal(scores_of(t), torch.tensor([3.0, 2.0, 5.0, 2.0]))


def test_int_list_and_class_name():
    assert resolve_target(2, LOGITS).classes.tolist() == [2, 2]
    assert resolve_target([3, 1], LOGITS).classes.tolist() == [3, 1]
    assert resolve_target("2", LOGITS).classes.tolist() == [2, 2]
    # a full name or one of its comma-separated synonyms, case-insensitive
    assert resolve_target("Tabby", LOGITS, NAMES).classes.tolist() == [0, 0]
    assert resolve_target("espresso", LOGITS, NAMES).classes.tolist() == [2, 2]


@pytest.mark.parametrize(
    "spec, message",
    [(7, "out of range"), ([1], "2 images"), ("topk:9", "K must be"), ("espreso", "Did you mean 'espresso'"), (1.5, "cannot use")],
)
def test_bad_specs_raise_clear_errors(spec, message):
    with pytest.raises(TargetError, match=message):
        resolve_target(spec, LOGITS, NAMES)


def test_repeated_rows_score_their_own_class():
    # IG and SmoothGrad feed several samples per row: sample i belongs to rows[i].
    t = ClassTarget(torch.tensor([1, 3]), torch.arange(2))
    out = torch.arange(12.0).view(3, 4)
    assert t.score(out, torch.tensor([1, 0, 1])).tolist() == [3.0, 5.0, 11.0]


def test_callable_targets_batch_and_per_image():
    t = resolve_target(lambda out: out[:, 2] * 2, LOGITS)
    assert isinstance(t, CallableTarget)
    assert scores_of(t).tolist() == [4.0, 2.0]
    per_image = resolve_target([lambda o: o[1], lambda o: o[3]], LOGITS)
    assert scores_of(per_image).tolist() == [3.0, 2.0]
    bad = resolve_target(lambda out: out, LOGITS)
    with pytest.raises(TargetError, match="one score per sample"):
        scores_of(bad)
