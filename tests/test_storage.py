"""Storage: the same behaviour on a local folder and on S3 (moto's server on loopback)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import boto3
import pandas as pd
import pytest
from durability import assert_landed_durably, inode, record_disk_events

from mlops_template.config.load import Environment
from mlops_template.data.tables import read_table, write_table
from mlops_template.errors import ConfigError, StorageError
from mlops_template.storage import LocalStorage, S3Storage, Storage, open_storage
from mlops_template.storage import local as local_module

FRAME = pd.DataFrame({"x": [1, 2, 3], "y": [0.5, 1.5, 2.5], "label": ["a", "b", "c"]})


def environment(storage: str, **kwargs) -> Environment:
    return Environment(name="test", storage=storage, tracking_uri="sqlite:///mlruns.db", **kwargs)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A storage opened the way a step gets it: from an environment, through `open_storage`."""
    if request.param == "local":
        return open_storage(environment(str(tmp_path / "store")))
    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("s3_endpoint")
    return open_storage(environment(f"s3://{bucket}/project", s3_endpoint_url=endpoint))


def tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# -- opening ----------------------------------------------------------------------


def test_open_storage_picks_the_backend_from_the_uri(tmp_path, s3_bucket, s3_endpoint):
    local = open_storage(environment(str(tmp_path)))
    file_uri = open_storage(environment(f"file://{tmp_path}"))
    s3 = open_storage(environment(f"s3://{s3_bucket}/p", s3_endpoint_url=s3_endpoint))
    assert isinstance(local, LocalStorage) and local.root == str(tmp_path.resolve())
    assert isinstance(file_uri, LocalStorage) and file_uri.root == str(tmp_path.resolve())
    assert isinstance(s3, S3Storage)
    assert s3.uri("datasets/a.parquet") == f"s3://{s3_bucket}/p/datasets/a.parquet"


def test_unsupported_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match=r"storage scheme 'gs://' is not supported") as info:
        open_storage(environment("gs://bucket/prefix"))
    assert "environment 'test'" in str(info.value)
    assert "s3://" in str(info.value)


# -- tables -----------------------------------------------------------------------


def test_write_table_and_read_table_round_trip_parquet(storage):
    data = write_table(storage, "datasets/frame.parquet", FRAME)
    assert data[:4] == b"PAR1"  # parquet magic: the bytes returned are what was stored
    assert storage.read_bytes("datasets/frame.parquet") == data
    pd.testing.assert_frame_equal(read_table(storage, "datasets/frame.parquet"), FRAME)


def test_csv_is_readable_as_a_table(storage):
    storage.write_bytes("raw/iris.csv", b"x,label\n1,a\n2,b\n")
    df = read_table(storage, "raw/iris.csv")
    assert list(df.columns) == ["x", "label"]
    assert df["x"].tolist() == [1, 2]
    assert df["label"].tolist() == ["a", "b"]


def test_unreadable_table_is_a_storage_error(storage):
    storage.write_bytes("datasets/broken.parquet", b"not parquet at all")
    with pytest.raises(StorageError, match=r"broken\.parquet: cannot be read as a table"):
        read_table(storage, "datasets/broken.parquet")


# -- bytes, exists, list, delete -----------------------------------------------------


def test_write_bytes_overwrites_and_reads_back(storage):
    storage.write_bytes("models/m/v1/model.pkl", b"old")
    storage.write_bytes("models/m/v1/model.pkl", b"new")
    assert storage.read_bytes("models/m/v1/model.pkl") == b"new"


def test_exists_list_and_delete(storage):
    assert storage.list() == []
    assert not storage.exists("datasets/a.parquet")
    storage.write_bytes("datasets/a.parquet", b"a")
    storage.write_bytes("datasets/b.parquet", b"b")
    storage.write_bytes("snapshots/a/123.json", b"{}")

    assert storage.exists("datasets/a.parquet")
    assert storage.exists("datasets")
    assert storage.list("datasets") == ["datasets/a.parquet", "datasets/b.parquet"]
    assert storage.list() == ["datasets/a.parquet", "datasets/b.parquet", "snapshots/a/123.json"]
    assert storage.list("nothing/here") == []

    storage.delete("datasets/a.parquet")
    assert not storage.exists("datasets/a.parquet")
    assert storage.list("datasets") == ["datasets/b.parquet"]

    storage.delete("snapshots")  # a prefix goes with everything below it
    assert storage.list() == ["datasets/b.parquet"]
    storage.delete("datasets/a.parquet")  # deleting what is gone is not an error
    assert storage.list() == ["datasets/b.parquet"]


def test_missing_key_is_a_storage_error_saying_not_found(storage):
    with pytest.raises(StorageError, match="not found") as info:
        storage.read_bytes("datasets/missing.parquet")
    assert storage.uri("datasets/missing.parquet") in str(info.value)
    with pytest.raises(StorageError, match="not found"):
        read_table(storage, "datasets/missing.parquet")


@pytest.mark.parametrize("key", ["../outside.parquet", "datasets/../../outside", "a/../b"])
def test_keys_that_leave_the_root_are_rejected(storage, key):
    with pytest.raises(StorageError, match=r"leaves the storage root"):
        storage.write_bytes(key, b"x")
    with pytest.raises(StorageError, match=r"leaves the storage root"):
        storage.read_bytes(key)
    with pytest.raises(StorageError, match=r"leaves the storage root"):
        storage.exists(key)


def model_folder(root: Path) -> Path:
    """An exported model as MLflow writes one: MLmodel, the model file, a sub-folder."""
    model = root / "exported"
    (model / "sub").mkdir(parents=True)
    (model / "MLmodel").write_text("flavor: sklearn\n")
    (model / "model.pkl").write_bytes(b"\x00\x01")
    (model / "sub" / "extra.txt").write_text("extra")
    return model


def everything_under(storage: Storage, prefix: str) -> list[str]:
    """Every file or object below `prefix`, hidden ones and staging folders included (read past the library)."""
    if isinstance(storage, LocalStorage):
        root = Path(storage.root)
        return sorted(str(p.relative_to(root)) for p in (root / prefix).rglob("*")) if (root / prefix).exists() else []
    bucket, _, base = storage.root.partition("/")
    client = boto3.client("s3", endpoint_url=storage.fs.client_kwargs["endpoint_url"], region_name="us-east-1")
    found = client.list_objects_v2(Bucket=bucket, Prefix=f"{base}/{prefix}/").get("Contents", [])
    return sorted(o["Key"].removeprefix(f"{base}/") for o in found)


def test_upload_dir_copies_every_file_under_the_prefix(storage, tmp_path):
    storage.upload_dir(str(model_folder(tmp_path)), "models/iris/v1")

    assert storage.list("models") == [
        "models/iris/v1/MLmodel",
        "models/iris/v1/model.pkl",
        "models/iris/v1/sub/extra.txt",
    ]
    assert storage.read_bytes("models/iris/v1/model.pkl") == b"\x00\x01"
    assert storage.read_bytes("models/iris/v1/sub/extra.txt") == b"extra"
    assert [p for p in everything_under(storage, "models") if "incoming" in p] == []


def _fail_on_second_file(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fault injection: the second file copied fails, as a full disk or a dropped connection would."""
    copied: list[str] = []

    def failing(real):
        def copy(source, target):
            copied.append(str(source))
            if len(copied) == 2:
                raise error(28, "No space left on device")
            return real(source, target)

        return copy

    if isinstance(storage, LocalStorage):  # the copy of one file into the staging folder
        error = OSError
        monkeypatch.setattr(local_module, "_copy_durably", failing(local_module._copy_durably))
    else:  # the PUT of one object
        error = lambda code, text: StorageError(f"s3://...: storage failed ({text})")  # noqa: E731
        monkeypatch.setattr(storage, "put_file", failing(storage.put_file))
    return copied


def test_upload_dir_failing_midway_leaves_nothing_at_the_prefix(storage, tmp_path, monkeypatch):
    storage.write_bytes("models/iris/v1/MLmodel", b"an earlier version stays")
    copied = _fail_on_second_file(storage, monkeypatch)

    with pytest.raises(StorageError, match="No space left on device"):
        storage.upload_dir(str(model_folder(tmp_path)), "models/iris/v2")

    assert len(copied) == 2  # the first file was copied before the failure
    earlier = ["models/iris/v1/MLmodel"]
    if isinstance(storage, LocalStorage):
        earlier.insert(0, "models/iris/v1")  # folders are entries too: no empty v2, no hidden staging folder
    assert everything_under(storage, "models/iris") == earlier
    monkeypatch.undo()
    storage.upload_dir(str(model_folder(tmp_path / "again")), "models/iris/v2")  # nothing in the way of a retry
    assert len(storage.list("models/iris/v2")) == 3


def test_upload_dir_refuses_a_prefix_that_exists(storage, tmp_path):
    storage.write_bytes("models/iris/v1/MLmodel", b"the exported version")

    with pytest.raises(StorageError, match=r"models/iris/v1: already exists .* delete it first") as info:
        storage.upload_dir(str(model_folder(tmp_path)), "models/iris/v1")

    assert storage.uri("models/iris/v1") in str(info.value)
    assert everything_under(storage, "models/iris/v1") == ["models/iris/v1/MLmodel"]
    assert [p for p in everything_under(storage, "models") if "incoming" in p] == []
    assert storage.read_bytes("models/iris/v1/MLmodel") == b"the exported version"


def test_upload_dir_of_a_missing_folder_is_a_storage_error(storage, tmp_path):
    with pytest.raises(StorageError, match=r"missing: not a folder"):
        storage.upload_dir(str(tmp_path / "missing"), "models/iris/v1")
    assert storage.list() == []


def test_s3_upload_dir_puts_mlmodel_last(s3_bucket, s3_endpoint, tmp_path, monkeypatch):
    storage = open_storage(environment(f"s3://{s3_bucket}/p", s3_endpoint_url=s3_endpoint))
    order: list[str] = []
    real = storage.put_file
    # A spy: the order of PUTs cannot be read from the bucket afterwards.
    monkeypatch.setattr(storage, "put_file", lambda path, key: (order.append(key), real(path, key)))
    model = model_folder(tmp_path)
    (model / "a_first.txt").write_text("sorted before MLmodel")

    storage.upload_dir(str(model), "models/iris/v1")

    assert order == [
        "models/iris/v1/a_first.txt",
        "models/iris/v1/model.pkl",
        "models/iris/v1/sub/extra.txt",
        "models/iris/v1/MLmodel",
    ]


def test_download_copies_a_prefix_to_a_local_folder(storage, tmp_path):
    storage.write_bytes("models/iris/v1/MLmodel", b"flavor")
    storage.write_bytes("models/iris/v1/sub/model.pkl", b"pkl")
    target = tmp_path / "downloaded"
    storage.download("models/iris/v1", str(target))
    assert (target / "MLmodel").read_bytes() == b"flavor"
    assert (target / "sub" / "model.pkl").read_bytes() == b"pkl"


# -- local atomic writes -------------------------------------------------------------


def test_local_write_leaves_no_temporary_files(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.write_bytes("datasets/a.parquet", b"one")
    write_table(storage, "datasets/b.parquet", FRAME)
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["a.parquet", "b.parquet"]
    assert tmp_files(tmp_path) == []


class _FailingFile(io.RawIOBase):
    """A file that takes a few bytes, then fails as a full disk would."""

    def __init__(self, real):
        self.real = real

    def write(self, data):
        self.real.write(bytes(data)[:2])
        raise OSError(28, "No space left on device")

    def close(self):
        self.real.close()
        super().close()


def test_local_write_failing_midway_keeps_the_old_file(tmp_path, monkeypatch):
    storage = LocalStorage(tmp_path)
    storage.write_bytes("datasets/a.parquet", b"old content")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: _FailingFile(real_fdopen(fd, mode, *a, **k)))

    with pytest.raises(StorageError, match=r"a\.parquet: cannot be written \(No space left on device\)"):
        storage.write_bytes("datasets/a.parquet", b"new content that never lands")

    monkeypatch.undo()
    assert storage.read_bytes("datasets/a.parquet") == b"old content"
    assert tmp_files(tmp_path) == []


def test_local_write_failing_at_rename_keeps_the_old_file(tmp_path, monkeypatch):
    storage = LocalStorage(tmp_path)
    storage.write_bytes("datasets/a.parquet", b"old content")

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(StorageError, match=r"cannot be written \(Permission denied\)"):
        storage.write_bytes("datasets/a.parquet", b"new")

    monkeypatch.undo()
    assert (tmp_path / "datasets" / "a.parquet").read_bytes() == b"old content"
    assert tmp_files(tmp_path) == []


def test_local_write_into_a_file_path_is_a_storage_error(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.write_bytes("datasets", b"a file where a folder should be")
    with pytest.raises(StorageError, match=r"cannot be written"):
        storage.write_bytes("datasets/a.parquet", b"x")


# -- local durability ----------------------------------------------------------------


@pytest.fixture
def disk_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    return record_disk_events(monkeypatch)


def test_local_write_bytes_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, disk_events):
    storage = LocalStorage(tmp_path)
    storage.write_bytes("datasets/a.parquet", b"old")
    storage.write_bytes("datasets/a.parquet", b"new")  # an overwrite too: a new inode, renamed over the old
    assert_landed_durably(disk_events[len(disk_events) // 2 :], tmp_path / "datasets" / "a.parquet")


@pytest.mark.parametrize("operation", ["stage", "put_file", "copy", "write_table"])
def test_every_local_write_path_lands_durably(tmp_path, disk_events, operation):
    storage = LocalStorage(tmp_path / "store")
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    storage.write_bytes("in/source.bin", b"payload")
    disk_events.clear()

    if operation == "stage":
        with storage.stage("out") as stage:
            stage.file.write(b"payload")
            stage.commit("out/target.bin")
    elif operation == "put_file":
        storage.put_file(source, "out/target.bin")
    elif operation == "copy":
        storage.copy("in/source.bin", "out/target.bin")
    else:
        write_table(storage, "out/target.bin", FRAME)

    target = tmp_path / "store" / "out" / "target.bin"
    assert_landed_durably(disk_events, target)
    assert ("fsync", inode(target.parent.parent)) in disk_events  # the new folder `out` is durable in its parent


def test_local_upload_dir_fsyncs_every_file_and_folder_before_renaming_the_folder_into_place(tmp_path, disk_events):
    storage = LocalStorage(tmp_path / "store")
    storage.upload_dir(str(model_folder(tmp_path)), "models/iris/v1")

    target = tmp_path / "store" / "models" / "iris" / "v1"
    assert_landed_durably(disk_events, target)
    rename = disk_events.index(("rename", target))
    for path in (target / "MLmodel", target / "model.pkl", target / "sub" / "extra.txt", target / "sub"):
        assert ("fsync", inode(path)) in disk_events[:rename], path
    assert [e for e in disk_events if e[0] == "rename"] == [("rename", target)]  # one rename: all or nothing


# -- S3 specifics --------------------------------------------------------------------


def test_s3_objects_land_under_the_prefix_in_the_bucket(s3_bucket, s3_endpoint):
    storage = open_storage(environment(f"s3://{s3_bucket}/team/project", s3_endpoint_url=s3_endpoint))
    write_table(storage, "datasets/frame.parquet", FRAME)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["team/project/datasets/frame.parquet"]
    body = client.get_object(Bucket=s3_bucket, Key=keys[0])["Body"].read()
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(body)), FRAME)


def test_s3_missing_bucket_is_a_storage_error(s3_endpoint, aws_credentials):
    storage = open_storage(environment("s3://no-such-bucket-here/p", s3_endpoint_url=s3_endpoint))
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-here/p/datasets/a\.parquet"):
        storage.write_bytes("datasets/a.parquet", b"x")


def test_repr_and_str_carry_no_secret(s3_bucket, s3_endpoint, monkeypatch, tmp_path):
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0001")
    s3 = open_storage(environment(f"s3://{s3_bucket}/p", s3_endpoint_url=s3_endpoint))
    s3.write_bytes("a.txt", b"x")  # credentials are actually in use
    local = open_storage(environment(str(tmp_path)))
    for storage in (s3, local):
        for text in (repr(storage), str(storage)):
            assert secret not in text
            assert "AKIAEXAMPLEKEYID0001" not in text
    assert repr(s3) == f"S3Storage('s3://{s3_bucket}/p')"
    assert repr(local) == f"LocalStorage({str(tmp_path.resolve())!r})"


@pytest.fixture
def aws_files(tmp_path, monkeypatch):
    """A private ~/.aws for the test: no profiles unless the test writes some, no ambient credentials."""
    config, credentials = tmp_path / "aws-config", tmp_path / "aws-credentials"
    config.write_text("")
    credentials.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    return config, credentials


def test_s3_uses_the_environments_named_profile(s3_bucket, s3_endpoint, aws_files, monkeypatch):
    config, credentials = aws_files
    config.write_text("[profile ml-dev]\nregion = us-east-1\n")
    credentials.write_text("[ml-dev]\naws_access_key_id = profile-key\naws_secret_access_key = profile-secret\n")
    store = open_storage(environment(f"s3://{s3_bucket}/p", aws_profile="ml-dev", s3_endpoint_url=s3_endpoint))
    store.write_bytes("a.txt", b"via profile")
    assert store.read_bytes("a.txt") == b"via profile"
    assert "profile-secret" not in repr(store)


def test_s3_profile_missing_on_this_machine_is_a_config_error(aws_files):
    with pytest.raises(ConfigError) as excinfo:
        open_storage(environment("s3://bucket/p", aws_profile="ml-dev"))
    assert str(excinfo.value) == (
        "environment 'test': AWS profile 'ml-dev' is not defined on this machine; "
        "create it (aws configure --profile ml-dev) or provide credentials through AWS_* variables"
    )


def test_s3_profile_missing_is_skipped_when_credentials_come_from_the_environment(
    s3_bucket, s3_endpoint, aws_files, monkeypatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "pod-role-key")  # as a pod or CI job hands them over
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "pod-role-secret")
    store = open_storage(environment(f"s3://{s3_bucket}/p", aws_profile="ml-dev", s3_endpoint_url=s3_endpoint))
    store.write_bytes("b.txt", b"via ambient credentials")
    assert store.exists("b.txt")
