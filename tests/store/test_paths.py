"""Store keys: one place formats them, and the store's own files land where the layout says."""

from __future__ import annotations

from semscale.store import paths


def test_keys_follow_the_documented_layout() -> None:
    assert paths.sem_level("t1", 2) == "images/t1/scale2/image"
    assert paths.label_level("t1", "target") == "images/t1/labels/target/scale0/image"
    assert paths.eds("t1") == "eds/t1"
    assert paths.prediction("unet", "t1") == "predictions/unet/t1"
    assert paths.member_file("unet", 3) == "models/unet/member_3.keras"
    assert paths.member_file("unet", 3, "best") == "models/unet/checkpoints/member_3_best.weights.h5"
    assert paths.scratch("labelling", "t1") == "scratch/labelling/t1"
    assert {k for k in paths.MEMBER_FILES} == {"model", "sidecar", "history", "last", "best", "state"}
