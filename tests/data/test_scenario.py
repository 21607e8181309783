"""Scenarios: task sizes, orders, and the paper's class orders reproduced name by name."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import yaml

from mcil.config import ConfigError
from mcil.data.prepare import MINIARIC_CLASSES, imagenet_esc_classes
from mcil.data.scenario import Scenario, make_scenario, paper_order, separate_pairs, task_sizes

# Expected tasks, copied from shared/reference/paper-protocol.md §2.
MINI_T3 = [
    ["unknown", "listening", "reading", "using_phone", "using_pad", "using_computers", "scratching_head", "writing",
     "talking", "standing", "sleeping", "teaching", "yawning"],
    ["walking", "relaxing", "analyzing", "taking_bottle", "gathering_up_bag", "drinking", "taking_photos",
     "listening_to_music", "discussing", "setting_equipment"],
    ["taking_bag", "blackboard_writing", "blackboard_wiping", "taking_off", "student_demonstrating", "eating",
     "reviewing", "handsup", "speaking", "picking_up_computers"],
]
MINI_T5 = [
    MINI_T3[0],
    ["walking", "relaxing", "analyzing", "taking_bottle", "gathering_up_bag"],
    ["drinking", "taking_photos", "listening_to_music", "discussing", "setting_equipment"],
    ["taking_bag", "blackboard_writing", "blackboard_wiping", "taking_off", "student_demonstrating"],
    ["eating", "reviewing", "handsup", "speaking", "picking_up_computers"],
]
IN19_T3 = [
    ["chainsaw", "chickadee", "Otterhound", "cock", "vacuum cleaner", "bullet train", "pig"],
    ["computer mouse", "Egyptian cat", "big-horn sheep", "digital clock", "wall clock", "cricket"],
    ["fly", "hen", "tree frog", "computer keyboard", "airliner", "washing machine"],
]
IN19_T6 = [
    ["chainsaw", "chickadee", "Otterhound", "cock"],
    ["vacuum cleaner", "bullet train", "pig"],
    ["computer mouse", "Egyptian cat", "big-horn sheep"],
    ["digital clock", "wall clock", "cricket"],
    ["fly", "hen", "tree frog"],
    ["computer keyboard", "airliner", "washing machine"],
]
IN27_T5 = [
    ["fly", "chainsaw", "big-horn sheep", "computer mouse", "wall clock", "vacuum cleaner", "water jug"],
    ["chickadee", "washing machine", "hen", "church", "bullet train"],
    ["tree frog", "airliner", "pig", "toilet seat", "Otterhound"],
    ["water bottle", "Egyptian cat", "can opener", "cricket", "washbasin"],
    ["fire screen", "cock", "digital clock", "sandbar", "computer keyboard"],
]
IN27_T8 = [
    ["fly", "chainsaw", "big-horn sheep", "computer mouse", "wall clock", "vacuum cleaner"],
    ["water jug", "chickadee", "washing machine"],
    ["hen", "church", "bullet train"],
    ["tree frog", "airliner", "pig"],
    ["toilet seat", "Otterhound", "water bottle"],
    ["Egyptian cat", "can opener", "cricket"],
    ["washbasin", "fire screen", "cock"],
    ["digital clock", "sandbar", "computer keyboard"],
]


@pytest.mark.parametrize(
    "dataset, n_classes, T, expected",
    [
        ("miniaric", 33, 3, MINI_T3),
        ("miniaric", 33, 5, MINI_T5),
        ("imagenet-esc-19", 19, 3, IN19_T3),
        ("imagenet-esc-19", 19, 6, IN19_T6),
        ("imagenet-esc-27", 27, 5, IN27_T5),
        ("imagenet-esc-27", 27, 8, IN27_T8),
    ],
)
def test_paper_tasks_reproduced_exactly(dataset, n_classes, T, expected):
    _order, names = paper_order(dataset)
    sc = make_scenario(n_classes, n_tasks=T, order="paper", dataset=dataset, class_names=names)
    assert sc.n_tasks == T
    assert [[names[c] for c in task] for task in sc.tasks] == expected


def test_paper_name_tables_agree_with_preparers():
    assert paper_order("miniaric")[1] == MINIARIC_CLASSES
    for subset in (19, 27):
        entries = imagenet_esc_classes(subset)
        path = resources.files("mcil") / f"resources/class_orders/imagenet-esc-{subset}.yaml"
        data = yaml.safe_load(path.read_text())
        assert data["wnids"] == sorted(data["wnids"]) == [e["wnid"] for e in entries]
        names = tuple(e["name"] for e in entries)
        assert tuple(data["class_names"]) == paper_order(f"imagenet-esc-{subset}")[1] == names


def test_paper_order_refuses_relabelled_data():
    names = list(paper_order("imagenet-esc-19")[1])
    names[0], names[1] = names[1], names[0]
    with pytest.raises(ConfigError, match="label 0 is 'hen' but the paper order .* expects 'cock'"):
        make_scenario(19, n_tasks=3, order="paper", dataset="imagenet-esc-19", class_names=names)
    # pre-training class names after the incremental ones are ignored
    right = list(paper_order("imagenet-esc-19")[1])
    assert make_scenario(19, n_tasks=6, order="paper", dataset="imagenet-esc-19", class_names=right + ["x"]).n_tasks == 6
    with pytest.raises(ConfigError, match="has 19 classes but the dataset has 18"):
        make_scenario(18, n_tasks=3, order="paper", dataset="imagenet-esc-19")
    with pytest.raises(ConfigError, match="'synav' has none"):
        make_scenario(10, n_tasks=2, order="paper", dataset="synav")


def test_paper_order_without_stored_split_is_even():
    sc = make_scenario(19, n_tasks=4, order="paper", dataset="imagenet-esc-19")
    assert sc.task_sizes == (7, 4, 4, 4)


@pytest.mark.parametrize(
    "n, T, sizes", [(10, 3, [4, 3, 3]), (10, 5, [2, 2, 2, 2, 2]), (7, 7, [1] * 7), (11, 4, [5, 2, 2, 2]), (5, 1, [5])]
)
def test_even_split_remainder_to_first(n, T, sizes):
    assert task_sizes(n, n_tasks=T) == sizes


def test_initial_increment_like_continuum():
    assert task_sizes(33, initial=13, increment=10) == [13, 10, 10]
    assert task_sizes(10, initial=4, increment=4) == [4, 4, 2]  # last task partial
    assert task_sizes(10, n_tasks=3, initial=4, increment=4) == [4, 4, 2]
    with pytest.raises(ConfigError, match="n_tasks=4 disagrees with initial=4, increment=4 .* give 3 tasks"):
        task_sizes(10, n_tasks=4, initial=4, increment=4)
    with pytest.raises(ConfigError, match="initial and increment together"):
        task_sizes(10, n_tasks=3, initial=4)
    with pytest.raises(ConfigError, match="n_tasks: 11 is out of range; allowed: 1..10"):
        task_sizes(10, n_tasks=11)


def test_random_order_uses_default_rng_permutation():
    sc = make_scenario(12, n_tasks=4, order="random", order_seed=3)
    assert list(sc.class_order) == np.random.default_rng(3).permutation(12).tolist()
    assert make_scenario(12, n_tasks=4, order_seed=3) == sc
    assert make_scenario(12, n_tasks=4, order_seed=4).class_order != sc.class_order
    assert sc.tasks == tuple(tuple(sc.class_order[i : i + 3]) for i in range(0, 12, 3))


def test_sorted_and_explicit_orders():
    assert make_scenario(4, n_tasks=2, order="sorted").tasks == ((0, 1), (2, 3))
    sc = make_scenario(4, n_tasks=2, order=[3, 1, 0, 2])
    assert sc.tasks == ((3, 1), (0, 2))
    assert sc.seen_classes(0) == (3, 1) and sc.seen_classes(1) == (3, 1, 0, 2)
    assert sc.task_of(0) == 1
    assert sc.to_dict() == {"class_order": [3, 1, 0, 2], "tasks": [[3, 1], [0, 2]], "n_classes": 4}
    with pytest.raises(ConfigError, match="permutation of 0..3; missing/extra labels \\[2\\], repeated \\[1\\]"):
        make_scenario(4, n_tasks=2, order=[3, 1, 0, 1])
    with pytest.raises(ConfigError, match="'shuffled' is not allowed"):
        make_scenario(4, n_tasks=2, order="shuffled")


def test_scenario_rejects_inconsistent_tasks():
    with pytest.raises(ConfigError, match="do not concatenate"):
        Scenario(class_order=(0, 1, 2), tasks=((0,), (2, 1)), n_classes=3)


def _task_map(sc):
    return {c: t for t, task in enumerate(sc.tasks) for c in task}


@pytest.mark.parametrize("seed", range(20))
def test_separate_pairs_puts_twins_in_different_tasks(seed):
    rng = np.random.default_rng(100 + seed)
    labels = rng.permutation(40).tolist()
    pairs = [(labels[2 * i], labels[2 * i + 1]) for i in range(8)]  # 16 of 40 classes are twins
    plain = make_scenario(40, n_tasks=5, order_seed=seed)
    sc = make_scenario(40, n_tasks=5, order_seed=seed, separate=pairs)
    where = _task_map(sc)
    assert all(where[a] != where[b] for a, b in pairs)
    assert sorted(sc.class_order) == list(range(40)) and [len(t) for t in sc.tasks] == [8] * 5
    # Minimal repair: at most one swap per clashing pair (one swap can mend two clashes).
    before = _task_map(plain)
    clashes = sum(before[a] == before[b] for a, b in pairs)
    changed = sum(p != q for p, q in zip(plain.class_order, sc.class_order))
    assert changed <= 2 * clashes and (changed > 0) == (clashes > 0)
    assert make_scenario(40, n_tasks=5, order_seed=seed, separate=pairs) == sc  # deterministic


def test_separate_pairs_leaves_other_orders_and_one_task_alone():
    pairs = [(0, 1)]
    assert make_scenario(4, n_tasks=2, order="sorted", separate=pairs).tasks == ((0, 1), (2, 3))
    assert make_scenario(4, n_tasks=1, order_seed=0, separate=pairs).tasks[0] == tuple(
        np.random.default_rng(0).permutation(4).tolist()
    )
    sc = make_scenario(4, n_tasks=2, order=[0, 1, 2, 3], separate=pairs)
    assert sc.tasks == ((0, 1), (2, 3))  # an explicit order is the user's: never rewritten


def test_separate_pairs_errors():
    with pytest.raises(ConfigError, match="must be disjoint"):
        separate_pairs([0, 1, 2, 3], [2, 2], [(0, 1), (1, 2)])
    with pytest.raises(ConfigError, match="cannot be placed in different tasks"):  # 3 pairs, a 2-class task
        separate_pairs([0, 1, 2, 3, 4, 5], [4, 2], [(0, 1), (2, 3), (4, 5)])
