"""The paper's protocol on a hand-made example whose answers are worked out here."""
import numpy as np
import pytest

from par_pipeline.engine.losses import attribute_loss
from par_pipeline.engine.metrics import group_metrics, is_positive, majority_baseline, standard_metrics


def test_protocol_hand_example():
    # 4 tracklets, one binary group (column 0) and one 3-value group (columns 1-3); boundaries [0, 1, 4].
    labels = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0]])
    probs = np.array([[0.9, 0.8, 0.1, 0.0],   # binary TP; group: pred {1} gt {1}
                      [0.2, 0.1, 0.5, 0.6],   # binary FN; pred {2,3} gt {2}
                      [0.5, 0.0, 0.0, 0.2],   # binary FP; pred {} gt {3}
                      [0.1, 0.45, 0.46, 0.0]])  # binary TN; pred {2} gt {1} (0.45 is not above 0.45)
    m = group_metrics(probs, labels, [0, 1, 4], ["bin", "multi"], 0.45)
    b, g = m["groups"]
    # binary: TP=1 FP=1 FN=1 TN=1 -> P=R=F1=0.5, mA=(1/2+1/2)/2=0.5, accuracy=2/4
    assert b["precision"] == pytest.approx(0.5) and b["recall"] == pytest.approx(0.5)
    assert b["f1"] == pytest.approx(0.5) and b["mA"] == pytest.approx(0.5) and b["accuracy"] == pytest.approx(0.5)
    # multi, per tracklet (inter, |pred|, |gt|, union): (1,1,1,1) (1,2,1,2) (0,0,1,1) (0,1,1,2)
    # p = 1, 1/2, 0, 0 -> 0.375;  r = 1, 1, 0, 0 -> 0.5;  f1 = 1, 2/3, 0, 0 -> 5/12;  acc = 1, 1/2, 0, 0 -> 0.375
    assert g["precision"] == pytest.approx(0.375)
    assert g["recall"] == pytest.approx(0.5)
    assert g["f1"] == pytest.approx(5 / 12)
    assert g["accuracy"] == pytest.approx(0.375)
    # column mA: col1 gt {0,3} pred {0}: TPR 1/2, TNR 2/2 -> 0.75; col2 gt {1} pred {1,3}: 1, 2/3 -> 5/6;
    # col3 gt {2} pred {1}: 0, 2/3 -> 1/3;  group mA = (0.75 + 5/6 + 1/3) / 3
    assert g["mA"] == pytest.approx((0.75 + 5 / 6 + 1 / 3) / 3)
    # reported numbers: means over groups, F1 the mean of group F1s (not recomputed from mean P and R)
    assert m["mean"]["f1"] == pytest.approx((0.5 + 5 / 12) / 2)
    assert m["mean"]["precision"] == pytest.approx((0.5 + 0.375) / 2)


def test_standard_metrics_hand_example():
    labels = np.array([[1, 0], [0, 1]])
    probs = np.array([[0.9, 0.9], [0.1, 0.2]])
    s = standard_metrics(probs, labels, 0.45)
    # col0: TPR 1, TNR 1 -> 1; col1: TPR 0, TNR 0 -> 0; label mA 0.5
    assert s["label_mA"] == pytest.approx(0.5)
    # sample0: inter 1, pred 2, gt 1, union 2 -> p .5 r 1 acc .5; sample1: pred 0 gt 1 -> 0, 0, 0
    assert s["instance_precision"] == pytest.approx(0.25) and s["instance_recall"] == pytest.approx(0.5)
    assert s["instance_accuracy"] == pytest.approx(0.25)
    assert s["instance_f1"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)


def test_majority_baseline_picks_most_frequent():
    train = np.array([[1, 0, 1, 0], [1, 0, 1, 0], [0, 1, 0, 0]])
    p = majority_baseline(train, train, [0, 1, 4])
    assert p[:, 0].tolist() == [1, 1, 1] and p[0, 1:].tolist() == [0, 1, 0]


def test_weighted_loss_formula():
    import torch

    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = torch.tensor([0.25, 0.6])
    w = torch.tensor([[np.exp(0.75), np.exp(0.6)], [np.exp(0.25), np.exp(0.4)]], dtype=torch.float32)
    bce = -(labels * torch.log(torch.sigmoid(logits)) + (1 - labels) * torch.log(1 - torch.sigmoid(logits)))
    assert attribute_loss(logits, labels, r).item() == pytest.approx((w * bce).sum().item() / 2, rel=1e-5)
    assert attribute_loss(logits, labels, None).item() == pytest.approx(bce.sum().item() / 2, rel=1e-5)


def test_threshold_rule_is_strictly_above():
    """The reference's rule: `preds_probs > 0.45`; a probability of exactly 0.45 is absent."""
    assert is_positive(np.array([0.44, 0.45, 0.4500001]), 0.45).tolist() == [False, False, True]
    m = group_metrics(np.array([[0.45], [0.45]]), np.array([[1], [0]]), [0, 1], ["g"], 0.45)
    assert m["groups"][0]["recall"] == 0.0  # no positive prediction at exactly the threshold
