"""One table reader: a CSV gives a step the types its snapshot's manifest records, however the manifest was built."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from mlops_template.data import manifest
from mlops_template.data.manifest import profile_file
from mlops_template.data.snapshots import SnapshotStore
from mlops_template.data.tables import looser, parse_table, read_arrow, read_table
from mlops_template.data.tables import parse_table as parse_table_for_steps
from mlops_template.errors import StorageError
from mlops_template.storage import LocalStorage

BLOCK = 1 << 10  # small blocks, so a value far down a file comes long after the first one
FILLER = 300  # rows before the odd value: several blocks

# name: (the column's values, the type the manifest records)
COLUMNS = {
    "int_with_blanks": (["1", "", "3"], "int64"),
    "flags": (["true", "false", "true"], "bool"),
    "flags_with_blanks": (["true", "", "false"], "bool"),
    "dates": (["2024-01-31", "2024-02-01", ""], "date32[day]"),
    "times": (["2024-01-31 10:00:00", "2024-02-01 11:30:00", "2024-02-01 12:00:00"], "timestamp[s]"),
    "zoned": (["2024-01-31T10:00:00Z", "2024-02-01T11:30:00+01:00", ""], "timestamp[s, tz=UTC]"),
    "zero_padded": (["007", "010", "123"], "int64"),
    "text": (["plain", "", "more"], "string"),
    "blank": (["", "", ""], "null"),
}

# name: (values of the first blocks, the odd value far below them, the type of the whole column)
LATE = {
    "int_then_float": ("7", "2.5", "double"),
    "int_then_text": ("7", "x7", "string"),
    "bits_then_true": ("1", "true", "bool"),
    "date_then_time": ("2024-01-31", "2024-01-31 10:00:00", "timestamp[s]"),
    "seconds_then_fraction": ("2024-01-31 10:00:00", "2024-01-31 10:00:00.25", "timestamp[ns]"),
    "zoned_then_fraction": ("2024-01-31T10:00:00Z", "2024-01-31T10:00:00.25Z", "timestamp[ns, tz=UTC]"),
    "naive_then_zoned": ("2024-01-31 10:00:00", "2024-01-31T10:00:00Z", "string"),
    "blank_then_int": ("", "5", "int64"),
    "date_then_number": ("2024-01-31", "5", "string"),
}


TEXT = str(pd.Series(["a"]).dtype)  # pandas' own text dtype: "str" from pandas 3 on, "object" before


def step_dtype(column: dict) -> str:
    """The pandas dtype a step gets for a manifest's column (the table in `tables.py`)."""
    dtype, blanks = column["dtype"], column["nulls"] > 0
    if dtype == "int64":
        return "float64" if blanks else "int64"
    if dtype == "bool":
        return "object" if blanks else "bool"
    if dtype.startswith("timestamp["):
        unit, _, zone = dtype.removeprefix("timestamp[").removesuffix("]").partition(", tz=")
        return f"datetime64[{unit}, {zone}]" if zone else f"datetime64[{unit}]"
    return {"double": "float64", "date32[day]": "datetime64[ms]", "null": "object", "string": TEXT}[dtype]


def csv_text(columns: dict[str, list[str]]) -> str:
    rows = zip(*columns.values(), strict=True)
    return ",".join(columns) + "\n" + "".join(",".join(row) + "\n" for row in rows)


def late_csv() -> str:
    return csv_text(
        {name: [first] * FILLER + [odd] for name, (first, odd, _) in LATE.items()} | {"n": ["1"] * (FILLER + 1)}
    )


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "_CSV_BLOCK", BLOCK)


def dtypes(df: pd.DataFrame) -> dict[str, str]:
    return {name: str(t) for name, t in df.dtypes.items()}


def test_a_step_gets_the_types_the_manifest_records(tmp_path):
    source = tmp_path / "tricky.csv"
    source.write_text(csv_text({name: values for name, (values, _) in COLUMNS.items()}))
    store = SnapshotStore(LocalStorage(tmp_path / "root"))

    snapshot = store.add_file(source, "tricky").snapshot
    step_frame = parse_table_for_steps(store.storage.read_bytes("datasets/tricky.csv"), "datasets/tricky.csv")

    assert {c["name"]: c["dtype"] for c in snapshot.columns} == {name: t for name, (_, t) in COLUMNS.items()}
    assert dtypes(step_frame) == {c["name"]: step_dtype(c) for c in snapshot.columns}
    assert dtypes(read_table(store.storage, "datasets/tricky.csv")) == dtypes(step_frame)  # `read_raw`'s path
    assert dtypes(store.read(snapshot)[1]) == dtypes(step_frame)
    assert step_frame["zero_padded"].tolist() == [7, 10, 123]
    assert step_frame["dates"].tolist()[:2] == [pd.Timestamp("2024-01-31"), pd.Timestamp("2024-02-01")]
    assert step_frame["zoned"].tolist()[1] == pd.Timestamp("2024-02-01T10:30:00Z")
    assert step_frame["flags_with_blanks"].tolist() == [True, None, False]


@pytest.mark.parametrize("parallel", [False, True], ids=["one stream", "parts"])
def test_a_value_far_below_the_first_block_gives_the_manifest_the_whole_files_type(
    tmp_path, monkeypatch, small_blocks, parallel
):
    monkeypatch.setattr(manifest, "_CSV_PARALLEL_MIN", 0 if parallel else 1 << 40)
    path = tmp_path / "late.csv"
    path.write_text(late_csv())
    assert path.stat().st_size > 20 * BLOCK

    profile = profile_file(str(path), "csv")
    step_frame = parse_table(path.read_bytes(), "late.csv")

    recorded = {c["name"]: c["dtype"] for c in profile["columns"]}
    assert recorded == {name: t for name, (_, _, t) in LATE.items()} | {"n": "int64"}
    assert dtypes(step_frame) == {c["name"]: step_dtype(c) for c in profile["columns"]}
    assert profile["rows"] == len(step_frame) == FILLER + 1


def test_quoted_commas_and_line_breaks_read_as_written(tmp_path, monkeypatch, small_blocks):
    monkeypatch.setattr(manifest, "_CSV_PARALLEL_MIN", 0)
    notes = [f"note {i}, with a comma" for i in range(200)] + ['two\nlines, "quoted"', ""]
    text = "n,note\n" + "".join(f'{i},"{note.replace(chr(34), chr(34) * 2)}"\n' for i, note in enumerate(notes))
    path = tmp_path / "notes.csv"
    path.write_text(text)

    step_frame = parse_table(text.encode(), "notes.csv")
    profile = profile_file(str(path), "csv")

    assert step_frame["note"].tolist()[:-1] == notes[:-1] and pd.isna(step_frame["note"].iloc[-1])
    assert step_frame["n"].tolist() == list(range(len(notes)))
    assert profile["rows"] == len(step_frame) == len(notes)
    assert dtypes(step_frame) == {c["name"]: step_dtype(c) for c in profile["columns"]}


@pytest.mark.parametrize("columns", [1, 2], ids=["one column", "two columns"])
def test_parts_are_never_cut_inside_a_quoted_value(tmp_path, monkeypatch, small_blocks, columns):
    monkeypatch.setattr(manifest, "_CSV_PARALLEL_MIN", 0)
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    long_value = '"' + "\n".join(f"line {i}, then a comma" for i in range(400)) + '"'  # most of the file
    lead = "" if columns == 1 else "1,"
    rows = [f'{lead}"short {i}"' for i in range(30)] + [lead + long_value] + [f'{lead}"after {i}"' for i in range(30)]
    path = tmp_path / "long.csv"
    path.write_text(("text" if columns == 1 else "n,text") + "\n" + "\n".join(rows) + "\n")
    parts = manifest._csv_parts(str(path), path.stat().st_size)
    inside = range(path.read_text().index(long_value), path.read_text().index(long_value) + len(long_value))
    assert len(parts) > 1 and all(start not in inside for start, _ in parts)

    profile = profile_file(str(path), "csv")
    step_frame = parse_table(path.read_bytes(), "long.csv")

    assert profile["rows"] == len(step_frame) == 61
    assert step_frame["text"].iloc[30] == long_value.strip('"')


def test_looser_follows_arrows_inference_order():
    chain = [pa.null()]
    while (following := looser(chain[-1])) is not None:
        chain.append(following)
    assert [str(t) for t in chain] == [
        "null", "int64", "bool", "date32[day]", "time32[s]", "timestamp[s]", "timestamp[ns]", "double", "string", "binary"
    ]  # fmt: skip
    assert looser(pa.timestamp("s", "UTC")) == pa.timestamp("ns", "UTC")


def test_whole_file_inference_matches_the_first_type_that_takes_every_value():
    for name, (first, odd, expected) in LATE.items():
        table = read_arrow(f"{name}\n{first}\n{odd}\n".encode(), "csv")
        assert str(table.schema.field(name).type) == expected, name


def test_a_row_longer_than_a_block_is_read_whole():
    long_text = "word " * (400 << 10)  # 2 MB in one value: more than Arrow's default block
    frame = parse_table(f'n,text\n1,"{long_text}"\n2,short\n'.encode(), "long.csv")
    assert frame["text"].tolist() == [long_text, "short"]


def test_a_table_that_cannot_be_read_names_the_file():
    with pytest.raises(StorageError, match=r"broken\.csv: cannot be read as a table .* is the file complete\?"):
        parse_table(b"a,b\n1,2\n3\n", "datasets/broken.csv")
