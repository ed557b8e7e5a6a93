"""The RL round's reward (label + grounded citations against Z*), GRPO advantages and loss, settings."""

from __future__ import annotations

import math

import pytest
import torch

from selfsynth.config import load_config
from selfsynth.errors import ConfigError
from selfsynth.metrics.grounding import cite_phrases
from selfsynth.records import Example
from selfsynth.stages.grpo import grpo_loss, image_order
from selfsynth.stages.rl import rl_images
from selfsynth.stages.rl_reward import group_advantages, reward

LABELS = ["scarlet finch", "blue jay"]
BANK = ["red crown", "black mask", "short thick bill", "blue crest", "white wing bars"]
ZSTAR = ["red crown", "black mask", "short thick bill"]  # what this image was seen to show


def score(answer: str, *, label: str = "scarlet finch", cap: int = 4, citer=cite_phrases, zstar=ZSTAR):
    return reward(
        answer, label, LABELS, zstar, BANK, citer, cite_bonus=0.25, cite_cap=cap, outside_penalty=0.5
    )


def test_grounded_and_hallucinated_citations_count_exactly():
    r = score("This is a scarlet finch: a red crown, a black mask and white wing bars.")
    assert r.correct
    assert r.grounded == ("red crown", "black mask")
    assert r.outside == ("white wing bars",)  # a bank concept the image was not seen to show
    assert r.value == pytest.approx(1.0 + 2 * 0.25 - 0.5)


def test_wrong_label_and_other_class_concepts():
    r = score("This is a blue jay, with a blue crest.")
    assert not r.correct and r.grounded == () and r.outside == ("blue crest",)
    assert r.value == pytest.approx(-0.5)
    plain = score("This is a scarlet finch.")  # right, no evidence: the label alone
    assert plain.value == 1.0 and plain.grounded == plain.outside == ()
    assert score("A bird on a branch.").value == 0.0


def test_cap_limits_the_bonus_not_the_penalty():
    answer = "A scarlet finch: red crown, black mask, short thick bill, blue crest, white wing bars."
    assert score(answer, cap=0).value == pytest.approx(1 + 3 * 0.25 - 2 * 0.5)  # 0 = no cap
    assert score(answer, cap=1).value == pytest.approx(1 + 0.25 - 2 * 0.5)
    assert score(answer, cap=1).grounded == ("red crown", "black mask", "short thick bill")


def test_a_dataset_citer_is_used_and_concepts_compare_normalised():
    seen = []

    def citer(text, phrases):  # a dataset's own matcher (e.g. the world's synonyms)
        seen.append(list(phrases))
        return ["Red  Crown", "white-wing bars"]

    r = score("This is a scarlet finch.", citer=citer, zstar=["red crown"])
    assert r.grounded == ("Red  Crown",) and r.outside == ("white-wing bars",)
    assert seen == [BANK]  # Z* is part of the bank: offered once
    assert r.value == pytest.approx(1 + 0.25 - 0.5)


def test_group_advantages_normalise_within_each_group():
    assert group_advantages([1, 0, 0, 1, 2, 2], 2, eps=0) == [1.0, -1.0, -1.0, 1.0, 0.0, 0.0]
    adv = group_advantages([1.0, 0.5, 0.0, 0.5], 4)
    std = math.sqrt(0.125)
    assert adv == pytest.approx([0.5 / (std + 1e-4), 0.0, -0.5 / (std + 1e-4), 0.0])
    assert sum(adv) == pytest.approx(0.0)
    assert group_advantages([0.1] * 4, 4) == [0.0] * 4  # a group that scored alike teaches nothing
    with pytest.raises(ValueError):
        group_advantages([1.0, 0.0, 1.0], 2)


def test_grpo_loss_policy_term_and_k3_kl():
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = torch.tensor([2.0, -1.0])
    loss, kl = grpo_loss(logp, None, mask, adv, 0.1)
    assert loss.tolist() == pytest.approx([-2.0 * -1.5, 1.0 * -0.5])  # -A * mean log-prob per answer
    assert kl.tolist() == [0.0, 0.0]
    ref = torch.tensor([[-1.5, -2.0, 7.0], [-0.5, 0.0, 0.0]])  # the padded position must not count
    loss, kl = grpo_loss(logp, ref, mask, adv, 0.1)
    k3 = math.exp(-0.5) + 0.5 - 1
    assert kl.tolist() == pytest.approx([k3 / 2, 0.0])
    assert loss.tolist() == pytest.approx([3.0 + 0.1 * k3 / 2, -0.5])


def test_images_with_zstar_evenly_spaced_and_stream_covers_them():
    train = [Example(f"i{k}", f"/x/{k}.png", "a", "train") for k in range(10)]
    selected = {f"i{k}": ["red crown"] for k in range(10) if k != 3}
    assert [e.id for e in rl_images(train, selected, 0)] == [f"i{k}" for k in range(10) if k != 3]
    assert [e.id for e in rl_images(train, selected, 3)] == ["i0", "i4", "i7"]
    order = image_order(9, 3, 6, seed=0)
    assert len(order) == 18 and sorted(order[:9]) == list(range(9))  # each epoch a permutation
    assert (order == image_order(9, 3, 6, seed=0)).all() and not (order == image_order(9, 3, 6, seed=1)).all()


def test_rl_settings_are_off_by_default_and_checked_when_on():
    need = ["data.root=x", "model.path=y"]
    assert not load_config(None, need).rl.enabled
    assert load_config(None, [*need, "rl.enabled=true", "rl.group=4"]).rl.group == 4
    with pytest.raises(ConfigError, match="rl.group"):
        load_config(None, [*need, "rl.enabled=true", "rl.group=1"])
    with pytest.raises(ConfigError, match="Z"):
        load_config(None, [*need, "rl.enabled=true", "method=nl"])
    with pytest.raises(ConfigError, match="rl.temperature"):
        load_config(None, [*need, "rl.enabled=true", "rl.temperature=0"])
    load_config(None, [*need, "rl.group=1", "method=nl"])  # disabled: nothing is checked, nothing changes
    with pytest.raises(ConfigError, match="did you mean"):
        load_config(None, [*need, "rl.grup=4"])
