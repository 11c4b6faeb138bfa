"""The examples in docs/ against the code, as tests/unit/test_readme_path.py holds the README's commands:
Job names and counts from the planner (the committed nrp stack), `grace status`'s example as the command
formats it, and the worker's output columns from a real `worker query` run of every study file.

Nothing here is typed from the docs: each expected value is read from the code or from a run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from grace_infra.commands.results.campaign import Campaign, load_campaign
from grace_infra.commands.status import JobStatus, format_status
from grace_infra.config.catalog import CATALOG
from tests.support import readme
from tests.support.fake_openai import FakeOpenAI
from worker.cli import main as worker_main
from worker.pipelines.query import REASONING_SUFFIX
from worker.studies.definition import PromptForm, Study, load_study

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted((REPO / "docs").glob("*.md"))
STACK = "nrp"
FIXTURES = REPO / "tests" / "fixtures"
# Names the planner gives Jobs: a job-mode model's matrix Job, or one Job per cell of a persistent model.
JOB_NAME = re.compile(
    r"(?<![\w.-])((?:matrix|study\d-exp\d|structured-output-study\d)-(?:"
    + "|".join(re.escape(key) for key in sorted(CATALOG, key=len, reverse=True))
    + r"))(?![\w.-])"
)
STATUS_WHERE = re.compile(r"^\d+ planned Jobs( on context .*?\)): ", re.M)


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    return load_campaign(STACK)


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_job_named_in_the_docs_is_one_the_stack_plans(page: Path, campaign: Campaign) -> None:
    planned = {job.name for job in campaign.jobs}
    named = set(JOB_NAME.findall(_text(page)))
    assert named <= planned, f"not planned by the {STACK} stack: {sorted(named - planned)}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_count_of_jobs_and_outputs_is_the_stacks(page: Path, campaign: Campaign) -> None:
    flat = " ".join(_text(page).split())
    for quoted in re.findall(r"(?<![\w.-])(\d[\d,]*) planned Jobs", flat):
        assert int(quoted.replace(",", "")) == len(campaign.jobs)
    for quoted in re.findall(r"of (\d[\d,]*) outputs", flat):
        assert int(quoted.replace(",", "")) == len(campaign.outputs)


def test_every_output_in_the_check_example_is_planned(campaign: Campaign) -> None:
    page = REPO / "docs" / "results.md"
    (section,) = [s for s in readme.sections(_text(page)) if s.title == "Check: `grace results check`"]
    (example,) = [b for b in section.blocks if b.text.startswith("output ")]
    shown = [line.split()[0] for line in example.text.splitlines() if re.match(r"^(exp\d|structured)/", line)]
    assert shown
    assert set(shown) <= {str(output.relative_path) for output in campaign.outputs}


def test_the_status_example_is_what_grace_status_prints(campaign: Campaign) -> None:
    """The example's rows, formatted by the command's own code with the stack's settings, give back the
    example exactly: its columns, summary counts and the reason a Job may be gone."""
    page = REPO / "docs" / "results.md"
    (section,) = [s for s in readme.sections(_text(page)) if s.title == "Watch: `grace status`"]
    (example,) = [b for b in section.blocks if b.text.startswith("model server ")]
    tables = example.text.split("\n\n")
    job_lines = tables[1].splitlines()[2:]
    jobs = [JobStatus(*re.split(r"\s{2,}", line, maxsplit=2)) for line in job_lines]
    where = STATUS_WHERE.search(example.text)
    assert where is not None
    formatted = format_status(jobs, [], campaign.config.jobs.ttl_seconds_after_finished, where.group(1))
    assert example.text.rstrip("\n") == formatted
    assert [job.job for job in jobs] == [job.name for job in campaign.jobs]


# --- the worker's output columns ------------------------------------------------------------------


def _study_files() -> list[Path]:
    return sorted((REPO / "jobs" / "studies").rglob("study*.yaml"))


def _documented_columns(table: str) -> tuple[set[str], set[str]]:
    """A docs table's concrete column names, and the example names its "one per ..." reply row gives."""
    named: set[str] = set()
    replies: set[str] = set()
    for line in table.splitlines()[2:]:
        first = line.split("|")[1]
        names = set(re.findall(r"`([^`]+)`", first))
        if first.strip().startswith("one per"):
            # `one per request: its `reply_column` (`a`, `b`; `c`)`: the examples are in the parentheses.
            replies |= set(re.findall(r"`([^`]+)`", first.partition("(")[2]))
        else:
            named |= {name for name in names if "<" not in name}
    return named, replies


def _query_tables() -> dict[PromptForm, str]:
    text = _text(REPO / "docs" / "worker.md")
    (section,) = [s for s in readme.sections(text) if s.title == "Output of `query`"]
    tables = re.findall(r"^\| column \| meaning \|\n(?:^\|.*\n)+", section.prose, re.M)
    chat, completion = tables  # the chat form's table, then the completion form's
    return {PromptForm.CHAT: chat, PromptForm.COMPLETION: completion}


def _columns_written(study_file: Path, study: Study, tmp_path: Path) -> list[str]:
    """The columns `worker query` adds to the input, from its output file."""
    source = FIXTURES / f"{study.name}_small.csv"
    output = tmp_path / f"{study_file.parent.name}-{study_file.stem}.csv"
    with FakeOpenAI() as server:
        code = worker_main([
            "query", "--study", str(study_file), "--input", str(source), "--output", str(output),
            "--model-endpoint", server.base_url, "--model-name", "tiny", "--metrics-port", "0",
            "--limit", "1",
        ])  # fmt: skip
    assert code in {0, 3}, code
    inputs = list(pd.read_csv(source, nrows=0).columns)
    return [column for column in pd.read_csv(output, nrows=0).columns if column not in inputs]


@pytest.mark.parametrize("study_file", _study_files(), ids=lambda p: p.relative_to(REPO / "jobs").as_posix())
def test_the_query_output_table_lists_every_column_the_worker_writes(
    study_file: Path, tmp_path: Path
) -> None:
    study = load_study(str(study_file))
    named, replies = _documented_columns(_query_tables()[study.prompt.form])
    written = _columns_written(study_file, study, tmp_path)
    reply_columns = set(study.prompt.reply_columns)
    generic = set(reply_columns)
    if study.prompt.form is PromptForm.CHAT:  # the `<reply>_reasoning` row: a chat reply's reasoning
        generic |= {f"{column}{REASONING_SUFFIX}" for column in reply_columns}
    assert named == set(written) - generic
    assert generic <= set(written)
    if study.prompt.form is PromptForm.COMPLETION:
        # The reply row's examples are the completion studies' own reply columns.
        every_reply = {
            column
            for path in _study_files()
            if (other := load_study(str(path))).prompt.form is PromptForm.COMPLETION
            for column in other.prompt.reply_columns
        }
        assert replies <= every_reply


def test_no_page_keeps_a_draft_for_the_readme() -> None:
    # Such drafts repeat the README in another page and go stale there; the README is the one copy.
    drafts = [page.name for page in DOCS if "## For the README" in page.read_text(encoding="utf-8")]
    assert drafts == []
