"""`mlops data ls/show/diff/add/get` on a project folder, with local storage and with S3 (moto's server on loopback)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from mlops_template.cli.main import main
from mlops_template.data.hashing import content_id

S3_ENVIRONMENT = """
[environments.s3test]
storage = "s3://{bucket}/p"
tracking_uri = "sqlite:///mlruns.db"
s3_endpoint_url = "{endpoint}"
"""

V1 = pd.DataFrame({"id": [1, 2, 3, 4], "name": ["a", "b", "c", "d"], "score": [10, 20, 30, 40], "gone": list("wxyz")})
# Drops rows 2 and 4, adds 5; `score` becomes float (values kept), `gone` is removed, `extra` added.
V2 = pd.DataFrame({"id": [1, 3, 5], "name": ["a", "c", "e"], "score": [10.0, 30.0, 55.5], "extra": ["p", "q", "r"]})


@dataclass
class Project:
    root: Path
    environment: str
    files: Callable[[], dict[str, bytes]]  # every stored object, by key under the storage root
    overwrite: Callable[[str, bytes], None]  # replace a stored object's bytes behind the store's back

    def data(self, *args: str) -> Result:
        """`mlops data ...` on this project and environment."""
        argv = ["data", *args, "--project", str(self.root), "--environment", self.environment]
        return CliRunner().invoke(main, argv)


def local_project(root: Path) -> Project:
    storage = root / "data"

    def files() -> dict[str, bytes]:
        return {p.relative_to(storage).as_posix(): p.read_bytes() for p in storage.rglob("*") if p.is_file()}

    return Project(root, "local", files, lambda key, data: (storage / key).write_bytes(data))


@pytest.fixture(params=["local", "s3"])
def project(request, write_config, tmp_path) -> Project:
    root = write_config(root=tmp_path / "project")
    if request.param == "local":
        return local_project(root)

    import boto3

    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    with open(root / "mlops.toml", "a") as toml:
        toml.write(S3_ENVIRONMENT.format(bucket=bucket, endpoint=endpoint))
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

    def s3_files() -> dict[str, bytes]:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="p/").get("Contents", [])
        return {o["Key"].removeprefix("p/"): s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}

    return Project(root, "s3test", s3_files, lambda key, data: s3.put_object(Bucket=bucket, Key=f"p/{key}", Body=data))


@pytest.fixture
def local(write_config, tmp_path) -> Project:
    return local_project(write_config(root=tmp_path / "project"))


def table_file(tmp_path: Path, df: pd.DataFrame, name: str) -> Path:
    path = tmp_path / "incoming" / name
    path.parent.mkdir(exist_ok=True)
    if name.endswith(".csv"):
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def added(project: Project, path: Path, name: str = "t") -> str:
    result = project.data("add", str(path), "--name", name)
    assert result.exit_code == 0, result.output
    return content_id(path.read_bytes())


def table_rows(output: str) -> list[list[str]]:
    """The data lines of a rich table (header dropped)."""
    lines = [line.split() for line in output.splitlines() if line.strip()]
    return lines[1:]


def assert_one_error_line(result: Result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in line
    return line


# -- add ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("file", ["v1.csv", "v1.parquet"])
def test_add_stores_the_file_byte_for_byte_then_recognises_it_unchanged(project, tmp_path, file):
    path = table_file(tmp_path, V1, file)
    fmt = file.split(".")[1]
    sid = content_id(path.read_bytes())

    first = project.data("add", str(path), "--name", "t")
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith(f"t:{sid}  4 rows")
    assert "(stored)" in first.stdout
    stored = project.files()
    assert stored[f"snapshots/t/{sid}.{fmt}"] == path.read_bytes()
    assert stored[f"datasets/t.{fmt}"] == path.read_bytes()
    assert json.loads(stored[f"snapshots/t/{sid}.json"])["rows"] == 4

    again = project.data("add", str(path), "--name", "t")
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith(f"t:{sid}  4 rows")
    assert "unchanged, already stored" in again.stdout
    assert project.files() == stored


def test_a_new_version_in_another_format_replaces_the_current_file(local, tmp_path):
    added(local, table_file(tmp_path, V1, "v1.parquet"))
    sid = added(local, table_file(tmp_path, V2, "v2.csv"))
    current = {k for k in local.files() if k.startswith("datasets/")}
    assert current == {"datasets/t.csv"}
    assert local.files()["datasets/t.csv"] == local.files()[f"snapshots/t/{sid}.csv"]


# -- ls and show --------------------------------------------------------------------------------


def test_ls_lists_every_version_newest_first_and_filters_by_name(project, tmp_path):
    v1 = added(project, table_file(tmp_path, V1, "v1.csv"))
    v2 = added(project, table_file(tmp_path, V2, "v2.parquet"))
    other = added(project, table_file(tmp_path, V2.head(1), "u.csv"), name="u")

    listing = project.data("ls")
    assert listing.exit_code == 0, listing.output
    assert [row[:3] for row in table_rows(listing.stdout)] == [["u", other, "1"], ["t", v2, "3"], ["t", v1, "4"]]
    assert all(row[-1] == "added" for row in table_rows(listing.stdout))

    only_t = project.data("ls", "t")
    assert [row[1] for row in table_rows(only_t.stdout)] == [v2, v1]

    as_json = json.loads(project.data("ls", "t", "--json").stdout)
    assert [s["id"] for s in as_json] == [v2, v1]
    assert [(s["name"], s["rows"], s["format"]) for s in as_json] == [("t", 3, "parquet"), ("t", 4, "csv")]
    assert {"digest", "bytes", "created_at", "run_id", "step", "source", "columns"} <= set(as_json[0])
    assert as_json[1]["source"] == str(tmp_path / "incoming" / "v1.csv")
    assert as_json[1]["bytes"] == (tmp_path / "incoming" / "v1.csv").stat().st_size


def test_ls_without_snapshots_says_how_to_make_some(local):
    result = local.data("ls")
    assert result.exit_code == 0
    assert "No snapshots yet" in result.stdout


@pytest.mark.parametrize("form", ["id", "prefix", "name:id", "name"])
def test_show_finds_a_version_by_id_prefix_ref_or_name(local, tmp_path, form):
    sid = added(local, table_file(tmp_path, V1, "v1.csv"))
    ref = {"id": sid, "prefix": sid[:5], "name:id": f"t:{sid}", "name": "t"}[form]
    result = local.data("show", ref)
    assert result.exit_code == 0, result.output
    head, *rest = result.stdout.splitlines()
    assert head.startswith(f"t:{sid}  ") and head.endswith(f"snapshots/t/{sid}.csv")
    assert "4 rows, 4 columns" in result.stdout
    columns = {line.split()[0]: line.split()[1] for line in rest[4:]}
    assert columns == {"id": "int64", "name": "string", "score": "int64", "gone": "string"}


def test_show_json_has_columns_with_statistics(project, tmp_path):
    sid = added(project, table_file(tmp_path, V1, "v1.parquet"))
    result = project.data("show", sid[:6], "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["id"], shown["name"], shown["rows"], shown["format"]) == (sid, "t", 4, "parquet")
    assert shown["uri"].endswith(f"snapshots/t/{sid}.parquet")
    columns = {c["name"]: c for c in shown["columns"]}
    assert columns["score"]["dtype"] == "int64"
    assert (columns["score"]["min"], columns["score"]["max"], columns["score"]["mean"]) == (10, 40, 25.0)
    assert columns["score"]["std"] == pytest.approx(V1["score"].std())
    assert columns["name"]["nulls"] == 0 and sorted(v for v, _ in columns["name"]["top"]) == ["a", "b", "c", "d"]


# -- diff ---------------------------------------------------------------------------------------


def test_diff_table_names_the_schema_changes_and_counts(project, tmp_path):
    v1 = added(project, table_file(tmp_path, V1, "v1.csv"))
    v2 = added(project, table_file(tmp_path, V2, "v2.parquet"))
    result = project.data("diff", v1, v2)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.splitlines()[0] == f"t:{v1} → t:{v2}"
    assert "+ column extra (string)" in out
    assert "- column gone (string)" in out
    assert "~ column score: int64 → double" in out
    assert "rows 4 → 3: 2 only in A, 1 only in B (whole rows compared on 3 shared columns)" in out
    assert "rows only in A (2)" in out and "rows only in B (1)" in out


def test_diff_json_gives_the_exact_rows(project, tmp_path):
    v1 = added(project, table_file(tmp_path, V1, "v1.csv"))
    added(project, table_file(tmp_path, V2, "v2.parquet"))
    result = project.data("diff", f"t:{v1}", "t", "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert (d["added"], d["removed"]) == ([["extra", "string"]], [["gone", "string"]])
    assert d["retyped"] == [["score", "int64", "double"]]
    assert d["rows_only_in_a"] == [
        {"id": 2, "name": "b", "score": 20, "gone": "x"},
        {"id": 4, "name": "d", "score": 40, "gone": "z"},
    ]
    assert d["rows_only_in_b"] == [{"id": 5, "name": "e", "score": 55.5, "extra": "r"}]
    assert (d["only_in_a"], d["only_in_b"], d["identical"]) == (2, 1, False)


def test_diff_of_a_version_with_itself_is_identical(local, tmp_path):
    sid = added(local, table_file(tmp_path, V1, "v1.csv"))
    result = local.data("diff", sid, "t")
    assert result.exit_code == 0, result.output
    assert "identical rows and schema" in result.stdout
    assert "rows 4 → 4: 0 only in A, 0 only in B" in result.stdout


# -- get ----------------------------------------------------------------------------------------


def test_get_writes_the_added_bytes_to_a_file_or_into_a_folder(project, tmp_path):
    path = table_file(tmp_path, V1, "v1.csv")
    sid = added(project, path)
    added(project, table_file(tmp_path, V2, "v2.csv"))

    to_file = tmp_path / "out" / "copy.csv"
    result = project.data("get", sid, "--to", str(to_file))
    assert result.exit_code == 0, result.output
    assert to_file.read_bytes() == path.read_bytes()
    assert "(verified)" in result.stdout

    folder = tmp_path / "folder"
    folder.mkdir()
    result = project.data("get", f"t:{sid[:8]}", "--to", str(folder))
    assert result.exit_code == 0, result.output
    assert [p.name for p in folder.iterdir()] == [f"t-{sid}.csv"]
    assert (folder / f"t-{sid}.csv").read_bytes() == path.read_bytes()


def test_get_to_a_new_folder_ending_in_a_slash_creates_it(local, tmp_path):
    sid = added(local, table_file(tmp_path, V1, "v1.csv"))
    result = local.data("get", sid, "--to", f"{tmp_path / 'new'}/")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / f"t-{sid}.csv").is_file()


def test_get_refuses_a_tampered_snapshot_and_writes_nothing(project, tmp_path):
    path = table_file(tmp_path, V1, "v1.csv")
    sid = added(project, path)
    original = path.read_bytes()
    project.overwrite(f"snapshots/t/{sid}.csv", original.replace(b"10", b"11"))  # same size, other bytes

    out = tmp_path / "out"
    out.mkdir()
    result = project.data("get", sid, "--to", str(out / "copy.csv"))
    assert_one_error_line(result, f"no longer match snapshot t:{sid}", f"snapshots/t/{sid}.csv")
    assert list(out.iterdir()) == []
    assert_one_error_line(project.data("diff", sid, sid), f"t:{sid}")


def test_verify_reports_a_damaged_snapshot_exits_1_and_repair_restores_it_from_the_added_file(project, tmp_path):
    path = table_file(tmp_path, V1, "v1.csv")
    sid = added(project, path)
    project.overwrite(f"snapshots/t/{sid}.csv", path.read_bytes().replace(b"10", b"11"))
    project.overwrite("datasets/t.csv", path.read_bytes().replace(b"10", b"12"))

    found = project.data("verify")
    assert found.exit_code == 1, found.output
    assert f"t:{sid}  damaged" in found.stdout and "current copy of t  unknown" in found.stdout
    assert "--repair" in found.stdout.splitlines()[-1]
    assert "Traceback" not in found.output

    repaired = project.data("verify", "t", "--repair", "--json")
    assert repaired.exit_code == 0, repaired.output
    statuses = {f["ref"]: (f["status"], f["detail"]) for f in json.loads(repaired.stdout)}
    assert statuses[f"t:{sid}"] == ("repaired", f"restored from {path.resolve()}")
    assert project.files()[f"snapshots/t/{sid}.csv"] == path.read_bytes()
    shown = project.data("show", f"t:{sid}")
    assert shown.exit_code == 0, shown.output


def test_ls_and_verify_on_a_bucket_that_does_not_exist_fail_with_one_line(
    write_config, tmp_path, s3_endpoint, aws_credentials
):
    root = write_config(root=tmp_path / "project")
    with open(root / "mlops.toml", "a") as toml:
        toml.write(S3_ENVIRONMENT.format(bucket="no-such-bucket-mlops", endpoint=s3_endpoint))
    project = Project(root, "s3test", dict, lambda key, data: None)
    for command in ("ls", "verify"):
        assert_one_error_line(project.data(command), "no-such-bucket-mlops")


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["show", "abcdef12"], ["no snapshot matches 'abcdef12'", "datasets with snapshots: t"]),
        (["get", "t:abcd"], ["no snapshot matches 't:abcd'"]),
        (["show", "t:ab"], ["snapshot 't:ab' is neither an id nor a dataset name; give 4-16 hex digits"]),
        (["show", "nope"], ["dataset 'nope' has no current version; datasets with snapshots: t"]),
        (["diff", "t", "u:0123"], ["no snapshot matches 'u:0123'"]),
        (["show", "../x:abcd"], ["dataset name '../x' is invalid"]),
        (["ls", "../x"], ["dataset name '../x' is invalid"]),
        (["add", "{v1}", "--name", "../x"], ["dataset name '../x' is invalid"]),
        (["add", "{v1}", "--name", "a/b"], ["dataset name 'a/b' is invalid"]),
        (["add", "{v1}", "--name", ".hidden"], ["dataset name '.hidden' is invalid"]),
        (["add", "{missing}", "--name", "t"], ["missing.csv: not found"]),
        (["add", "{text}", "--name", "t"], ["unsupported file type '.txt'"]),
        (["add", "{broken}", "--name", "t"], ["cannot be read as parquet"]),
    ],
)
def test_bad_input_fails_with_one_error_line_and_writes_nothing(local, tmp_path, args, fragments):
    added(local, table_file(tmp_path, V1, "v1.csv"))
    (tmp_path / "notes.txt").write_text("id\n1\n")
    (tmp_path / "broken.parquet").write_text("id\n1\n")
    paths = {"v1": tmp_path / "incoming" / "v1.csv", "missing": tmp_path / "missing.csv"}
    paths |= {"text": tmp_path / "notes.txt", "broken": tmp_path / "broken.parquet"}
    before = local.files()

    result = local.data(*(arg.format(**paths) for arg in args))

    assert_one_error_line(result, *fragments)
    assert local.files() == before
    assert sorted(p.name for p in local.root.iterdir()) == ["data", "mlops.toml"]


def test_a_bad_name_writes_nothing_to_either_storage(project, tmp_path):
    path = table_file(tmp_path, V1, "v1.csv")
    assert_one_error_line(project.data("add", str(path), "--name", "../x"), "dataset name '../x' is invalid")
    assert project.files() == {}


def two_files_with_a_shared_id_prefix(folder: Path) -> tuple[Path, Path]:
    """Two small CSV files whose ids start with the same four hex digits (found by trying contents in order)."""
    seen: dict[str, int] = {}
    i = 0
    while (prefix := content_id(f"x\n{i}\n".encode())[:4]) not in seen:
        seen[prefix] = i
        i += 1
    paths = (folder / "first.csv", folder / "second.csv")
    for path, n in zip(paths, (seen[prefix], i), strict=True):
        path.write_text(f"x\n{n}\n")
    return paths


def test_an_ambiguous_prefix_lists_the_candidates(local, tmp_path):
    first, second = two_files_with_a_shared_id_prefix(tmp_path)
    a = added(local, first)
    b = added(local, second, name="other")
    assert a[:4] == b[:4] and a != b
    before = local.files()
    line = assert_one_error_line(local.data("get", a[:4], "--to", str(tmp_path / "x.csv")))
    assert f"snapshot '{a[:4]}' is ambiguous; it matches " in line and "give more digits" in line
    assert f"t:{a}" in line and f"other:{b}" in line
    assert not (tmp_path / "x.csv").exists() and local.files() == before


def test_a_name_that_add_accepts_can_be_shown_by_name(local, tmp_path):
    path = table_file(tmp_path, V1, "v1.csv")
    result = local.data("add", str(path), "--name", "cafe")
    if result.exit_code != 0:  # refusing such names up front is a fix too
        assert_one_error_line(result, "'cafe'")
        return
    shown = local.data("show", "cafe")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith(f"cafe:{content_id(path.read_bytes())}")
