"""DPO's loss and rewards on numbers worked by hand, and the log-probabilities it is fed."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from trainers.lora_dpo import chosen_nll, dpo_loss, sequence_logps  # noqa: E402
from trainers.tokenization import IGNORE_INDEX  # noqa: E402


def test_the_loss_is_minus_log_sigmoid_of_beta_times_the_log_ratio_margin() -> None:
    policy_chosen, policy_rejected = torch.tensor([-5.0, -9.0]), torch.tensor([-7.0, -6.0])
    ref_chosen, ref_rejected = torch.tensor([-6.0, -8.0]), torch.tensor([-6.0, -8.0])
    loss, chosen, rejected = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.5)
    # pair 0: chosen up 1, rejected down 1 -> margin 2; pair 1: chosen down 1, rejected up 2 -> margin -3
    assert chosen.tolist() == [0.5, -0.5] and rejected.tolist() == [-0.5, 1.0]
    expected = [-math.log(1 / (1 + math.exp(-0.5 * 2))), -math.log(1 / (1 + math.exp(-0.5 * -3)))]
    assert loss.tolist() == pytest.approx(expected)
    # At the start (policy == reference) every pair's loss is log 2.
    start, _, _ = dpo_loss(ref_chosen, ref_rejected, ref_chosen, ref_rejected, beta=0.1)
    assert start.tolist() == pytest.approx([math.log(2)] * 2)


def test_sequence_log_probabilities_count_only_trained_tokens() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]]))  # 1 row, 3 positions, 2 tokens
    labels = torch.tensor([[IGNORE_INDEX, 0, 1]])  # positions 1 and 2 trained: predicted at 0 and 1
    logps, n = sequence_logps(logits, labels)
    assert logps.tolist() == pytest.approx([math.log(0.5) + math.log(0.1)]) and n.tolist() == [2]
    assert chosen_nll(logps, n).item() == pytest.approx(-(math.log(0.5) + math.log(0.1)) / 2)
