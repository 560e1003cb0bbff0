"""Learning-rate schedules, evaluated per step. Every one starts with an optional linear warmup."""
import math

SCHEDULES = ("constant", "step", "cosine", "onecycle")
STEP_MILESTONES = (0.5, 0.75)  # "step" multiplies the rate by STEP_GAMMA at these fractions of the run
STEP_GAMMA = 0.1
ONECYCLE_START = 1 / 25        # "onecycle" warms up from lr/25


def learning_rate(schedule: str, lr: float, step: int, total_steps: int, warmup_steps: int) -> float:
    """The rate for 0-based `step` of `total_steps`.

    constant: lr. step: lr, then x0.1 at 50 % and again at 75 % of the steps after warmup.
    cosine: half a cosine from lr down to 0. onecycle: linear up from lr/25 during warmup, then
    linear down to 0. During warmup every schedule but onecycle ramps linearly from lr/warmup to lr.
    """
    if step < warmup_steps:
        start = lr * ONECYCLE_START if schedule == "onecycle" else 0.0
        return start + (lr - start) * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    t = (step - warmup_steps) / span
    if schedule == "constant":
        return lr
    if schedule == "step":
        return lr * STEP_GAMMA ** sum(t >= m for m in STEP_MILESTONES)
    if schedule == "cosine":
        return 0.5 * lr * (1 + math.cos(math.pi * t))
    if schedule == "onecycle":
        return lr * (1 - t)
    raise ValueError(f"unknown schedule {schedule!r}")
