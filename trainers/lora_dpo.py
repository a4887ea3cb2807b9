"""Direct Preference Optimization with LoRA and DeepSpeed: the supervised recipe's setup, checkpoints,
resume and publishing, with DPO's step and validation.

The reference model is the policy as the run starts: the base model with a fresh adapter (LoRA's B is zero,
so that is the base exactly), or the tenant's supervised model the job continues from (OpenAI's SFT then
DPO). Its log-probabilities of every pair are computed once, before the first step, with the same engine:
no second copy of the model in memory, and a resumed run uses the very numbers the first one did (they
are computed before the saved state is loaded). Workers each score a share of the pairs and sum them.

The loss is DPO's sigmoid loss (Rafailov et al. 2023, eq. 7) plus `sft_weight` times the preferred answers'
mean token loss (RPO, Pang et al. 2024): TRL 1.16's `loss_type=["sigmoid", "sft"]`, `loss_weights=[1, w]`,
computed the same way (summed log-probabilities of the answer tokens; the SFT term a mean over the chosen
answers' tokens). TRL's trainer is not used: it is a `transformers.Trainer` (its own loop, accelerate,
`datasets`), and the recipe already has Ray Train, DeepSpeed, resume and checkpoints; the loss is a few
lines, checked by hand in tests/unit/trainers/test_dpo_loss.py and against TRL's DPOTrainer in
bench/bench_dpo.py.
"""

from __future__ import annotations

import time

from trainers.batching import shard
from trainers.lora_sft import LoRASFTRecipe, _all_reduce_sum, _collate
from trainers.tokenization import IGNORE_INDEX, PreferencePair


def sequence_logps(logits, labels):  # torch tensors: [B, T, V], [B, T] -> [B], [B]
    """The summed log-probability of each row's trained tokens (labels not IGNORE_INDEX), next-token
    aligned, and how many tokens that is."""
    import torch

    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE_INDEX
    picked = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1), mask.sum(-1)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """Per pair: the loss, and the implicit rewards of the chosen and the rejected answer (detached)."""
    import torch.nn.functional as F

    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    loss = -F.logsigmoid(beta * (chosen - rejected))
    return loss, beta * chosen.detach(), beta * rejected.detach()


def chosen_nll(policy_chosen, n_tokens):  # [B], [B] -> a scalar
    """The chosen answers' mean token negative log-likelihood (RPO's term; TRL's "sft" loss type)."""
    return -policy_chosen.sum() / n_tokens.sum().clamp(min=1)


class LoRADPORecipe(LoRASFTRecipe):
    train_set: list[PreferencePair]
    valid_set: list[PreferencePair]

    def prepare(self) -> bool:
        """The reference's log-probabilities of the chosen and rejected answer of every pair."""
        self.reference = self._reference_logps(self.train_set)
        self.valid_reference = self._reference_logps(self.valid_set)
        return True

    def _reference_logps(self, pairs: list[PreferencePair]) -> list[tuple[float, float]]:
        import torch

        engine = self.engine
        scores = [0.0] * (2 * len(pairs))
        mine = list(range(len(pairs)))[self.rank :: self.world]
        engine.eval()
        with torch.no_grad():
            for start in range(0, len(mine), self.micro_batch):
                indices = mine[start : start + self.micro_batch]
                chosen, rejected, _ = self._logps([pairs[i] for i in indices])
                for i, c, r in zip(indices, chosen.tolist(), rejected.tolist(), strict=True):
                    scores[2 * i], scores[2 * i + 1] = c, r
        engine.train()
        summed = _all_reduce_sum(scores, engine.device)
        return [(summed[2 * i], summed[2 * i + 1]) for i in range(len(pairs))]

    def _logps(self, pairs: list[PreferencePair]):  # -> three [B] tensors
        """The policy's log-probabilities of the chosen and of the rejected answers, in one batch, and the
        number of tokens of each chosen answer."""
        inputs = _collate(
            [p.chosen for p in pairs] + [p.rejected for p in pairs],
            self.pad_id,
            self.engine.device,
            self.dtype,
        )
        labels = inputs.pop("labels")
        logps, n_tokens = sequence_logps(self.engine(**inputs).logits, labels)
        return logps[: len(pairs)], logps[len(pairs) :], n_tokens[: len(pairs)]

    def _scores(self, pairs: list[PreferencePair], reference: list[tuple[float, float]]):
        """The batch's loss (DPO's mean, plus RPO's term), and the rewards per pair (see `dpo_loss`)."""
        import torch

        hp = self.spec.hyperparameters
        chosen, rejected, chosen_tokens = self._logps(pairs)
        ref = torch.tensor(reference, dtype=chosen.dtype, device=chosen.device)
        losses, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], hp.beta)
        loss = losses.mean()
        if hp.sft_weight:
            loss = loss + hp.sft_weight * chosen_nll(chosen, chosen_tokens)
        return loss, chosen_rewards, rejected_rewards

    def _train_step(self, step: int, epoch: int, batch: list[int]) -> None:
        import torch

        engine, result = self.engine, self.result
        t0 = time.perf_counter()
        torch.manual_seed(hash((self.spec.seed, step, self.rank)) % 2**63)
        indices = shard(batch, self.rank, self.world)
        pairs = [self.train_set[i] for i in indices]
        loss, chosen, rejected = self._scores(pairs, [self.reference[i] for i in indices])
        engine.backward(loss)
        engine.step()
        n_tokens = sum(len(p.chosen.input_ids) + len(p.rejected.input_ids) for p in pairs)
        totals = _all_reduce_sum(
            [
                loss.item() * len(pairs),
                (chosen - rejected).sum().item(),
                (chosen > rejected).sum().item(),
                len(pairs),
                n_tokens,
            ],
            engine.device,
        )
        elapsed = time.perf_counter() - t0
        n = max(totals[3], 1)
        result.trained_tokens += int(totals[4])
        result.loss_curve.append((step, totals[0] / n))
        self._report(
            step,
            epoch,
            train_loss=totals[0] / n,
            train_reward_margin=totals[1] / n,
            train_reward_accuracy=totals[2] / n,
            learning_rate=self.scheduler.get_last_lr()[0],
            tokens_per_second=round(totals[4] / elapsed, 1),
        )

    def evaluate(self) -> dict[str, float]:
        """DPO's loss, reward margin and reward accuracy (chosen rewarded above rejected) over the
        validation pairs."""
        import torch

        engine = self.engine
        engine.eval()
        totals = [0.0, 0.0, 0.0, 0.0]
        indices = list(range(len(self.valid_set)))
        mine = shard(indices, self.rank, self.world) if len(indices) >= self.world else indices[:1]
        with torch.no_grad():
            for start in range(0, len(mine), self.micro_batch):
                part = mine[start : start + self.micro_batch]
                pairs = [self.valid_set[i] for i in part]
                loss, chosen, rejected = self._scores(pairs, [self.valid_reference[i] for i in part])
                totals[0] += loss.item() * len(pairs)
                totals[1] += (chosen - rejected).sum().item()
                totals[2] += (chosen > rejected).sum().item()
                totals[3] += len(pairs)
        engine.train()
        summed = _all_reduce_sum(totals, engine.device)
        n = max(summed[3], 1)
        return {
            "valid_loss": summed[0] / n,
            "valid_reward_margin": summed[1] / n,
            "valid_reward_accuracy": summed[2] / n,
        }
