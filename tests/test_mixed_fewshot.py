"""Few-shot prompts composed from several tasks or categories (``--demos-from``)."""

from collections import Counter

import pytest

from tasks.errors import TaskError
from tasks.items import DemoSource, MCItem, build_mixed_fewshot


def _items(task, n, categories=("x", "y")):
    return [MCItem(f"{task}-{i}", task, f"{task} question {i} ?", [" yes", " no"], i % 2,
                   category=categories[i % len(categories)]) for i in range(n)]


POOLS = {"a": _items("a", 8), "b": _items("b", 6, categories=("p", "q", "r"))}


def test_composition_per_source_is_exact_and_seeded():
    item = POOLS["a"][0]
    sources = [DemoSource("a", 2, "y"), DemoSource("b", 3)]
    shot = build_mixed_fewshot(item, sources, POOLS, seed=3)
    ids = shot.meta["fewshot_ids"]
    assert Counter(i.split("-")[0] for i in ids) == {"a": 2, "b": 3}
    by_id = {x.id: x for pool in POOLS.values() for x in pool}
    assert all(by_id[i].category == "y" for i in ids if i.startswith("a-"))
    assert item.id not in ids and len(set(ids)) == len(ids)
    # the prompt is the demonstrations, solved, in the recorded order, then the item
    expected = "\n\n".join([by_id[i].context + by_id[i].answer for i in ids] + [item.context])
    assert shot.context == expected
    assert shot.meta["demos_from"] == ["a:y=2", "b=3"] and shot.meta["k"] == 5
    assert build_mixed_fewshot(item, sources, POOLS, seed=3).context == shot.context
    draws = {tuple(build_mixed_fewshot(item, sources, POOLS, seed=s).meta["fewshot_ids"]) for s in range(8)}
    assert len(draws) > 1  # the seed changes the draw


def test_overlapping_sources_never_repeat_a_demonstration():
    shot = build_mixed_fewshot(POOLS["b"][0], [DemoSource("b", 2, "q"), DemoSource("b", 3)], POOLS, seed=0)
    assert len(set(shot.meta["fewshot_ids"])) == 5 and "b-0" not in shot.meta["fewshot_ids"]


def test_bad_sources_name_the_valid_choices():
    item = POOLS["a"][0]
    with pytest.raises(TaskError, match="no category 'z'.*p, q, r"):
        build_mixed_fewshot(item, [DemoSource("b", 1, "z")], POOLS, seed=0)
    with pytest.raises(TaskError, match="unknown task; loaded: a, b"):
        build_mixed_fewshot(item, [DemoSource("c", 1)], POOLS, seed=0)
    with pytest.raises(TaskError, match="only 3 items"):  # a's category x without the item itself
        build_mixed_fewshot(item, [DemoSource("a", 4, "x")], POOLS, seed=0)
