"""Paired data: the A|B split, the shared jitter, value ranges, synthetic pairs, download, real pairs;
images and arrays of every kind as RGB."""
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dataset
from dataset import PairedImageDataset, write_synthetic
from utils import load_image, to_rgb


def write_pair(folder, name, left, right):
    folder.mkdir(parents=True, exist_ok=True)
    pair = Image.new("RGB", (left.width + right.width, left.height))
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    pair.save(folder / name)


def test_split_and_direction(tmp_path):
    write_pair(tmp_path / "val", "1.png", Image.new("RGB", (300, 300), (255, 0, 0)),
               Image.new("RGB", (300, 300), (0, 0, 255)))
    x, y = PairedImageDataset(tmp_path, "val", "AtoB", train=False)[0]
    assert x.shape == y.shape == (3, 256, 256)
    assert torch.allclose(x[:, 128, 128], torch.tensor([1.0, -1.0, -1.0]))  # satellite (left) is the input
    assert torch.allclose(y[:, 128, 128], torch.tensor([-1.0, -1.0, 1.0]))
    x_b, y_b = PairedImageDataset(tmp_path, "val", "BtoA", train=False)[0]
    assert torch.equal(x_b, y) and torch.equal(y_b, x)


def test_training_jitter_is_random_but_identical_on_both_halves(tmp_path):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    write_pair(tmp_path / "train", "1.png", noise, noise)
    data = PairedImageDataset(tmp_path, "train", train=True, load_size=286, crop_size=256)
    samples = []
    for epoch in range(12):
        data.set_epoch(seed=0, epoch=epoch)
        samples.append(data[0])
        assert torch.equal(data[0][0], samples[-1][0])  # the same epoch gives the same crop
    for x, y in samples:
        assert x.shape == (3, 256, 256)
        assert torch.equal(x, y)  # same crop, same flip
        assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9 and x.max() > 0.9
    distinct = {tuple(x[:, :2, :2].flatten().tolist()) for x, _ in samples}
    assert len(distinct) > 4  # crops and flips really vary


def test_eval_transform_is_deterministic_and_cache_changes_nothing(synthetic):
    plain = PairedImageDataset(synthetic, "val", train=False)
    cached = PairedImageDataset(synthetic, "val", train=False, cache=True)
    cached.preload()
    assert len(cached.cache) == len(cached) == 4
    for i in range(len(plain)):
        assert torch.equal(plain[i][0], cached[i][0]) and torch.equal(plain[i][1], cached[i][1])


def test_bad_folders_and_odd_images_get_one_clear_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*dataset.py download"):
        PairedImageDataset(tmp_path, "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="has no images"):
        PairedImageDataset(tmp_path, "train")
    Image.new("RGB", (500, 300)).save(tmp_path / "train" / "odd.png")
    with pytest.raises(ValueError, match="odd.png is 500x300, not an A\\|B pair"):
        PairedImageDataset(tmp_path, "train")[0]
    (tmp_path / "train" / "odd.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot be read as an image"):
        PairedImageDataset(tmp_path, "train")[0]


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "I;16"])
def test_other_image_modes_become_rgb(tmp_path, mode):
    gray = np.full((64, 128), 200, dtype=np.uint8)
    image = Image.fromarray(gray).convert(mode) if mode != "I;16" else Image.fromarray(gray.astype(np.uint16) * 257)
    folder = tmp_path / "val"
    folder.mkdir()
    image.save(folder / "pair.png")
    x, y = PairedImageDataset(tmp_path, "val", train=False)[0]
    assert x.shape == (3, 256, 256)
    assert abs(x.mean().item() - (200 / 127.5 - 1)) < 0.02  # the grey level survives the conversion


def test_synthetic_pairs_are_maps_layout_and_differ(tmp_path):
    write_synthetic(tmp_path, count=3, val_count=2, size=96, seed=5)
    files = sorted((tmp_path / "train").glob("*.jpg"))
    assert len(files) == 3 and len(list((tmp_path / "val").glob("*.jpg"))) == 2
    pair = np.asarray(Image.open(files[0]), dtype=np.float32)
    assert pair.shape == (96, 192, 3)
    photo, drawn_map = pair[:, :96], pair[:, 96:]
    assert drawn_map.mean() > photo.mean() + 40  # maps are pale, photos dark, as in the real data
    assert not np.array_equal(np.asarray(Image.open(files[0])), np.asarray(Image.open(files[1])))


def test_download_unpacks_an_archive_and_fails_clearly_offline(tmp_path, synthetic):
    archive = tmp_path / "maps.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(synthetic, arcname="maps")
    root = dataset.download(tmp_path / "data", url=archive.as_uri())
    assert root == tmp_path / "data" / "maps"
    assert len(list((root / "train").glob("*.jpg"))) == 12
    assert not (tmp_path / "data" / "maps.tar.gz").exists()
    with pytest.raises(SystemExit, match="cannot fetch http://127.0.0.1:9/maps.tar.gz.*by hand"):
        dataset.download(tmp_path / "offline", url="http://127.0.0.1:9/maps.tar.gz")
    assert not list((tmp_path / "offline").glob("*.part"))


def test_a_cut_or_foreign_archive_leaves_no_half_dataset_and_a_rerun_fetches_anew(tmp_path, synthetic):
    archive = tmp_path / "maps.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(synthetic, arcname="maps")
    whole = archive.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) * 6 // 10])
    root = tmp_path / "data"
    for url, kind in (((tmp_path / "cut.tar.gz").as_uri(), "EOFError"),
                      ((synthetic / "train" / "1.jpg").as_uri(), "ReadError")):
        with pytest.raises(SystemExit, match=f"did not unpack \\({kind}: .*run this again to fetch it anew"):
            dataset.download(root, url=url)
        assert list(root.iterdir()) == []  # neither a half maps/ nor the archive
    assert len(list((dataset.download(root, url=archive.as_uri()) / "val").glob("*.jpg"))) == 4
    with pytest.raises(SystemExit, match="cannot fetch notaurl"):
        dataset.download(tmp_path / "elsewhere", url="notaurl")
    (tmp_path / "afile").write_text("a file where the data folder should go")
    with pytest.raises(SystemExit, match="cannot make the folder .*afile .*; pass another --root"):
        dataset.download(tmp_path / "afile", url=archive.as_uri())


def test_a_full_disk_while_unpacking_keeps_the_archive_for_the_next_run(tmp_path, synthetic, monkeypatch):
    archive = tmp_path / "maps.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(synthetic, arcname="maps")
        tar.add(synthetic / "val" / "1.jpg", arcname="._maps")  # what macOS's tar adds beside a folder
    real_extractall = tarfile.TarFile.extractall

    def disk_full(self, path, **kwargs):
        (Path(path) / "maps").mkdir(parents=True)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(tarfile.TarFile, "extractall", disk_full)
    root = tmp_path / "data"
    with pytest.raises(SystemExit, match="cannot unpack into .*No space left.*unpacks the kept .*maps.tar.gz"):
        dataset.download(root, url=archive.as_uri())
    assert [p.name for p in root.iterdir()] == ["maps.tar.gz"]
    monkeypatch.setattr(tarfile.TarFile, "extractall", real_extractall)
    target = dataset.download(root, url="http://127.0.0.1:9/unreachable.tar.gz")  # no second download
    assert len(list((target / "train").glob("*.jpg"))) == 12 and [p.name for p in root.iterdir()] == ["maps"]


def test_synthetic_pairs_never_overwrite_a_folder_that_holds_files(tmp_path):
    """The real dataset's files are named 1.jpg, 2.jpg ... as the synthetic ones are."""
    (tmp_path / "maps" / "train").mkdir(parents=True)
    (tmp_path / "maps" / "train" / "1.jpg").write_bytes(b"a real pair")
    with pytest.raises(SystemExit, match="^dataset: .*maps already exists and is not an empty folder"):
        dataset.main(["synthetic", str(tmp_path / "maps"), "--count", "1", "--val-count", "1", "--size", "64"])
    assert (tmp_path / "maps" / "train" / "1.jpg").read_bytes() == b"a real pair"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps"]
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(SystemExit, match="^dataset: cannot write .*afile.*choose another folder"):
        dataset.main(["synthetic", str(tmp_path / "afile" / "pairs"), "--count", "1", "--val-count", "1"])


def test_synthetic_pairs_fill_an_empty_folder_in_place_and_a_failure_leaves_nothing(tmp_path, monkeypatch):
    for folder in ("empty", "linked"):
        (tmp_path / folder).mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "linked")
    monkeypatch.chdir(tmp_path / "empty")
    assert write_synthetic(".", count=2, val_count=1, size=64) == Path(".")
    write_synthetic(tmp_path / "link", count=2, val_count=1, size=64)
    for folder in ("empty", "linked"):
        assert len(list((tmp_path / folder / "train").glob("*.jpg"))) == 2
    assert (tmp_path / "link").is_symlink()
    calls = []

    def fails_on_the_third(rng, size):
        calls.append(size)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return Image.new("RGB", (2 * size, size))
    monkeypatch.setattr(dataset, "synthetic_pair", fails_on_the_third)
    for out_dir in (tmp_path / "new", tmp_path / "empty_too"):
        if out_dir.name == "empty_too":
            out_dir.mkdir()
        calls.clear()
        with pytest.raises(OSError, match="No space left"):
            write_synthetic(out_dir, count=2, val_count=2, size=64)
        assert not (tmp_path / "new").exists() and not (tmp_path / "new.partial").exists()
    assert list((tmp_path / "empty_too").iterdir()) == []


def test_real_pairs_load_as_satellite_input_and_map_target(real_maps):
    data = PairedImageDataset(real_maps, "val", train=False)
    assert len(data) >= 1
    x, y = data[0]
    assert x.shape == y.shape == (3, 256, 256)
    assert -1 <= x.min() and x.max() <= 1
    assert y.mean() > x.mean() + 0.3  # the map (target) is the pale half, the photo the dark one
    train_set = PairedImageDataset(real_maps, "train", train=True)
    a, b = train_set[0]
    assert a.shape == b.shape == (3, 256, 256)


def test_arrays_of_any_numeric_type_become_the_same_rgb(real_maps):
    photo = np.asarray(Image.open(real_maps / "val" / "1.jpg").crop((0, 0, 64, 48)))
    same = [photo.astype(np.float32) / 255, photo.astype(np.float64), photo.astype(np.int64),
            photo.astype(np.uint16) * 257, np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])]
    for array in same:
        assert np.array_equal(np.asarray(to_rgb(array)), photo), array.dtype
    overshoot = photo.astype(np.float32) / 255
    overshoot[0, 0] = [1.003, -0.002, 0.5]  # as bicubic resampling leaves: clipped, not read as 0..255
    assert np.abs(np.asarray(to_rgb(overshoot)).astype(int) - photo).mean() < 0.1
    assert np.asarray(to_rgb(photo[..., 0])).shape == (48, 64, 3)


@pytest.mark.parametrize("array, message", [
    (np.zeros((3, 48, 64), np.uint8), "channels first; pass array.transpose"),
    (np.full((48, 64, 3), 4080, np.uint16), "reach only 4080 of 65535"),  # 12-bit data: a black photo
    (np.full((48, 64, 3), 510.0), "float values from 510 to 510"),
    (np.full((48, 64, 3), 1.5), "float values from 1.5 to 1.5"),  # neither [0, 1] nor 0..255
    (np.full((48, 64, 3), -0.5), "float values from -0.5"),
    (np.full((48, 64, 3), -1, np.int32), "integer values down to -1"),
    (np.zeros((48, 64, 2), np.uint8), "shape \\(48, 64, 2\\)"),
])
def test_arrays_whose_scale_or_shape_is_unclear_are_refused_with_the_fix(array, message):
    with pytest.raises(ValueError, match=message):
        to_rgb(array)


def test_files_are_turned_upright_and_odd_ones_named(tmp_path, monkeypatch):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: the camera was turned; show the image rotated 90 degrees clockwise
    image.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    upright = load_image(tmp_path / "turned.jpg", upright=True)
    assert upright.size == (20, 40) and upright.getpixel((10, 5))[2] > 200  # blue now on top
    assert load_image(tmp_path / "turned.jpg").size == (40, 20)  # A|B pair files are read as stored
    assert to_rgb(Image.new("LA", (8, 8), (90, 255)).convert("La")).getpixel((0, 0)) == (90, 90, 90)
    with pytest.raises(ValueError, match="missing.png: does not exist"):
        load_image(tmp_path / "missing.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a guard of 100 pixels makes 800 a "bomb"
    with pytest.raises(ValueError, match="turned.jpg: too large .* cut it into pieces"):
        load_image(tmp_path / "turned.jpg")


def test_the_check_before_training_finds_pairs_that_loading_would_refuse(tmp_path):
    Image.fromarray(np.full((64, 128), 2805, np.uint16)).save(tmp_path / "twelve_bit.png")  # 12-bit data
    Image.new("RGB", (128, 64)).save(tmp_path / "fine.png")
    bad = dataset.find_bad_pairs(sorted(tmp_path.iterdir()), min_side=64)
    assert list(bad) == [tmp_path / "twelve_bit.png"] and "reach only 2805 of 65535" in bad[tmp_path / "twelve_bit.png"]


def test_a_missing_split_names_the_splits_there(synthetic):
    with pytest.raises(FileNotFoundError, match="test does not exist; the splits there are train, val"):
        PairedImageDataset(synthetic, "test")
    with pytest.raises(FileNotFoundError, match="val looks like a split folder itself: pass its parent folder"):
        PairedImageDataset(synthetic / "val", "val")
