"""RIME as a published dataset: `rime build` writes parquet per split and a dataset card that
`datasets.load_dataset` reads offline with the same features and rows."""

import datasets
import pytest
import yaml

import rime
from rime.__main__ import main
from rime.data.hub import features, session_features

SMALL = {"seed": 4, "test_size": 6, "dev_size": 3}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "rime"
    argv = ["build", "--seed", str(SMALL["seed"]), "--test-size", str(SMALL["test_size"]),
            "--dev-size", str(SMALL["dev_size"]), "--out", str(out)]
    assert main(argv) == 0
    return out


def card(folder):
    text = (folder / "README.md").read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_load_dataset_reads_the_build_offline_with_the_same_features_and_rows(built):
    loaded = datasets.load_dataset(str(built / "hf"))
    assert sorted(loaded) == ["dev", "test"]
    for name in ("test", "dev"):
        assert loaded[name].features == features()
        assert [rime.Case.from_dict(row) for row in loaded[name]] == rime.load(built / f"{name}.jsonl")
    assert rime.load(built / "hf", split="test") == rime.load(built / "test.jsonl")  # save_to_disk too
    sessions = datasets.load_dataset(str(built / "hf"), "sessions")
    assert sorted(sessions) == ["session_dev", "session_test"]
    assert sessions["session_dev"].features == session_features()
    assert [rime.Session.from_dict(row) for row in sessions["session_dev"]] == rime.load(built / "session_dev.jsonl")


def test_dataset_card_declares_configs_features_splits_and_license(built):
    front, body = card(built / "hf")
    assert front["license"] == "apache-2.0"
    assert front["configs"] == [
        {"config_name": "default", "data_files": [
            {"split": "test", "path": "data/test-*.parquet"}, {"split": "dev", "path": "data/dev-*.parquet"}]},
        {"config_name": "sessions", "data_files": [
            {"split": "session_test", "path": "data/session_test-*.parquet"},
            {"split": "session_dev", "path": "data/session_dev-*.parquet"}]}]
    info = {config["config_name"]: config for config in front["dataset_info"]}
    splits = {s["name"]: s["num_examples"] for s in info["default"]["splits"]}
    assert splits == {"test": SMALL["test_size"], "dev": SMALL["dev_size"]}
    assert [f["name"] for f in info["default"]["features"]] == list(features())
    assert [f["name"] for f in info["sessions"]["features"]] == list(session_features())
    assert (built / "hf" / "data" / "test-00000-of-00001.parquet").is_file()
    for section in ("## Splits", "## Fields", "## Generation", "## License", "## Citation"):
        assert section in body
    assert "probe_queries" in body and "--seed 4" in body
    assert "Runtime Working Memory Editing in Linear Recurrent Models" in body and "@misc{" in body


def test_jsonl_only_builds_no_hub_folder(tmp_path):
    argv = ["build", "--seed", "4", "--test-size", "6", "--dev-size", "3", "--jsonl-only", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert not (tmp_path / "hf").exists()
