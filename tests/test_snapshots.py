"""Snapshots: content-addressed dataset versions, the same on a local folder and on S3 (moto's server on loopback).

Storage is inspected directly (os.walk, boto3) so that "nothing written" and
"nothing left behind" are about the real objects, hidden and temporary files
included, not about the library's own listing.
"""

from __future__ import annotations

import functools
import io
import json
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import blake3
import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet
import pytest
import s3fs.core
from durability import assert_landed_durably, record_disk_events

import mlops_template.data.copies as copies_module
import mlops_template.data.manifest as manifest_module
from mlops_template.data.layout import Snapshot
from mlops_template.data.snapshots import SnapshotStore
from mlops_template.data.tables import write_table
from mlops_template.errors import IntegrityError, StorageError
from mlops_template.storage import LocalStorage, S3Storage
from mlops_template.storage.base import Stage


@pytest.fixture(scope="module", autouse=True)
def _shared_botocore_loader() -> Iterator[None]:
    """One botocore data loader for every client of this module: each S3Storage otherwise re-parses the S3 model."""
    import botocore.loaders
    import botocore.session

    loader = botocore.loaders.create_loader()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session, "create_loader", lambda *args, **kwargs: loader, raising=False)
        yield


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SnapshotStore:
    """An empty snapshot store on a local folder or under a prefix of a fresh moto bucket."""
    if request.param == "local":
        return SnapshotStore(LocalStorage(tmp_path / "root"))
    bucket = request.getfixturevalue("s3_bucket")  # brings the fake credentials with it
    endpoint = request.getfixturevalue("s3_endpoint")
    return SnapshotStore(S3Storage(f"s3://{bucket}/proj", endpoint_url=endpoint))


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temporary folder, so a test can check that no spool file is left behind."""
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def writes(store: SnapshotStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys published to storage from now on, by any path either backend writes through."""
    keys: list[str] = []

    def spy(real, key_at: int):
        def publish(*args):
            keys.append(args[key_at])
            return real(*args)

        return publish

    storage = store.storage
    for method in ("write_bytes", "put_file", "copy"):  # the key written is the first argument, or the second
        monkeypatch.setattr(storage, method, spy(getattr(storage, method), 0 if method == "write_bytes" else 1))
    monkeypatch.setattr(Stage, "commit", spy(Stage.commit, 1))  # (self, key)
    return keys


# -- raw storage access (independent of the library's listing) -------------------------


@functools.cache
def _client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _s3(store: SnapshotStore):
    bucket, _, prefix = store.storage.root.partition("/")
    return _client(store.storage.fs.client_kwargs["endpoint_url"]), bucket, prefix


def stored_objects(store: SnapshotStore) -> dict[str, int]:
    """Every object in the storage, hidden and temporary files included: {key: size}."""
    if isinstance(store.storage, LocalStorage):
        root = store.storage.root
        found = {}
        for folder, _, files in os.walk(root):
            for file in files:
                path = os.path.join(folder, file)
                found[os.path.relpath(path, root).replace(os.sep, "/")] = os.path.getsize(path)
        return found
    client, bucket, prefix = _s3(store)
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            found[obj["Key"].removeprefix(f"{prefix}/")] = obj["Size"]
    return found


def stored_bytes(store: SnapshotStore, key: str) -> bytes:
    if isinstance(store.storage, LocalStorage):
        return Path(store.storage.root, key).read_bytes()
    client, bucket, prefix = _s3(store)
    return client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()


def pending_uploads(store: SnapshotStore) -> list:
    """Unfinished multipart uploads (S3 only; a local folder has none)."""
    if isinstance(store.storage, LocalStorage):
        return []
    client, bucket, _ = _s3(store)
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def blake(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


# -- data ---------------------------------------------------------------------------


def frame(seed: int = 0, rows: int = 20) -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(seed, seed + rows), "label": [f"c{i % 3}" for i in range(rows)]})


def write_csv(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def colliding_csvs(length: int = 4) -> tuple[bytes, bytes]:
    """Two CSV bodies whose ids share their first `length` hex digits (CSV is stored byte for byte)."""
    seen: dict[str, bytes] = {}
    for i in range(1_000_000):
        body = f"x\n{i}\n".encode()
        prefix = blake(body)[:length]
        if prefix in seen:
            return seen[prefix], body
        seen[prefix] = body
    raise AssertionError("no collision found")


# -- writing a table ----------------------------------------------------------------


@pytest.mark.parametrize("as_arrow", [False, True], ids=["dataframe", "arrow"])
def test_same_table_twice_is_stored_once_and_writes_nothing_the_second_time(store, writes, as_arrow):
    data = pa.Table.from_pandas(frame(), preserve_index=False) if as_arrow else frame()
    first = store.write_table("train", data)
    before = stored_objects(store)
    writes.clear()

    second = store.write_table("train", data)

    assert first.written is True and second.written is False
    assert second.snapshot == first.snapshot
    assert stored_objects(store) == before  # not one byte more
    assert writes == []  # neither the snapshot nor the current copy, which already holds these bytes
    sid = first.snapshot.id
    assert sorted(before) == ["datasets/train.parquet", f"snapshots/train/{sid}.json", f"snapshots/train/{sid}.parquet"]
    assert store.list("train") == [first.snapshot]


def test_changed_data_is_a_new_snapshot_listed_newest_first(store):
    old = store.write_table("train", frame(0)).snapshot
    time.sleep(0.002)  # created_at has millisecond resolution
    new = store.write_table("train", frame(1)).snapshot
    time.sleep(0.002)
    other = store.write_table("test", frame(2)).snapshot

    assert new.id != old.id
    assert store.list("train") == [new, old]
    assert store.list() == [other, new, old]
    assert store.names() == ["test", "train"]
    assert len([k for k in stored_objects(store) if k.startswith("snapshots/train/")]) == 4


def test_id_is_the_blake3_of_the_stored_bytes(store):
    snapshot = store.write_table("train", frame()).snapshot
    data = stored_bytes(store, f"snapshots/train/{snapshot.id}.parquet")

    assert snapshot.digest == blake(data)
    assert snapshot.id == blake(data)[:16]
    assert snapshot.bytes == len(data)
    assert snapshot.format == "parquet" and snapshot.key == f"snapshots/train/{snapshot.id}.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(data)), frame())


def test_current_pointer_is_a_copy_of_the_snapshot(store):
    first = store.write_table("train", frame(0)).snapshot
    second = store.write_table("train", frame(1)).snapshot
    assert stored_bytes(store, "datasets/train.parquet") == stored_bytes(store, second.key)
    assert store.current("train") == second

    store.set_current(first)
    assert stored_bytes(store, "datasets/train.parquet") == stored_bytes(store, first.key)
    assert store.current("train") == first


def test_write_with_current_false_leaves_the_pointer_alone(store):
    first = store.write_table("train", frame(0)).snapshot
    second = store.write_table("train", frame(1), current=False)
    assert second.written is True
    assert store.current("train") == first
    assert {s.id for s in store.list("train")} == {first.id, second.snapshot.id}


def test_same_bytes_under_two_names_resolve_by_id_to_the_newest(store):
    first = store.write_table("a", frame()).snapshot
    time.sleep(0.002)
    stored = store.write_table("b", frame())
    second = stored.snapshot
    assert stored.written is True and second.id == first.id and second.name == "b"
    assert store.resolve(first.id) == second
    assert store.resolve(f"a:{first.id}") == first


# -- the manifest -------------------------------------------------------------------


def test_manifest_describes_the_table(store):
    rows = 60
    df = pd.DataFrame(
        {
            "id": np.arange(rows, dtype="int64"),  # a wide integer range: no top values
            "score": [float(i) / 7 if i % 10 else None for i in range(rows)],
            "grade": ["a"] * 30 + ["b"] * 20 + ["c"] * 9 + [None],
            "name": [f"n{i}" for i in range(rows)],  # more distinct values than a category has
            "level": [i % 3 for i in range(rows)],
        }
    )
    before = datetime.now(UTC)
    snapshot = store.write_table("profiled", df, run_id="run-123", step="prepare").snapshot
    after = datetime.now(UTC)

    assert snapshot.rows == rows
    assert [c["name"] for c in snapshot.columns] == list(df.columns)
    dtypes = {c["name"]: c["dtype"] for c in snapshot.columns}
    assert dtypes == {"id": "int64", "score": "double", "grade": "string", "name": "string", "level": "int64"}
    for column in snapshot.columns:
        assert column["nulls"] == int(df[column["name"]].isna().sum())
    for name in ("id", "score", "level"):
        column = snapshot.column(name)
        assert column["min"] == df[name].min()
        assert column["max"] == df[name].max()
        assert column["mean"] == pytest.approx(df[name].mean())
        assert column["std"] == pytest.approx(df[name].std(ddof=1))
    assert snapshot.column("grade")["top"] == [["a", 30], ["b", 20], ["c", 9]]
    assert snapshot.column("level")["top"] == [[0, 20], [1, 20], [2, 20]]
    assert "top" not in snapshot.column("name")
    assert "top" not in snapshot.column("id")
    assert "min" not in snapshot.column("grade")
    assert before - timedelta(milliseconds=1) <= datetime.fromisoformat(snapshot.created_at) <= after
    assert (snapshot.run_id, snapshot.step) == ("run-123", "prepare")

    stored = json.loads(stored_bytes(store, f"snapshots/profiled/{snapshot.id}.json"))
    assert Snapshot.from_json(stored) == snapshot
    assert stored["digest"] == blake(stored_bytes(store, snapshot.key))
    assert stored["bytes"] == stored_objects(store)[snapshot.key]


# -- interrupted and incomplete writes ------------------------------------------------


def _fail_midway(table, where, **kwargs):
    where.write(b"PAR1" + b"\0" * 4096)
    raise RuntimeError("stream broken midway")


@pytest.mark.parametrize("earlier", [False, True], ids=["empty", "with-earlier-version"])
def test_interrupted_write_table_leaves_nothing_behind(store, spool, monkeypatch, earlier):
    first = store.write_table("train", frame(0)).snapshot if earlier else None
    before = stored_objects(store)
    pointer = stored_bytes(store, "datasets/train.parquet") if earlier else None
    monkeypatch.setattr(pyarrow.parquet, "write_table", _fail_midway)

    with pytest.raises(RuntimeError, match="stream broken midway"):
        store.write_table("train", frame(1))

    assert stored_objects(store) == before  # no temporary file, no data file, no manifest
    assert pending_uploads(store) == []
    assert list(spool.iterdir()) == []
    assert store.list() == ([first] if earlier else [])
    if earlier:
        assert stored_bytes(store, "datasets/train.parquet") == pointer
        assert store.current("train") == first


def _interrupt_upload(store: SnapshotStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the next upload of a file fail midway, after part of it was sent; returns the parts that got through."""
    sent: list[int] = []
    if isinstance(store.storage, LocalStorage):

        def stream_part(path, target, *copies, advance=None):
            with open(path, "rb") as source:
                part = source.read(100)
            for sink in (target, *copies):
                sent.append(sink.write(part))
            raise ConnectionError("connection lost")

        monkeypatch.setattr(copies_module, "stream_file", stream_part)
        return sent
    fs = store.storage.fs
    real = fs._call_s3

    async def call_s3(method, *args, **kwargs):
        if method == "upload_part" and kwargs["PartNumber"] > 1:
            raise ConnectionError("connection lost")
        out = await real(method, *args, **kwargs)
        if method == "upload_part":
            sent.append(kwargs["PartNumber"])
        return out

    monkeypatch.setattr(s3fs.core, "calculate_chunksize", lambda size, chunksize=None: 4096)  # a multipart upload
    monkeypatch.setattr(fs, "max_concurrency", 1)  # one part at a time: the first lands, the second fails
    monkeypatch.setattr(fs, "_call_s3", call_s3)
    return sent


def test_interrupted_add_file_leaves_nothing_behind(store, spool, monkeypatch, tmp_path):
    first = store.add_file(write_csv(tmp_path / "v1.csv", "x,y\n1,2\n"), "raw").snapshot
    before = stored_objects(store)
    pointer = stored_bytes(store, "datasets/raw.csv")
    big = write_csv(tmp_path / "v2.csv", "x,y\n" + "".join(f"{i},{i * 2}\n" for i in range(2000)))

    with monkeypatch.context() as patch:
        sent = _interrupt_upload(store, patch)
        with pytest.raises(StorageError, match="connection lost"):
            store.add_file(big, "raw")
    assert sent  # the failure came midway, after some bytes were sent

    assert stored_objects(store) == before
    assert pending_uploads(store) == []
    assert list(spool.iterdir()) == []
    assert store.list() == [first]
    assert stored_bytes(store, "datasets/raw.csv") == pointer
    assert store.current("raw") == first


def test_file_changed_while_being_added_is_refused_and_removed(store, monkeypatch, tmp_path):
    source = write_csv(tmp_path / "growing.csv", "x\n1\n2\n")
    real_profile = manifest_module.profile_file

    def profile_then_append(path, fmt):
        out = real_profile(path, fmt)
        with open(path, "a") as f:
            f.write("3\n")
        return out

    monkeypatch.setattr(manifest_module, "profile_file", profile_then_append)
    with pytest.raises(StorageError, match="changed while it was being added"):
        store.add_file(source, "growing")
    assert stored_objects(store) == {}
    assert store.list() == []


def test_data_without_manifest_is_not_a_snapshot_until_written_again(store):
    snapshot = store.write_table("train", frame()).snapshot
    store.storage.delete(f"snapshots/train/{snapshot.id}.json")
    assert snapshot.key in stored_objects(store)

    assert store.list() == [] and store.names() == []
    with pytest.raises(StorageError, match="no snapshot matches"):
        store.resolve(snapshot.id)
    with pytest.raises(StorageError, match="is not a stored snapshot yet"):
        store.resolve("train")

    again = store.write_table("train", frame())
    assert again.written is True
    assert again.snapshot.id == snapshot.id
    assert store.list() == [again.snapshot]
    assert store.resolve(snapshot.id) == again.snapshot
    assert f"snapshots/train/{snapshot.id}.json" in stored_objects(store)


def test_manifest_whose_data_is_gone_is_not_listed_and_is_stored_again_by_the_next_write(store):
    snapshot = store.write_table("train", frame()).snapshot
    store.storage.delete(snapshot.key)
    assert store.list() == [] and store.names() == []
    with pytest.raises(StorageError, match="no snapshot matches"):
        store.resolve(snapshot.id)

    again = store.write_table("train", frame())

    assert again.written is True and again.snapshot.id == snapshot.id
    assert blake(stored_bytes(store, snapshot.key)) == snapshot.digest
    pd.testing.assert_frame_equal(store.read(snapshot.ref)[1], frame())


# -- integrity ------------------------------------------------------------------------


def _same_length(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize("tamper", [_same_length, lambda data: data + b"\0"], ids=["same-length", "longer"])
def test_tampered_snapshot_is_refused_on_load(store, tmp_path, tamper):
    snapshot = store.write_table("train", frame()).snapshot
    original = stored_bytes(store, snapshot.key)
    store.storage.write_bytes(snapshot.key, tamper(original))
    assert stored_bytes(store, snapshot.key) != original

    by_ref = (lambda s: store.read(s.ref), lambda s: store.read(s.id), lambda s: store.read(s.name))
    for load in (store.read_bytes, store.read, *by_ref):
        with pytest.raises(IntegrityError, match=f"no longer match snapshot {snapshot.ref}") as info:
            load(snapshot)
        assert store.uri(snapshot) in str(info.value)

    target = tmp_path / "out" / "train.parquet"
    with pytest.raises(IntegrityError, match=snapshot.ref):
        store.get(snapshot, target)
    assert list(target.parent.iterdir()) == []  # neither the file nor a temporary one


def _overwrite_with_other_table(store: SnapshotStore, snapshot: Snapshot) -> bytes:
    """Overwrite a stored snapshot object with another valid parquet table, as a stray upload would."""
    other = frame(seed=7)
    other["x"] = 40.0
    buffer = io.BytesIO()
    other.to_parquet(buffer, index=False)
    store.storage.write_bytes(snapshot.key, buffer.getvalue())
    return buffer.getvalue()


@pytest.mark.parametrize("operation", ["write_table", "add_file", "add_file streamed", "adopt"])
def test_an_overwritten_snapshot_object_is_replaced_by_the_fresh_bytes_never_made_current(
    store, tmp_path, operation, caplog
):
    snapshot = _store_again(store, operation, tmp_path)
    fresh = stored_bytes(store, snapshot.key)
    _overwrite_with_other_table(store, snapshot)
    if operation == "add_file streamed":  # another size than the file: it is not hashed in place first
        store.storage.write_bytes(snapshot.key, fresh + b"\0")
    with caplog.at_level("WARNING", logger="mlops_template"):
        again = _store_again(store, operation, tmp_path)

    assert again.id == snapshot.id
    assert stored_bytes(store, snapshot.key) == fresh  # repaired with the bytes just written
    if operation != "adopt":  # adopt takes in the bytes the current copy holds already
        assert blake(stored_bytes(store, f"datasets/train.{snapshot.format}")) == snapshot.digest
    [warning] = [r.getMessage() for r in caplog.records if "no longer matched" in r.getMessage()]
    assert snapshot.ref in warning and "mlops data verify" in warning


def test_verify_finds_a_damaged_snapshot_and_repairs_it_from_the_current_copy(store):
    from mlops_template.data.verify import verify

    first = store.write_table("train", frame(seed=1)).snapshot
    second = store.write_table("train", frame(seed=2)).snapshot  # current
    _overwrite_with_other_table(store, second)
    _overwrite_with_other_table(store, first)

    found = {f.ref: f for f in verify(store)}
    assert (found[first.ref].status, found[second.ref].status, found["train"].status) == (
        "damaged",
        "damaged",
        "current",
    )
    assert found["train"].detail == f"holds {second.ref}"

    repaired = {f.ref: f for f in verify(store, "train", repair=True)}
    assert repaired[second.ref].status == "repaired" and "datasets/train.parquet" in repaired[second.ref].detail
    assert repaired[first.ref].status == "damaged" and "no intact copy" in repaired[first.ref].detail
    assert blake(stored_bytes(store, second.key)) == second.digest
    pd.testing.assert_frame_equal(store.read(second.ref)[1], frame(seed=2))
    assert [f.ref for f in verify(store) if f.problem] == [first.ref]


def _plant_other_digest(store: SnapshotStore, snapshot: Snapshot) -> str:
    """Rewrite the manifest of `snapshot` to record another digest with the same 16-hex id, as a collision would."""
    other = snapshot.id + ("0" if snapshot.digest[16] != "0" else "1") + snapshot.digest[17:]
    manifest = json.loads(stored_bytes(store, f"snapshots/{snapshot.name}/{snapshot.id}.json"))
    manifest["digest"] = other
    store.storage.write_bytes(f"snapshots/{snapshot.name}/{snapshot.id}.json", json.dumps(manifest).encode())
    return other


def _store_again(store: SnapshotStore, operation: str, tmp_path: Path) -> Snapshot:
    data = b"x,label\n1,a\n2,b\n"
    if operation == "write_table":
        return store.write_table("train", frame()).snapshot
    if operation == "adopt":
        return store.adopt("train", data, "csv", run_id=None, step=None)
    return store.add_file(write_csv(tmp_path / "train.csv", data.decode()), "train").snapshot


@pytest.mark.parametrize("operation", ["write_table", "add_file", "add_file streamed", "adopt"])
def test_same_id_with_another_digest_is_refused_not_taken_for_the_same_bytes(store, writes, tmp_path, operation):
    stored = _store_again(store, operation, tmp_path)
    other = _plant_other_digest(store, stored)
    if operation == "add_file streamed":  # no stored file of the same size: the file is hashed as it streams
        store.storage.write_bytes(stored.key, stored_bytes(store, stored.key) + b"\n")
    before = stored_objects(store)
    writes.clear()

    with pytest.raises(IntegrityError) as info:
        _store_again(store, operation, tmp_path)

    message = str(info.value)
    assert stored.digest in message and other in message
    assert store.storage.uri(f"snapshots/train/{stored.id}.json") in message
    assert "collision" in message
    assert writes == [] and stored_objects(store) == before  # not one byte written


def test_read_returns_the_stored_table(store):
    snapshot = store.write_table("train", frame()).snapshot
    for ref in (snapshot, snapshot.ref, snapshot.id, "train"):
        found, df = store.read(ref)
        assert found == snapshot
        pd.testing.assert_frame_equal(df, frame())
    assert store.read_bytes(snapshot) == stored_bytes(store, snapshot.key)


# -- resolving -----------------------------------------------------------------------


def test_resolve_by_id_prefix_name_and_name_id(store):
    old = store.write_table("train", frame(0)).snapshot
    time.sleep(0.002)
    new = store.write_table("train", frame(1)).snapshot
    assert old.id[:8] != new.id[:8]

    assert store.resolve(old.id) == old
    assert store.resolve(old.id[:8]) == old
    assert store.resolve(old.id[:8].upper()) == old
    assert store.resolve(f"train:{old.id}") == old
    assert store.resolve(f"train:{new.id[:8]}") == new
    assert store.resolve("train") == new  # the current version
    store.set_current(old)
    assert store.resolve("train") == old


def test_unknown_id_says_no_snapshot_matches_and_lists_datasets(store):
    with pytest.raises(StorageError, match="no snapshot matches '0123abcd'.*no snapshots are stored yet"):
        store.resolve("0123abcd")
    a = store.write_table("alpha", frame(0)).snapshot
    b = store.write_table("beta", frame(1)).snapshot
    unknown = next(c * 8 for c in "0123456789abcdef" if not (a.id + b.id).startswith(c) and b.id[0] != c)

    with pytest.raises(StorageError, match=f"no snapshot matches '{unknown}'") as info:
        store.resolve(unknown)
    assert "datasets with snapshots: alpha, beta" in str(info.value)
    with pytest.raises(StorageError, match="no snapshot matches"):
        store.resolve(f"beta:{a.id}")  # the id exists, under another name
    with pytest.raises(StorageError, match="dataset 'gamma' has no current version; datasets with snapshots"):
        store.resolve("gamma")


@pytest.mark.parametrize("ref", ["train:abc", "train:xyz1", "train:0123456789abcdef0", ":1x"])
def test_refs_that_are_neither_id_nor_name_are_refused(store, ref):
    with pytest.raises(StorageError, match=r"neither an id nor a dataset name; give 4-16 hex digits"):
        store.resolve(ref)


def test_ambiguous_prefix_lists_the_candidates(store, tmp_path):
    left_body, right_body = colliding_csvs()
    left = store.add_file(write_csv(tmp_path / "left.csv", left_body.decode()), "left").snapshot
    right = store.add_file(write_csv(tmp_path / "right.csv", right_body.decode()), "right").snapshot
    prefix = left.id[:4]
    assert right.id.startswith(prefix) and left.id != right.id

    with pytest.raises(StorageError, match=f"snapshot '{prefix}' is ambiguous") as info:
        store.resolve(prefix)
    assert f"left:{left.id}" in str(info.value) and f"right:{right.id}" in str(info.value)
    assert "give more digits" in str(info.value)
    assert store.resolve(f"left:{prefix}") == left  # a name narrows it down
    assert store.resolve(right.id) == right


# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a/b", "..", "../x", ".hidden", "a b", "ä", "", "a\n"])
@pytest.mark.parametrize("operation", ["write_table", "add_file", "adopt"])
def test_invalid_dataset_names_are_rejected_before_writing(store, tmp_path, name, operation):
    source = write_csv(tmp_path / "data.csv", "x\n1\n")
    calls = {
        "write_table": lambda: store.write_table(name, frame()),
        "add_file": lambda: store.add_file(source, name),
        "adopt": lambda: store.adopt(name, source.read_bytes(), "csv", run_id=None, step=None),
    }
    with pytest.raises(StorageError, match="dataset name .* is invalid"):
        calls[operation]()
    assert stored_objects(store) == {}


@pytest.mark.parametrize("name", ["Iris_v2.1-clean", "beef"])  # "beef" looks like an id prefix
def test_valid_names_resolve_to_their_current_version(store, name):
    snapshot = store.write_table(name, frame()).snapshot
    assert snapshot.key == f"snapshots/{name}/{snapshot.id}.parquet"
    assert not snapshot.id.startswith(name)
    assert store.resolve(name) == snapshot


# -- adding files ----------------------------------------------------------------------


def test_add_csv_is_stored_byte_for_byte_and_becomes_current(store, tmp_path):
    text = "sepal,species\n5.1,setosa\n4.9,setosa\n6.3,virginica\n,versicolor\n"
    source = write_csv(tmp_path / "iris.csv", text)

    stored = store.add_file(source, "iris", run_id="r1", step="ingest")

    snapshot = stored.snapshot
    assert stored.written is True
    assert snapshot.format == "csv" and snapshot.key == f"snapshots/iris/{snapshot.id}.csv"
    assert stored_bytes(store, snapshot.key) == source.read_bytes()
    assert snapshot.id == blake(source.read_bytes())[:16]
    assert stored_bytes(store, "datasets/iris.csv") == source.read_bytes()
    assert "datasets/iris.parquet" not in stored_objects(store)
    assert (snapshot.rows, snapshot.source) == (4, str(source.resolve()))
    assert (snapshot.run_id, snapshot.step) == ("r1", "ingest")
    assert snapshot.column("sepal")["nulls"] == 1 and snapshot.column("sepal")["max"] == 6.3
    assert snapshot.column("species")["top"] == [["setosa", 2], ["versicolor", 1], ["virginica", 1]]
    assert store.current("iris") == snapshot


def test_writing_a_table_after_a_csv_moves_the_pointer_to_parquet(store, tmp_path):
    store.add_file(write_csv(tmp_path / "iris.csv", "x\n1\n2\n"), "iris")
    table = store.write_table("iris", frame()).snapshot

    objects = stored_objects(store)
    assert "datasets/iris.parquet" in objects and "datasets/iris.csv" not in objects
    assert store.current("iris") == table
    assert len(store.list("iris")) == 2


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_add_parquet_file_is_stored_byte_for_byte(store, tmp_path, suffix):
    source = tmp_path / f"frame{suffix}"
    frame().to_parquet(source, index=False)

    stored = store.add_file(source, "frame")

    assert stored.written is True
    assert stored.snapshot.format == "parquet" and stored.snapshot.id == blake(source.read_bytes())[:16]
    assert stored_bytes(store, stored.snapshot.key) == source.read_bytes()
    assert stored_bytes(store, "datasets/frame.parquet") == source.read_bytes()
    assert stored.snapshot.rows == 20 and [c["dtype"] for c in stored.snapshot.columns] == ["int64", "string"]


def test_adding_the_same_file_again_writes_nothing(store, writes, tmp_path):
    source = write_csv(tmp_path / "data.csv", "x\n1\n2\n")
    first = store.add_file(source, "data")
    before = stored_objects(store)
    writes.clear()

    again = store.add_file(source, "data")

    assert first.written is True and again.written is False
    assert again.snapshot == first.snapshot
    assert stored_objects(store) == before
    assert writes == []  # neither the snapshot nor the current copy, which already holds these bytes


def test_a_different_file_of_the_same_size_is_a_new_snapshot(store, tmp_path, monkeypatch):
    first = store.add_file(write_csv(tmp_path / "a.csv", "x\n1\n2\n"), "data").snapshot
    hashed = []
    real_digest = copies_module.digest_file
    monkeypatch.setattr(copies_module, "digest_file", lambda p: hashed.append(p) or real_digest(p))
    changed = write_csv(tmp_path / "b.csv", "x\n1\n3\n")
    assert changed.stat().st_size == first.bytes

    second = store.add_file(changed, "data")

    assert hashed == [changed]  # recognised as new by its hash, not its size
    assert second.written is True and second.snapshot.id != first.id
    assert stored_bytes(store, second.snapshot.key) == b"x\n1\n3\n"
    assert stored_bytes(store, "datasets/data.csv") == b"x\n1\n3\n"
    assert {s.id for s in store.list("data")} == {first.id, second.snapshot.id}


def test_re_adding_an_older_version_makes_it_current_without_storing_it_again(store, writes, tmp_path):
    first = store.add_file(write_csv(tmp_path / "v1.csv", "x\n1\n"), "data").snapshot
    store.add_file(write_csv(tmp_path / "v2.csv", "x\n1\n2\n"), "data")
    before = stored_objects(store)
    writes.clear()

    again = store.add_file(tmp_path / "v1.csv", "data")

    assert again.written is False and again.snapshot == first
    assert set(writes) == {"datasets/data.csv"}  # only the current copy
    assert stored_objects(store) == {**before, "datasets/data.csv": first.bytes}
    assert store.current("data") == first


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("notes.txt", b"x\n1\n", r"unsupported file type '\.txt'"),
        ("noext", b"x\n1\n", r"unsupported file type '\(none\)'"),
        ("missing.csv", None, "not found"),
        ("empty.csv", b"", "cannot be read as csv"),
        ("broken.parquet", b"this is not a parquet file at all", "cannot be read as parquet"),
    ],
)
def test_bad_files_are_refused_and_nothing_is_written(store, spool, tmp_path, file_name, content, message):
    path = tmp_path / file_name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StorageError, match=message):
        store.add_file(path, "data")
    assert stored_objects(store) == {}
    assert pending_uploads(store) == []
    assert list(spool.iterdir()) == []


def test_add_file_lands_the_snapshot_its_manifest_and_the_current_copy_durably(tmp_path, monkeypatch):
    store = SnapshotStore(LocalStorage(tmp_path / "root"))
    source = write_csv(tmp_path / "iris.csv", "x,label\n1,a\n2,b\n")
    events = record_disk_events(monkeypatch)

    snapshot = store.add_file(source, "iris").snapshot

    root = tmp_path / "root"
    for key in (snapshot.key, f"snapshots/iris/{snapshot.id}.json", "datasets/iris.csv"):
        assert_landed_durably(events, root / key)


def test_get_lands_the_local_copy_durably(tmp_path, monkeypatch):
    store = SnapshotStore(LocalStorage(tmp_path / "root"))
    snapshot = store.write_table("train", frame()).snapshot
    events = record_disk_events(monkeypatch)

    path = store.get(snapshot, tmp_path / "out" / "train.parquet")

    assert_landed_durably(events, path)


# -- adopting ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_adopt_stores_a_pointer_written_by_other_means_once(store, fmt):
    key = f"datasets/outside.{fmt}"
    if fmt == "parquet":
        data = write_table(store.storage, key, frame())
    else:
        data = b"x,label\n1,a\n2,b\n"
        store.storage.write_bytes(key, data)
    with pytest.raises(StorageError, match="is not a stored snapshot yet"):
        store.current("outside")

    snapshot = store.adopt("outside", data, fmt, run_id="r9", step="train")

    assert snapshot.id == blake(data)[:16] and snapshot.format == fmt
    assert (snapshot.run_id, snapshot.step, snapshot.rows) == ("r9", "train", 20 if fmt == "parquet" else 2)
    assert stored_bytes(store, snapshot.key) == data
    assert store.current("outside") == snapshot
    before = stored_objects(store)
    assert sorted(before) == sorted([key, snapshot.key, f"snapshots/outside/{snapshot.id}.json"])

    assert store.adopt("outside", data, fmt, run_id="other", step="other") == snapshot
    assert stored_objects(store) == before


def test_adopting_bytes_that_are_not_a_table_is_a_storage_error_and_stores_nothing(store):
    store.storage.write_bytes("datasets/outside.csv", b"a,b\n1,2\n3\n")
    before = stored_objects(store)
    with pytest.raises(StorageError, match=r"datasets/outside\.csv: cannot be read as csv .* is the file complete\?"):
        store.adopt("outside", b"a,b\n1,2\n3\n", "csv", run_id=None, step=None)
    assert stored_objects(store) == before


# -- getting a local copy ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["folder", "file", "default", "new-folder/"])
def test_get_copies_the_snapshot_to_a_local_file(store, tmp_path, monkeypatch, where):
    snapshot = store.write_table("train", frame()).snapshot
    default_name = f"train-{snapshot.id}.parquet"
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    to, expected = {
        "folder": (out, out / default_name),
        "file": (out / "nested" / "copy.parquet", out / "nested" / "copy.parquet"),
        "default": (None, out / default_name),
        "new-folder/": (f"{out}/fresh/", out / "fresh" / default_name),
    }[where]

    path = store.get(snapshot.ref, to)

    assert Path(path).resolve() == expected.resolve()
    assert expected.read_bytes() == stored_bytes(store, snapshot.key)
    assert [p for p in out.rglob("*") if p.is_file()] == [expected]  # no temporary file left
