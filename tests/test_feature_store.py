"""Image feature stores: LMDB and HDF5 readers against the reference reader's outputs."""
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from dataloader.feature_store import (Hdf5FeatureStore, LmdbFeatureStore, convert_lmdb_to_hdf5,
                                      open_feature_store, restricted_loads, write_lmdb_feature_store)
from utils.errors import UserError

RECORD_KEYS = ("features", "num_boxes", "image_location", "image_location_ori", "cls_prob")


@pytest.fixture(scope="module")
def lmdb_path(golden_dir):
    return golden_dir / "visdial_img_feat.lmdb"


@pytest.fixture(scope="module")
def hdf5_path(lmdb_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("features") / "features.h5"
    convert_lmdb_to_hdf5(str(lmdb_path), str(path), show_progress=False)
    return path


def assert_records_equal(mine, expected):
    assert mine["num_boxes"] == expected["num_boxes"]
    for key in RECORD_KEYS[:1] + RECORD_KEYS[2:]:
        value = torch.as_tensor(np.asarray(mine[key]))
        assert value.dtype == expected[key].dtype, key
        assert torch.equal(value, expected[key]), key


def test_lmdb_reader_equals_reference(golden_dir, lmdb_path):
    reference = torch.load(golden_dir / "image_reader_outputs.pt", weights_only=True)
    store = open_feature_store(lmdb_path)
    assert isinstance(store, LmdbFeatureStore)
    assert [str(image_id) for image_id in store.image_ids()] == reference["_keys"]
    for image_id, expected in reference.items():
        if image_id != "_keys":
            assert_records_equal(store[image_id], expected)
            assert_records_equal(store[str(image_id)], expected)


def test_hdf5_reader_equals_lmdb_reader_for_every_image(lmdb_path, hdf5_path):
    lmdb_store, hdf5_store = open_feature_store(lmdb_path), open_feature_store(hdf5_path)
    assert isinstance(hdf5_store, Hdf5FeatureStore)
    assert hdf5_store.image_ids() == lmdb_store.image_ids()
    for image_id in lmdb_store.image_ids():
        expected = {key: torch.as_tensor(np.asarray(value)) if key != "num_boxes" else value
                    for key, value in lmdb_store[image_id].items()}
        assert_records_equal(hdf5_store[image_id], expected)


def test_several_readers_over_one_store_and_membership(lmdb_path):
    first, second = LmdbFeatureStore(lmdb_path), LmdbFeatureStore(lmdb_path)
    image_id = first.image_ids()[0]
    assert np.array_equal(first[image_id]["features"], second[image_id]["features"])
    assert image_id in first and 123 not in first and len(first) == 14
    with pytest.raises(UserError, match="image 123 is not in this feature store"):
        first[123]


class _FirstFeatureOf(Dataset):
    def __init__(self, store):
        self.store, self.ids = store, store.image_ids()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return torch.from_numpy(self.store[self.ids[index]]["features"][0].copy())


@pytest.mark.parametrize("kind", ["lmdb", "hdf5"])
def test_readers_work_in_dataloader_worker_processes(kind, lmdb_path, hdf5_path):
    store = open_feature_store(lmdb_path if kind == "lmdb" else hdf5_path)
    store[store.image_ids()[0]]  # opened in the parent before the workers start
    in_workers = torch.cat(list(DataLoader(_FirstFeatureOf(store), batch_size=7, num_workers=2)))
    in_process = torch.stack([_FirstFeatureOf(store)[i] for i in range(len(store))])
    assert torch.equal(in_workers, in_process)
    assert pickle.loads(pickle.dumps(store)).image_ids() == store.image_ids()


def test_writer_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    records = [dict(image_id=7 + k, image_h=480, image_w=640, num_boxes=n,
                    features=rng.random((n, 2048), dtype=np.float32),
                    boxes=np.tile(np.array([[10, 20, 110, 220]], dtype=np.float32), (n, 1)),
                    cls_prob=rng.dirichlet(np.ones(1601), n).astype(np.float32))
               for k, n in enumerate([3, 5])]
    assert write_lmdb_feature_store(tmp_path / "store.lmdb", records) == 2
    store = open_feature_store(tmp_path / "store.lmdb")
    assert store.image_ids() == [7, 8]
    record = store[8]
    assert record["num_boxes"] == 6
    assert np.array_equal(record["features"][1:], records[1]["features"])
    assert np.allclose(record["features"][0], records[1]["features"].mean(0), atol=1e-6)
    assert np.allclose(record["image_location"][1], [10 / 640, 20 / 480, 110 / 640, 220 / 480, 0.065104166])
    assert np.array_equal(record["cls_prob"][0], np.eye(1601, dtype=np.float32)[0])


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (subprocess.call, ([sys.executable, "-c", f"open({str(marker)!r}, 'w')"],))

    with pytest.raises(UserError, match="only plain data"):
        restricted_loads(pickle.dumps(Payload(), protocol=3), "hostile.lmdb")
    assert not marker.exists()
    plain = {"a": [1, 2.5, (b"x", "y")], b"b": None, "c": True}
    assert restricted_loads(pickle.dumps(plain, protocol=3), "plain") == plain
