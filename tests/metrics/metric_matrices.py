"""Accuracy matrices shared by the metric tests (pytest puts this folder on sys.path, as tests/ for tiny_kit.py)."""

# 4 tasks; values chosen so that an off-by-one in any index changes the result.
# The max of column 0 over earlier steps moves from the diagonal (90) to step 2 (95), and
# forgetting after step 2 on task 0 is negative. Entries j > t are before-training accuracies.
A4 = [
    [90.0, 10.0, 5.0, 0.0],
    [70.0, 80.0, 8.0, 2.0],
    [95.0, 60.0, 85.0, 4.0],
    [50.0, 65.0, 70.0, 95.0],
]
N4 = [10, 20, 30, 40]  # test samples per task
C4 = [4, 3, 2, 1]  # classes per task
A0_4 = [1.0, 2.0, 3.0, 4.0]  # accuracy of the untrained model per task

# MoE-Adapters4CL CIFAR-100 10-10, first three tasks (metrics-definitions.md §3).
FIXTURE_ROWS = [[98.4], [96.2, 93.2], [90.4, 90.8, 86.6]]
