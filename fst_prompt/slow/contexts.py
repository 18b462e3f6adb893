"""Which population context each rollout of a group uses (pure functions, tested by hand).

Rule: rollout j (0-based) of group g uses context (j + g*G) mod K. Within every group the K contexts
are used as evenly as possible — exactly G/K rollouts each when K divides G, otherwise the counts differ
by at most one — and the offset g*G rotates which contexts get the extra rollouts from group to group,
so over many groups every context gets its share. K=1 is plain GRPO. With K > G a group sees only G
of the contexts (still rotating across groups).
"""

from __future__ import annotations


def context_index(position: int, group: int, group_size: int, k: int) -> int:
    """Context of rollout `position` in group `group` (G = group_size rollouts per problem)."""
    if not 0 <= position < group_size:
        raise ValueError(f"position {position} outside a group of {group_size}")
    if k < 1:
        raise ValueError(f"need at least one context, got k={k}")
    return (position + group * group_size) % k


def assign_contexts(n_rows: int, group_size: int, k: int, first_row: int = 0) -> list[int]:
    """Contexts for `n_rows` consecutive rows of the global batch starting at global row `first_row`.

    Rows of one group are `group_size` consecutive copies of a problem (TRL's RepeatSampler), so global
    row r is position r % G of group r // G. A process handling rows [first_row, first_row + n_rows)
    gets the same assignment it would in a single-process run.
    """
    return [context_index((first_row + i) % group_size, (first_row + i) // group_size, group_size, k)
            for i in range(n_rows)]
