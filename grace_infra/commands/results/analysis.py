"""The tables the researchers' own analysis reads, written by `grace results tidy` into `<folder>/analysis/`.

Per study and experiment, two tables:

    study{1,2}_exp{1,2}_all_models.csv  every model's rows, one file (the name their
                                        scripts/convert_results_to_csv.py writes and
                                        Analysis/analyze_exp1_results.R reads): `model_name`, the
                                        condition and answer columns, `row` (the input row), `sample`,
                                        `outcome`, and for Experiment 1 the coded answers
    study{1,2}_exp{1,2}_items.csv       one row per (model, input row), the samples aggregated, so that no
                                        test counts a sample as a participant

The item tables carry the columns the researchers' R scripts analyse. Study 1 (Analysis/R_scripts/Study1.R
reads `X0`..`X3`, the percentage bet on each number of items, per participant): `X0`..`X3` are, in
Experiment 1, the percentage of the row's coded samples that answered k (the researchers' design asks for
one number) or the mean stated percentage (the chat design asks for all four); in Experiment 2 the mean of
`state{k}_mean` (the model's expected percentage for "exactly k"). Study 2 (Study2.R reads `State`,
`Goal_simplified`, `Was/Wasn't` and `Assessment`): `share_<was|wasn't>_<quality>` is the row's share of
each of the eight sentences (Experiment 1: of its coded samples; Experiment 2: the mean probability), and
`Was/Wasn't` and `Assessment` are the row's modal sentence (Experiment 1: the most frequent coded answer,
a tie going to the one an earlier sample gave; Experiment 2: the most probable sentence).

Experiment 1 replies are coded by the parser rules of the study file of the output's design (its
`extraction.parser`, worker/studies/rule_coder.py: the WHOLE reply must be in the format the prompt asked
for), one reply at a time: a row whose knowledge reply is off-format still has its quantity coded, and
an off-format reply stays uncoded (empty), never guessed. The coded fields carry the extraction schema's
names (`quantity_answer`, `knowledge_answer`, `probability_0`..`probability_3`, `was_wasnt`,
`assessment`). Where an extraction output (`worker extract`) exists for the model and study, its fields
are used instead, `coding` names each row's coder, and `n_self_coded` counts samples a studied model
coded for itself (`extraction_self_coded`).

Imported by the results subcommands (tidy, report) and statistics.py only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from grace_infra.commands.results.outputs import (
    ANALYSIS_DIR,
    OutputFile,
    failed_mask,
    row_outcomes,
)
from worker import contract
from worker.errors import InputError
from worker.run.atomic_files import atomic_writer
from worker.studies.definition import load_study
from worker.studies.extraction_section import METHOD_COLUMN, SELF_CODED_COLUMN, ExtractionSection
from worker.studies.rule_coder import PARSER_METHOD, ParseRule

__all__ = [
    "ANALYSIS_DIR",
    "STATES",
    "UTTERANCES",
    "AnalysisTables",
    "analysis_tables",
    "goal_kind",
    "item_table",
    "row_numbers",
    "write_analysis_tables",
]

STUDY1, STUDY2 = "study1", "study2"
EXP1, EXP2 = "exp1", "exp2"
PIPELINE_EXPERIMENT = {"query": EXP1, "extract": EXP1, "probs": EXP2}
STATES = (0, 1, 2, 3)
FRAMES, QUALITIES = ("was", "wasn't"), ("terrible", "bad", "good", "amazing")
UTTERANCES = tuple(f"{frame}_{quality}" for frame in FRAMES for quality in QUALITIES)
# The input columns that name a trial's condition, carried into the item tables.
CONDITIONS = {
    STUDY1: ("participant_id", "story_shortname", "access", "observe"),
    STUDY2: ("Participant_ID", "Domain", "Goal", "State", "Utterance"),
}
# Study2.R's column names for the coded sentence (read.csv turns "Was/Wasn't" into Was.Wasn.t).
WAS_COLUMN, ASSESSMENT_COLUMN, GOAL_COLUMN = "Was/Wasn't", "Assessment", "Goal_simplified"
# Study 2's Experiment 2 columns: the researchers' `prob_<label>` (query_study2_exp2.py) or the chat
# design's utterance question (`prob_utterance_<label>`, no apostrophe), and the question's coverage.
UTTERANCE_PROB_COLUMNS = ("prob_{label}", "prob_utterance_{plain}")
UTTERANCE_COVERAGE_COLUMNS = ("response_coverage", "utterance_coverage")
# Columns of the Experiment 2 file only the long table needs (JSON per question, bookkeeping).
EXP2_DROPPED_SUFFIXES = ("_raw", "_logprobs", "_absent", "_reasoning", "_reasoning_token_ids")


# The coded fields, named as the designs' extraction schemas name them (jobs/schemas/<design>/): the
# researchers' design codes one number and yes/no (Study 1) and the sentence (Study 2); the chat design
# four percentages instead of the number.
QUANTITY, KNOWLEDGE, FRAME, QUALITY = "quantity_answer", "knowledge_answer", "was_wasnt", "assessment"
PERCENTS = tuple(f"probability_{k}" for k in STATES)
CODED_FIELDS = {STUDY1: (QUANTITY, KNOWLEDGE, *PERCENTS), STUDY2: (FRAME, QUALITY)}


def goal_kind(goal: str) -> str:
    """Goal_simplified: 'If X wanted to BOTH ...' -> both; '... feel good, rather than ...' -> social."""
    if "BOTH" in goal:
        return "both"
    if "feel good" in goal:
        return "social"
    return "informational"


def row_numbers(frame: pd.DataFrame, samples: int = 1) -> pd.Series:
    """Each output row's input row: the k-th row of each sample is input row k (whichever order the worker
    wrote the samples in); without a `sample` column, each row's samples follow one another."""
    if "row" in frame.columns:
        return pd.to_numeric(frame["row"], errors="coerce").astype("Int64")
    if "sample" in frame.columns:
        return frame.groupby("sample", sort=False).cumcount()
    return pd.Series(range(len(frame)), index=frame.index) // max(samples, 1)


# ---- Experiment 1: coding ------------------------------------------------------------------------------


def _parser_rules(output: OutputFile) -> tuple[ParseRule, ...]:
    """The parser rules of the output's study in its design (the meta file's `design`, else the
    default), read from that design's study file; none when it has no extraction section."""
    design = str(output.parameters.get("design") or contract.DEFAULT_DESIGN)
    try:
        study = load_study(f"{design}/{output.study}")
        section = ExtractionSection.model_validate(study.extraction) if study.extraction else None
    except (InputError, ValidationError):
        return ()
    return section.parser if section is not None else ()


def _code_exp1(output: OutputFile) -> pd.DataFrame:
    """The output's rows with the coded fields and `coding`: an extraction output's own fields and
    method, or each reply coded by the study's parser rules one reply at a time (a row whose knowledge
    reply is off-format still has its quantity coded)."""
    assert output.frame is not None
    frame = output.frame.copy()
    failed = failed_mask(frame)
    if output.pipeline == "extract":
        method = frame.get(METHOD_COLUMN, pd.Series("", index=frame.index))
        frame["coding"] = method.where(~failed, "")
    else:
        rules = [rule for rule in _parser_rules(output) if rule.column in frame.columns]
        coded: list[dict[str, str]] = []
        for position, row in enumerate(frame.to_dict("records")):
            values: dict[str, str] = {}
            for rule in rules if not failed.iloc[position] else ():
                values.update(rule.code(str(row[rule.column])) or {})
            coded.append(values)
        for name in sorted({name for rule in rules for name in rule.produces}):
            frame[name] = [values.get(name, "") for values in coded]
        frame["coding"] = [PARSER_METHOD if values else "" for values in coded]
    fields = [name for name in CODED_FIELDS.get(output.study, ()) if name in frame.columns]
    for name in fields:
        frame[name] = frame[name].fillna("").astype(str).where(~failed, "")
    frame = frame.fillna("")
    # A sample counts as coded when its coder filled any field (an extraction may return only nulls).
    coded_any = (frame[fields] != "").any(axis=1) if fields else pd.Series(False, index=frame.index)
    frame["coding"] = frame["coding"].where(coded_any, "")
    if output.study == STUDY2:
        frame[WAS_COLUMN] = frame.get(FRAME, "")
        frame[ASSESSMENT_COLUMN] = frame.get(QUALITY, "")
    return frame


# ---- the all-models tables -----------------------------------------------------------------------------


def _all_models_rows(output: OutputFile, experiment: str) -> pd.DataFrame:
    assert output.frame is not None
    frame = _code_exp1(output) if experiment == EXP1 else output.frame.copy()
    if experiment == EXP2:
        frame = frame[[c for c in frame.columns if not c.endswith(EXP2_DROPPED_SUFFIXES)]]
    frame = frame.drop(columns=["model_name"], errors="ignore")
    frame.insert(0, "model_name", output.model_name)
    frame["row"] = row_numbers(output.frame, output.samples).to_numpy()
    if "sample" not in frame.columns:
        frame["sample"] = 0
    frame["outcome"] = row_outcomes(output).to_numpy()
    if output.study == STUDY2 and "Goal" in frame.columns:
        frame[GOAL_COLUMN] = frame["Goal"].map(goal_kind)
    return frame


# ---- the item tables -----------------------------------------------------------------------------------


def _self_coded(rows: pd.DataFrame) -> int:
    """Samples a studied model coded for itself (the extraction's flag; the report names them)."""
    if SELF_CODED_COLUMN not in rows.columns:
        return 0
    flagged = rows[SELF_CODED_COLUMN].astype(str).str.lower().isin({"true", "1"})
    return int((flagged & (rows["coding"] != "")).sum())


def _first(group: pd.DataFrame, columns: Iterable[str]) -> dict[str, object]:
    return {c: group[c].iloc[0] for c in columns if c in group.columns}


def _study1_items(rows: pd.DataFrame, experiment: str) -> pd.DataFrame:
    records = []
    for (model, row), group in rows.groupby(["model_name", "row"], sort=True):
        ok = group[group["outcome"] != "failed"]
        record: dict[str, object] = {"model_name": model, "row": row, **_first(group, CONDITIONS[STUDY1])}
        record["n_samples"] = len(group)
        if experiment == EXP1:
            if QUANTITY in ok.columns:  # one number per sample: the share answering each k
                answered = pd.to_numeric(ok[QUANTITY], errors="coerce").dropna()
                record["n_coded"] = len(answered)
                for k in STATES:
                    record[f"X{k}"] = 100.0 * float((answered == k).mean()) if len(answered) else math.nan
            else:  # four percentages per sample (the chat design): their means
                percents = ok.reindex(columns=list(PERCENTS)).apply(pd.to_numeric, errors="coerce").dropna()
                record["n_coded"] = len(percents)
                for k, column in zip(STATES, PERCENTS, strict=True):
                    record[f"X{k}"] = float(percents[column].mean()) if len(percents) else math.nan
            knows = ok[KNOWLEDGE] if KNOWLEDGE in ok.columns else pd.Series(dtype=str)
            knows = knows[knows.isin({"yes", "no"})]
            record["n_self_coded"] = _self_coded(ok)
            record["n_coded_knowledge"] = len(knows)
            record["knows_yes"] = float((knows == "yes").mean()) if len(knows) else math.nan
        else:
            record["n_coded"] = len(ok)
            for k in STATES:
                record[f"X{k}"] = float(pd.to_numeric(ok.get(f"state{k}_mean"), errors="coerce").mean())
                coverage = pd.to_numeric(ok.get(f"state{k}_coverage"), errors="coerce")
                record[f"coverage_state{k}"] = float(coverage.min()) if len(coverage) else math.nan
            record["knows_yes"] = float(pd.to_numeric(ok.get("prob_knowledge_yes"), errors="coerce").mean())
            coverage = pd.to_numeric(ok.get("knowledge_coverage"), errors="coerce")
            record["coverage_knowledge"] = float(coverage.min()) if len(coverage) else math.nan
        records.append(record)
    return pd.DataFrame.from_records(records)


def _utterance_column(frame: pd.DataFrame, label: str) -> str | None:
    names = (t.format(label=label, plain=label.replace("'", "")) for t in UTTERANCE_PROB_COLUMNS)
    return next((name for name in names if name in frame.columns), None)


def _mean_of(frame: pd.DataFrame, column: str | None) -> float:
    if column is None or not len(frame):
        return math.nan
    return float(pd.to_numeric(frame[column], errors="coerce").mean())


def _modal(answers: list[str]) -> str:
    """The most frequent answer; a tie goes to the one an earlier sample gave."""
    counts = pd.Series(answers).value_counts()
    best = counts[counts == counts.max()].index
    return next(answer for answer in answers if answer in best)


def _study2_items(rows: pd.DataFrame, experiment: str) -> pd.DataFrame:
    records = []
    for (model, row), group in rows.groupby(["model_name", "row"], sort=True):
        ok = group[group["outcome"] != "failed"]
        record: dict[str, object] = {"model_name": model, "row": row, **_first(group, CONDITIONS[STUDY2])}
        record[GOAL_COLUMN] = goal_kind(str(group["Goal"].iloc[0])) if "Goal" in group.columns else ""
        record["n_samples"] = len(group)
        modal = ""
        if experiment == EXP1:
            # A sample is coded when both halves of its sentence are (an extraction may code only one).
            said = pd.Series(dtype=str)
            if {FRAME, QUALITY} <= set(ok.columns):
                whole = (ok[FRAME] != "") & (ok[QUALITY] != "")
                said = (ok[FRAME] + "_" + ok[QUALITY])[whole]
            record["n_coded"] = len(said)
            record["n_self_coded"] = _self_coded(ok)
            for label in UTTERANCES:
                record[f"share_{label}"] = float((said == label).mean()) if len(said) else math.nan
            modal = _modal(list(said)) if len(said) else ""
        else:
            record["n_coded"] = len(ok)
            shares = {label: _mean_of(ok, _utterance_column(ok, label)) for label in UTTERANCES}
            record.update({f"share_{label}": value for label, value in shares.items()})
            coverage_column = next((c for c in UTTERANCE_COVERAGE_COLUMNS if c in ok.columns), None)
            coverage = pd.to_numeric(ok.get(coverage_column, pd.Series(dtype=str)), errors="coerce")
            record["coverage_response"] = float(coverage.min()) if len(coverage) else math.nan
            if len(ok) and not any(math.isnan(v) for v in shares.values()):
                modal = max(UTTERANCES, key=lambda label: shares[label])  # first of the eight on a tie
        frame, _, quality = modal.partition("_")
        record[WAS_COLUMN], record[ASSESSMENT_COLUMN] = frame, quality
        records.append(record)
    return pd.DataFrame.from_records(records)


def item_table(all_models: pd.DataFrame, study: str, experiment: str) -> pd.DataFrame:
    """One row per (model, input row) of an all-models table, its samples aggregated."""
    if all_models.empty:
        return pd.DataFrame()
    build = _study1_items if study == STUDY1 else _study2_items
    return build(all_models, experiment)


@dataclass(frozen=True)
class AnalysisTables:
    """One study and experiment: every model's rows, and the item table."""

    study: str
    experiment: str
    all_models: pd.DataFrame
    items: pd.DataFrame

    @property
    def stem(self) -> str:
        return f"{self.study}_{self.experiment}"


def _usable(output: OutputFile) -> bool:
    return output.frame is not None and output.study in CONDITIONS and output.pipeline in PIPELINE_EXPERIMENT


def analysis_tables(outputs: Iterable[OutputFile]) -> list[AnalysisTables]:
    """The tables of every (study, experiment) the outputs hold, models in name order. For Experiment 1
    a model's extraction output, where there is one, stands for its query output (it keeps every column)."""
    chosen: dict[tuple[str, str, str], OutputFile] = {}
    for output in outputs:
        if not _usable(output):
            continue
        experiment = PIPELINE_EXPERIMENT[output.pipeline]
        key = (output.study, experiment, output.model_name)
        if key not in chosen or output.pipeline == "extract":
            chosen[key] = output
    grouped: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for (study, experiment, _), output in sorted(chosen.items()):
        grouped.setdefault((study, experiment), []).append(_all_models_rows(output, experiment))
    tables = []
    for (study, experiment), frames in sorted(grouped.items()):
        all_models = pd.concat(frames, ignore_index=True).fillna("")
        tables.append(
            AnalysisTables(study, experiment, all_models, item_table(all_models, study, experiment))
        )
    return tables


def table_paths(folder: Path, stem: str) -> tuple[Path, Path]:
    directory = folder / ANALYSIS_DIR
    return directory / f"{stem}_all_models.csv", directory / f"{stem}_items.csv"


def write_analysis_tables(folder: Path, outputs: Iterable[OutputFile]) -> list[Path]:
    """Write every table under `folder/analysis/` (atomically); the paths written."""
    written = []
    for tables in analysis_tables(outputs):
        for path, table in zip(
            table_paths(folder, tables.stem), (tables.all_models, tables.items), strict=True
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_writer(path) as handle:
                table.to_csv(handle, index=False, lineterminator="\r\n")
            written.append(path)
    return written


def read_item_tables(folder: Path) -> Mapping[str, pd.DataFrame]:
    """stem -> item table, for what `write_analysis_tables` wrote."""
    out = {}
    for path in sorted((folder / ANALYSIS_DIR).glob("*_items.csv")):
        out[path.name.removesuffix("_items.csv")] = pd.read_csv(path)
    return out
