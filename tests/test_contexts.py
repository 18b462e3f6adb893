"""Context assignment inside a group, worked out by hand."""

import pytest

from fst_prompt.slow.contexts import assign_contexts, context_index


def test_g8_k4_two_rollouts_per_context():
    # rollout j of group 0 -> j mod 4
    assert assign_contexts(8, group_size=8, k=4) == [0, 1, 2, 3, 0, 1, 2, 3]
    # group 1 starts at global row 8; (j + 8) mod 4 == j mod 4: the same even split
    assert assign_contexts(8, group_size=8, k=4, first_row=8) == [0, 1, 2, 3, 0, 1, 2, 3]


def test_g4_k3_uneven_split_rotates_across_groups():
    # group 0: (j + 0) mod 3 -> 0 1 2 0   (context 0 gets the extra rollout)
    # group 1: (j + 4) mod 3 -> 1 2 0 1   (context 1 gets it)
    # group 2: (j + 8) mod 3 -> 2 0 1 2   (context 2 gets it)
    assert assign_contexts(12, group_size=4, k=3) == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]
    groups = [assign_contexts(4, 4, 3, first_row=4 * g) for g in range(3)]
    assert groups == [[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1, 2]]
    for g in groups:
        counts = [g.count(c) for c in range(3)]
        assert sorted(counts) == [1, 1, 2]  # as even as possible inside each group


def test_k1_is_plain_grpo():
    assert assign_contexts(8, group_size=4, k=1) == [0] * 8


def test_process_slices_agree_with_one_process():
    whole = assign_contexts(16, group_size=4, k=3)
    assert assign_contexts(8, 4, 3, first_row=0) + assign_contexts(8, 4, 3, first_row=8) == whole


def test_bad_arguments():
    with pytest.raises(ValueError):
        context_index(4, 0, 4, 2)
    with pytest.raises(ValueError):
        context_index(0, 0, 4, 0)
