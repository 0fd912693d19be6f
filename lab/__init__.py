"""The hibernation-resume lab: the model (lab.hw, lab.kernel), runs (lab.scenario), the matrix
of fixes and hazards (lab.compare), the explorer (lab.explore) and ``lab.judge(MyFix)``.

``lab.judge`` and ``lab.explore`` are modules that can also be called as their function
(loaded on first use, so ``import lab`` stays cheap)."""


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: lab.judge / lab.explore on first use
    if name in ("judge", "explore"):
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
