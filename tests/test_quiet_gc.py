"""The heap frozen for a run: collections skip what existed before it; it is handed back."""

import gc

from loadtest.engine.quiet_gc import frozen_heap


def test_objects_alive_at_the_start_are_frozen_during_the_run_and_handed_back():
    before = [object() for _ in range(10)]  # noqa: F841  (kept alive on purpose)
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    with frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        young, middle, oldest = gc.get_threshold()
        assert (young, middle) == thresholds[:2]  # young cycles still die as usual
        assert oldest >= 1_000_000  # no full collection mid-run
        with frozen_heap():  # nested (a closed-loop calibration inside a run): left alone
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds


def test_the_heap_is_handed_back_when_the_run_raises():
    try:
        with frozen_heap():
            raise RuntimeError("the run failed")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0
