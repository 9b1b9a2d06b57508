"""RIME in Hugging Face form: a `DatasetDict` with explicit features, and a publishable dataset
(one parquet file per split and a dataset card). All `datasets` calls live here.

The DatasetDict keeps the case's own shape: nested fields are Arrow structs and lists under explicit
`features()`, so rows read back are exactly the JSON records and go through the same validation.

`write_hub(splits, folder)` writes `folder/data/<split>-00000-of-00001.parquet` and
`folder/README.md`, whose YAML front matter (configs, features, splits, license) is what the Hub
and `datasets.load_dataset(folder)` read: the folder loads offline with the same features as
`features()`, and can be uploaded as it is. The card's field list is the one in
`rime.data.schema`'s docstring, so the two cannot drift apart.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import datasets
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

from rime.data import schema
from rime.data.errors import CaseError
from rime.data.schema import Record, Session, read_record

SESSIONS_CONFIG = "sessions"
LICENSE = "apache-2.0"  # the project's license (pyproject.toml), which covers the generated data
CITATION = """@misc{chang2026runtime,
  title  = {Runtime Working Memory Editing in Linear Recurrent Models: A Simple Method and Its Limits},
  author = {Chang, Martin},
  year   = {2026},
  month  = apr,
  note   = {AINekko}
}"""


def features() -> Any:
    """The Arrow schema of a case (a `datasets.Features`)."""
    text, texts, integer = datasets.Value("string"), datasets.List(datasets.Value("string")), datasets.Value("int64")
    edit = {"style": text, "source": text, "dst": text}
    return datasets.Features({
        "id": text, "split": text, "entity": text, "property": text, "value_old": text, "value_new": text,
        "recipient": {"passages": texts, "entity_order": texts, "target_position": integer},
        "edits": datasets.List(edit), "queries": texts, "expected_answer_substring": text,
        "probe_queries": datasets.List({"query": text, "expected": text, "kind": text}),
        "params": {"distractor_count": integer, "overwrite_count": integer,
                   "composition_hop": datasets.Value("bool"), "multi_prop_count": integer,
                   "stack_depth": integer, "conflict_marker": text, "recipient_richness": text,
                   "edit_style": text, "target_position": integer},
        "aliases": texts, "old_aliases": texts,
        "stack": datasets.List({"value_old": text, "value_new": text, **edit}),
        "multi": datasets.List({"property": text, "value_old": text, "value_new": text,
                                "edits": datasets.List(edit), "queries": texts}),
        "wrong_entity": text,
    })


def session_features() -> Any:
    """The Arrow schema of a session (a `datasets.Features`)."""
    text, texts = datasets.Value("string"), datasets.List(datasets.Value("string"))
    return datasets.Features({
        "id": text, "split": text, "kind": text, "people": texts,
        "facts": datasets.List({"entity": text, "property": text, "value": text}), "passages": texts,
        "edits": datasets.List({"action": text, "entity": text, "property": text, "value_old": text,
                                "value_new": text, "style": text, "source": text, "dst": text,
                                "reverts": datasets.Value("int64"),
                                "fillers": datasets.List({"user": text, "assistant": text})}),
        "queries": datasets.List({"query": text, "entity": text, "property": text, "expected": text, "role": text}),
    })


def is_session_split(cases: list[Record]) -> bool:
    """Whether a split holds sessions; a split holds one kind, so it has one schema."""
    kinds = {isinstance(c, Session) for c in cases}
    if len(kinds) > 1:
        raise ValueError("a split holds either single cases or sessions, not both")
    return kinds == {True}


def to_dataset_dict(splits: dict[str, list[Record]]) -> Any:
    """The splits as a `datasets.DatasetDict`, one row per case; session splits have their own features."""
    return datasets.DatasetDict({
        name: datasets.Dataset.from_list([c.to_dict() for c in cases],
                                         features=session_features() if is_session_split(cases) else features())
        for name, cases in splits.items()
    })


def read_saved(path: Path, split: str | None) -> list[Record]:
    """The cases of a `save_to_disk` folder: a Dataset, all splits of a DatasetDict, or one `split`."""
    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.Dataset):
        parts = {None: data}
    elif split is None:
        parts = dict(data)
    elif split in data:
        parts = {split: data[split]}
    else:
        raise KeyError(f"{path} has no split {split!r}; it has {sorted(data)}")
    cases = []
    for name, part in parts.items():
        for i, row in enumerate(part.to_list()):
            try:
                cases.append(read_record(row))
            except CaseError as err:
                err.where = f"{path}[{name}][{i}]" if name else f"{path}[{i}]"
                raise
    return cases


def _fields() -> str:
    """The field table of `rime.data.schema`'s docstring, as a code block."""
    doc = schema.__doc__ or ""
    table = re.search(r"\n\n((?:    .*\n)+)\n", doc)
    if table is None:
        raise RuntimeError("rime.data.schema's docstring lost its field table")
    return "```\n" + "\n".join(line[4:] for line in table.group(1).splitlines()) + "\n```"


def _body(splits: dict[str, list[Record]], seed: int | None) -> str:
    sizes = "\n".join(f"| `{name}` | {len(cases)} |" for name, cases in splits.items())
    command = f"python -m rime build --seed {seed} --out DIR" if seed is not None else "python -m rime build"
    return f"""# RIME: Runtime Internal Memory Editing

RIME tests whether a fact held in a recurrent language model's state (its working memory, not its
weights) can be rewritten at inference time. Each case tells the model facts about people in a
conversation (the recipient passages), names one edit (an entity's property goes from `value_old`
to `value_new`), asks paraphrased questions whose answers show whether the edit took, and probes
facts the edit must leave alone. Controlled axes vary one difficulty at a time: distractors,
overwrites, one-hop composition, multi-property edits, stacked edits, conflict markers, recipient
richness, edit style and the target's position.

The `sessions` config holds the many-edit setting: one conversation states several facts about several
people, then edits, reverts and erases different facts one after another (with filler exchanges between
them), and every fact is asked afterwards: the edited ones (reliability, retention), the untouched ones
(locality), the reverted and the erased.

## Splits

| split | cases |
|---|---|
{sizes}

## Fields

One row per case, nested fields as structs and lists:

{_fields()}

## Generation

Generated, not collected: `{command}` (the rwkv-jax repository) samples cases from templates and
name/value pools over the grid of control axes, drops inadmissible cells, and validates every case
(`python -m rime validate`). The same seed gives the same splits. Names are fictional; no personal
data is involved.

## License

{LICENSE}

## Citation

The benchmark is introduced in "Runtime Working Memory Editing in Linear Recurrent Models: A Simple
Method and Its Limits" (Martin Chang, AINekko, 2026):

```bibtex
{CITATION}
```
"""


def write_hub(splits: dict[str, list[Record]], folder: str | os.PathLike, *, seed: int | None = None) -> Path:
    """Writes the parquet files and the dataset card into `folder` (created if needed): the single-case
    splits are the `default` config, the session splits the `sessions` config (each has one schema)."""
    folder = Path(folder).absolute()
    (folder / "data").mkdir(parents=True, exist_ok=True)
    data = to_dataset_dict(splits)
    for name, part in data.items():
        part.to_parquet(str(folder / "data" / f"{name}-00000-of-00001.parquet"))
    total = sum(len(cases) for cases in splits.values())
    card = DatasetCardData(
        license=LICENSE, language=["en"], pretty_name="RIME", task_categories=["question-answering"],
        tags=["knowledge-editing", "recurrent-state", "rwkv"],
        size_categories=["n<1K" if total < 1000 else "1K<n<10K" if total < 10_000 else "10K<n<100K"],
    )
    groups: dict[str, list[str]] = {}
    for name, cases in splits.items():
        groups.setdefault(SESSIONS_CONFIG if is_session_split(cases) else "default", []).append(name)
    infos, configs = {}, {}
    for config, names in groups.items():
        split_dict = datasets.SplitDict()
        for name in names:
            split_dict.add(datasets.SplitInfo(name=name, num_examples=len(data[name])))
        infos[config] = datasets.DatasetInfo(features=data[names[0]].features, splits=split_dict)
        configs[config] = {"data_files": [{"split": name, "path": f"data/{name}-*.parquet"} for name in names]}
    DatasetInfosDict(infos).to_dataset_card_data(card)
    MetadataConfigs(configs).to_dataset_card_data(card)
    readme = folder / "README.md"
    readme.write_text(f"---\n{card.to_yaml()}\n---\n\n{_body(splits, seed)}", encoding="utf-8")
    return folder
