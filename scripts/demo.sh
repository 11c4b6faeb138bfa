#!/usr/bin/env bash
# The whole Grace pipeline on a machine without a cluster or a GPU:
#   1. set up both environments (scripts/setup.sh; a no-op when already done)
#   2. render the nrp stack offline: every Kubernetes object the cluster would get
#   3. build the tiny random model and start a real vLLM CPU server on it
#   4. per study: Experiment 1 (worker query), Experiment 2 (worker probs) and extraction
#      (worker extract) on the first rows
#   5. print where everything is and a short table of results; stop the server (always)
#   6. check the outputs, write the long probability tables and the HTML report (grace results)
#
# Usage: bash scripts/demo.sh [--rows N] [--out DIR] [--design researchers|chat]
# Input: ../shared/data/study{1,2}.csv next to the repo when present, else tests/fixtures.
# Design: the studies' design the pipelines run (jobs/studies/<design>/), the researchers' by default,
# as on the cluster; --design chat runs Grace's chat design instead.
# Each run writes a new folder under DIR (default demo-output/); nothing earlier is overwritten.
# The tiny model's weights are random: the answers are noise, the plumbing is real.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

rows=10
out_root="$repo_root/demo-output"
design=researchers
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rows) rows="${2:?--rows needs a number}"; shift 2 ;;
        --out) out_root="${2:?--out needs a folder}"; shift 2 ;;
        --design) design="${2:?--design needs researchers or chat}"; shift 2 ;;
        *) echo "demo.sh: unknown argument '$1' (options: --rows N, --out DIR, --design NAME)" >&2; exit 2 ;;
    esac
done
if [[ ! -d "jobs/studies/$design" ]]; then
    echo "demo.sh: --design must name a folder of jobs/studies/ (researchers or chat), got '$design'" >&2
    exit 2
fi
if ! [[ "$rows" =~ ^[1-9][0-9]*$ ]]; then
    echo "demo.sh: --rows must be a positive whole number, got '$rows'" >&2
    exit 2
fi

start=$SECONDS
bash scripts/setup.sh
py="$repo_root/.venv/bin/python"

run_dir="$out_root/run-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$run_dir"
echo
echo "== demo: outputs go to $run_dir (design: $design, jobs/studies/$design/)"

echo "== 1/3 render the nrp stack offline"
render_rc=0
"$py" -m grace_infra render --stack nrp --out "$run_dir/render" || render_rc=$?

shared_data="$repo_root/../shared/data"
declare -A inputs
if [[ -f "$shared_data/study1.csv" && -f "$shared_data/study2.csv" ]]; then
    inputs[study1]="$(cd "$shared_data" && pwd)/study1.csv"
    inputs[study2]="$(cd "$shared_data" && pwd)/study2.csv"
    echo "== input: the real study files in $(cd "$shared_data" && pwd) (first $rows rows)"
else
    inputs[study1]="$repo_root/tests/fixtures/study1_small.csv"
    inputs[study2]="$repo_root/tests/fixtures/study2_small.csv"
    echo "== input: ../shared/data not found; using the project's fixtures in tests/fixtures"
fi

echo "== 2/3 start the tiny vLLM CPU server (about 80 s on idle cores, minutes on a busy machine)"
server_dir="$run_dir/server"
stop_server() { "$py" scripts/tiny_vllm.py stop --workdir "$server_dir" || true; }
trap stop_server EXIT
# 2048, not the tests' 512: extraction sends the schema plus exp1's answer, and the tiny model's
# random answers tokenize poorly (~1 token per 2 characters), so 512 overflows on most rows.
endpoint="$("$py" scripts/tiny_vllm.py start --workdir "$server_dir" --max-model-len 2048)"

echo "== 3/3 run the pipelines (exit codes: 0 all rows ok, 3 some rows failed and are marked, 2 bad input)"
# One results line per step, read by the summary table below.
results="$run_dir/steps.tsv"
: >"$results"
common=(--model-endpoint "$endpoint" --model-name tiny --metrics-port 0 --wait-timeout 60)
run_step() {  # study step output_csv worker-args...
    local study=$1 step=$2 output=$3
    shift 3
    local t0=$SECONDS rc=0
    echo "-- $study $step"
    "$py" -m worker "$step" --study "$design/$study" --output "$output" "${common[@]}" "$@" \
        >"$run_dir/$study/$step.log" 2>&1 || rc=$?
    printf '%s\t%s\t%s\t%s\t%s\n' "$study" "$step" "$rc" "$((SECONDS - t0))" "$output" >>"$results"
    if [[ $rc -ne 0 && $rc -ne 3 ]]; then
        echo "   failed (exit $rc); last lines of $run_dir/$study/$step.log:"
        tail -n 5 "$run_dir/$study/$step.log" | sed 's/^/   | /'
    fi
}
for study in study1 study2; do
    mkdir -p "$run_dir/$study"
    # --limit counts input rows; extraction codes every (row, sample) that exp1 wrote, so it has none.
    run_step "$study" query "$run_dir/$study/exp1_responses.csv" --input "${inputs[$study]}" --limit "$rows"
    run_step "$study" probs "$run_dir/$study/exp2_probs.csv" --input "${inputs[$study]}" --limit "$rows"
    run_step "$study" extract "$run_dir/$study/extracted.csv" --input "$run_dir/$study/exp1_responses.csv"
done

stop_server
trap - EXIT

echo
echo "== results (rows ok = rows with an empty error column)"
"$py" - "$results" <<'PY'
import csv
import sys
from pathlib import Path

import pandas as pd

ERROR_COLUMNS = ("error", "extraction_errors")
print(f"{'study':<8} {'step':<8} {'exit':>4} {'secs':>5} {'rows':>5} {'ok':>5}  output")
with open(sys.argv[1], newline="") as steps:
    for study, step, rc, secs, output in csv.reader(steps, delimiter="\t"):
        path = Path(output)
        if path.exists():
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            failed = pd.Series(False, index=table.index)
            for column in ERROR_COLUMNS:
                if column in table:
                    failed |= table[column].str.strip() != ""
            rows, ok = str(len(table)), str(int((~failed).sum()))
        else:
            rows, ok, output = "-", "-", f"(not written) {output}"
        print(f"{study:<8} {step:<8} {rc:>4} {secs:>5} {rows:>5} {ok:>5}  {output}")
PY
echo
echo "== a look at the first rows (random weights: the numbers are noise, the columns are real)"
"$py" - "$run_dir" <<'PY'
import sys
from pathlib import Path

import pandas as pd

SHOWN_ROWS = 3
# The reply columns of both designs (jobs/studies/<design>/*.yaml): the researchers' Study 1 asks two
# independent questions and Study 2 one (response); the chat design's Study 1 asks three in one
# conversation and Study 2 one (model_response).
REPLY_COLUMNS = (
    "response_quantity", "response", "model_response", "response_story", "response_speech",
    "response_knowledge",
)
run_dir = Path(sys.argv[1])


def read(path: Path) -> pd.DataFrame | None:
    """The file's rows, first sample only: exp2 scores one row per input row, exp1 samples several."""
    if not path.exists():
        return None
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return table[table["sample"] == "0"].reset_index(drop=True) if "sample" in table else table


def short(value: str, width: int = 28) -> str:
    flat = " ".join(str(value).split())
    return flat if len(flat) <= width else flat[: width - 1] + "~"


for study_dir in sorted(p for p in run_dir.iterdir() if (p / "exp1_responses.csv").exists()):
    exp1 = read(study_dir / "exp1_responses.csv")
    probs = read(study_dir / "exp2_probs.csv")
    extracted = read(study_dir / "extracted.csv")
    replies = [c for c in REPLY_COLUMNS if c in exp1]
    view = pd.DataFrame({c: exp1[c].map(lambda v: short(v, 20)) for c in replies}).head(SHOWN_ROWS)
    if probs is not None:
        # Per-question summaries: means of the percentage scales, entropies of every question.
        for column in [c for c in probs.columns if c.endswith("_mean") or c.startswith("entropy_")]:
            view[column] = pd.to_numeric(probs[column], errors="coerce").round(3).head(SHOWN_ROWS)
    if extracted is not None:
        # The schema's fields: whatever extraction added, minus its bookkeeping columns.
        for column in [c for c in extracted.columns if c not in exp1.columns and not c.startswith("extraction_")]:
            view[column] = extracted[column].map(short).head(SHOWN_ROWS)
    print(f"-- {study_dir.name}")
    print(view.to_string(index=False))
PY
echo
echo "== check and report (grace results; docs/results.md). With --rows the outputs hold only the first"
echo "   rows, so check says 'rows missing (--limit N)': a smoke run, not a campaign."
"$py" -m grace_infra results check "$run_dir" || true
"$py" -m grace_infra results tidy "$run_dir" >/dev/null || true
"$py" -m grace_infra results report "$run_dir" --out "$run_dir/report.html" || true
echo
echo "== rendered stack: $run_dir/render (manifests/, resources.json, plan.json; render exit $render_rc)"
echo "== server log: $server_dir/vllm-server.log; step logs: $run_dir/<study>/<step>.log"
echo "== demo finished in $((SECONDS - start)) s"
