"""Storage: JSONL and DatasetDict round trips, the bundled splits, file-level validation, and the CLI."""

import json
import subprocess
import sys

import pytest

import rime
from rime import CaseError, FieldTypeError, FormatError

SMALL = {"seed": 4, "test_size": 24, "dev_size": 12}


@pytest.fixture(scope="module")
def splits():
    return rime.build_splits(**SMALL)


def records(cases):
    return [c.to_dict() for c in cases]


def test_jsonl_round_trip(tmp_path, splits):
    path = tmp_path / "cases.jsonl"
    rime.write_jsonl(splits["test"], path)
    assert rime.load(path) == splits["test"] == rime.read_jsonl(path)
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == records(splits["test"])


def test_dataset_dict_round_trip_keeps_the_case_shape(tmp_path, splits):
    rime.to_dataset_dict(splits).save_to_disk(str(tmp_path / "hf"))
    assert rime.load(tmp_path / "hf") == splits["test"] + splits["dev"]
    assert rime.load(tmp_path / "hf", split="dev") == splits["dev"]
    import datasets

    row = datasets.load_from_disk(str(tmp_path / "hf"))["test"][0]
    assert row == splits["test"][0].to_dict()
    assert isinstance(row["params"]["composition_hop"], bool)


def test_bundled_splits_load_offline_and_match_the_default_build():
    built = {**rime.build_splits(rime.DEFAULT_SEED), **rime.build_session_splits(rime.DEFAULT_SEED)}
    for name in rime.GENERATED_SPLITS:
        assert records(rime.load(name)) == records(built[name]), f"rime/data/{name}.jsonl is stale"
    assert len(rime.load("test")) == 215


def test_file_problems_are_reported_with_line_numbers(tmp_path, splits):
    good = [json.dumps(r) for r in records(splits["test"][:3])]
    broken = json.loads(good[1])
    broken["recipient"]["target_position"] = "first"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([good[0], "{not json", json.dumps(broken), good[0]]) + "\n")
    count, problems = rime.check_jsonl(path)
    assert count == 1 and len(problems) == 3
    assert problems[0].startswith(f"{path}:2: invalid JSON")
    assert problems[1].startswith(f"{path}:3: case {broken['id']!r}: field 'recipient.target_position'")
    assert f"{path}:4:" in problems[2] and "already used on line 1" in problems[2]
    with pytest.raises(FormatError, match="invalid JSON"):
        rime.read_jsonl(path)
    path.write_text(json.dumps(broken) + "\n")
    with pytest.raises(FieldTypeError) as err:
        rime.load(path)
    assert err.value.where == f"{path}:1" and isinstance(err.value, CaseError)
    path.write_text("\n")
    assert rime.check_jsonl(path)[1] == [f"{path}: no cases"]


def test_load_rejects_unknown_sources(tmp_path):
    with pytest.raises(FileNotFoundError):
        rime.load(tmp_path / "missing.jsonl")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rime", *args], capture_output=True, text=True, timeout=120)


def test_cli_builds_both_formats_and_validates(tmp_path, splits):
    out = tmp_path / "build"
    result = run_cli("build", "--seed", str(SMALL["seed"]), "--test-size", str(SMALL["test_size"]),
                     "--dev-size", str(SMALL["dev_size"]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    total, admissible = rime.grid_size()
    assert f"{total} cells, {admissible} admissible" in result.stdout
    for axis in rime.AXES:
        assert axis in result.stdout
    assert rime.load(out / "test.jsonl") == splits["test"] == rime.load(out / "hf", split="test")
    assert rime.load(out / "dev.jsonl") == splits["dev"]

    ok = run_cli("validate", str(out / "test.jsonl"), str(out / "dev.jsonl"))
    assert ok.returncode == 0, ok.stderr
    assert f"{SMALL['test_size']} valid cases, 0 problems" in ok.stdout

    record = records(splits["test"])[0]
    record["params"]["conflict_marker"] = "loud"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(record) + "\n")
    failed = run_cli("validate", str(bad))
    assert failed.returncode == 1
    assert f"case {record['id']!r}: field 'params.conflict_marker'" in failed.stderr
    missing = run_cli("validate", str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_the_hand_written_natural_split_covers_the_hard_kinds_and_is_held_out_of_training():
    cases = rime.load("natural")
    assert len(cases) >= 60 and {c.split for c in cases} == {"natural"}
    assert sum(c.params.cell.overwrite_count > 0 for c in cases) >= 12
    assert sum(any(p.kind == "same_value_distractor" for p in c.probe_queries) for c in cases) >= 8
    assert sum(c.params.cell.composition_hop for c in cases) >= 4 and any(c.stack for c in cases)
    assert sum(" " in c.value_old for c in cases) >= 12  # multi-word values
    held_out = rime.data.corpus.bundled_held_out()
    assert all(p in held_out for c in cases for p in c.recipient.passages)
