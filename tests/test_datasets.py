"""Dataset readers on tiny fake trees, plus the real Ped2 copy when it is there."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from lpgb.runtime.datasets import check_dataset, open_dataset
from lpgb.runtime.errors import LpgbError

PED2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ped2"


def _frames(folder: Path, n: int, ext: str = ".jpg") -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}{ext}"), np.full((24, 32), 10 * i, np.uint8))


def _avi(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 24))
    for _ in range(n):
        writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()


def test_shanghaitech_layout(tmp_path: Path) -> None:
    _avi(tmp_path / "training/videos/01.avi", 4)
    _frames(tmp_path / "training/frames/02", 3)
    _frames(tmp_path / "testing/frames/01", 5)
    _frames(tmp_path / "testing/frames/02", 3)
    (tmp_path / "testing/test_frame_mask").mkdir()
    np.save(tmp_path / "testing/test_frame_mask/01.npy", np.array([0, 0, 1, 2, 0], np.int64))
    np.save(tmp_path / "testing/test_frame_mask/02.npy", np.array([0, 1], np.uint8))  # wrong length
    (tmp_path / "testing/boxes").mkdir()
    (tmp_path / "testing/boxes/01.json").write_text("[]")
    ds = open_dataset(tmp_path)
    assert ds.layout == "shanghaitech"
    train = ds.train_videos()
    assert [(v.name, v.source.name) for v in train] == [("01", "01.avi"), ("02", "02")]
    assert all(v.labels is None for v in train)
    test = ds.test_videos()
    assert test[0].labels.tolist() == [0, 0, 1, 1, 0] and test[0].labels.dtype == np.uint8
    assert test[0].boxes == tmp_path / "testing/boxes/01.json" and test[1].boxes is None
    report = check_dataset(tmp_path)
    assert "layout: shanghaitech" in report
    assert "train: 2 videos, 7 frames" in report
    assert "abnormal frames: 3" in report
    assert "02: 2 labels but 3 frames" in report


def test_avenue_layout(tmp_path: Path) -> None:
    _avi(tmp_path / "training_videos/01.avi", 3)
    _avi(tmp_path / "testing_videos/01.avi", 4)
    _avi(tmp_path / "testing_videos/02.avi", 2)
    masks = np.empty((1, 4), dtype=object)
    for i in range(4):
        m = np.zeros((24, 32), np.uint8)
        if i in (1, 2):
            m[5, 7] = 1
        masks[0, i] = m
    (tmp_path / "testing_label_mask").mkdir()
    savemat(str(tmp_path / "testing_label_mask/1_label.mat"), {"volLabel": masks})
    ds = open_dataset(tmp_path)
    assert ds.layout == "avenue"
    assert [v.name for v in ds.train_videos()] == ["01"]
    test = ds.test_videos()
    assert test[0].labels.tolist() == [0, 1, 1, 0]
    assert test[1].labels is None
    assert "abnormal frames: 2" in check_dataset(tmp_path)


def test_ucsd_layout(tmp_path: Path) -> None:
    _frames(tmp_path / "Train/Train001", 3, ".tif")
    _frames(tmp_path / "Test/Test001", 3, ".tif")
    _frames(tmp_path / "Test/Test002", 2, ".tif")
    gt = tmp_path / "Test/Test001_gt"
    gt.mkdir()
    for i in range(3):
        m = np.zeros((24, 32), np.uint8)
        if i == 2:
            m[3:5, 3:5] = 255
        cv2.imwrite(str(gt / f"{i:03d}.bmp"), m)
    (tmp_path / "Test/Test001.m").write_text("% matlab gt file, ignored")
    ds = open_dataset(tmp_path)
    assert ds.layout == "ucsd"
    assert [v.name for v in ds.train_videos()] == ["Train001"]
    test = ds.test_videos()
    assert [v.name for v in test] == ["Test001", "Test002"]
    assert test[0].labels.tolist() == [0, 0, 1] and test[1].labels is None


def test_plain_folder_and_errors(tmp_path: Path) -> None:
    _avi(tmp_path / "cam/a.avi", 2)
    _frames(tmp_path / "cam/b", 2)
    ds = open_dataset(tmp_path / "cam")
    assert ds.layout == "folder"
    assert [v.name for v in ds.test_videos()] == ["a", "b"]
    assert all(v.labels is None for v in ds.train_videos())
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing/readme.txt").write_text("x")
    with pytest.raises(LpgbError, match="ShanghaiTech.*Avenue.*UCSD"):
        open_dataset(tmp_path / "nothing")
    with pytest.raises(LpgbError, match="does not exist"):
        open_dataset(tmp_path / "missing")


@pytest.mark.ped2
def test_real_ped2() -> None:
    if not (PED2 / "testing").is_dir():
        pytest.skip(f"no Ped2 copy at {PED2}")
    ds = open_dataset(PED2)
    assert ds.layout == "shanghaitech"
    assert len(ds.train_videos()) == 16
    test = ds.test_videos()
    assert [v.name for v in test] == ["01", "02", "03", "04", "05", "06"]
    for v in test:
        assert v.labels is not None and len(v.labels) == len(list(v.source.glob("*.jpg")))
        assert 0 < v.labels.sum() < len(v.labels)
    assert "problems: none" in check_dataset(PED2)


def test_check_decodes_every_frame_and_reads_masks_safely(tmp_path):
    """`lpgb-data check` decodes frames (an undecodable .jpg is a problem) and a corrupt mask is one line."""
    import cv2

    from lpgb.runtime.datasets import check_dataset

    for split in ("training", "testing"):
        folder = tmp_path / split / "frames" / "01"
        folder.mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(folder / f"{i:03d}.jpg"), np.full((16, 16, 3), 100, np.uint8))
    (tmp_path / "testing" / "frames" / "01" / "001.jpg").write_bytes(b"not a jpeg")
    report = check_dataset(tmp_path)
    assert "cannot decode image" in report and "001.jpg" in report and "problems: 1" in report
    (tmp_path / "testing" / "test_frame_mask").mkdir()
    (tmp_path / "testing" / "test_frame_mask" / "01.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(LpgbError, match="01.npy is not a numeric .npy array"):
        check_dataset(tmp_path)
