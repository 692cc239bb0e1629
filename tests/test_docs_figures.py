"""Every figure in the README's and the docs' tables is in the results file the table cites, and every results file
carries its provenance.

Convention (docs/benchmarks.md, "How the figures are checked"): a table cites its results files in the paragraph
right above it (`results/NAME.json`, any prefix), or row by row in a cell of the row (a row that cites files is
checked against those alone). A table without measured figures says so with ``<!-- not measured -->`` in that
paragraph. Every number in a body cell, outside `code spans`, must equal a number stored in a cited file after
rounding to the digits shown; a fraction stored as 0.0086 may be shown as a percentage (0.9 %), and a value may be
shown in a unit 1,000 times larger or smaller (s and ms). A row that names a run of a file that gathers several runs
(`flashmd_cg_speed_gpu_s11`) is checked against that run's numbers alone. A research note may quote an earlier run
whose file has left the results folder by naming the commit that holds it, `results/NAME.json` at commit `abc1234`:
its figures are checked against that commit's file (read with git; without the history, as in a shallow clone,
such a table is not checked).
"""

import ast
import bisect
import functools
import glob
import json
import math
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "examples", "benchmarks", "results")
PROVENANCE_KEYS = ("gpu", "driver", "torch", "triton", "openmm", "command", "commit", "date")
SCALES = (1.0, 100.0, 1000.0, 0.001)
MAX_RESULTS_FILES = 40
NO_GPU = "none (CPU run)"  # benchprovenance.NO_GPU: what gpu and driver say for a run without CUDA

CITATION = re.compile(r"results/([A-Za-z0-9_.\-]+\.json)(?:`? at commit `?([0-9a-f]{7,40})\b)?")
RESULTS_IN_GIT = "examples/benchmarks/results/"


def citations(text):
    """The results files a text cites: "NAME.json", or "NAME.json@COMMIT" for a file quoted at a commit."""
    return [f"{name}@{commit}" if commit else name for name, commit in CITATION.findall(text)]


@functools.lru_cache(maxsize=None)  # each row of a table quoting a commit asks again
def _git_show(commit, name):
    """The text of results file ``name`` at ``commit``, or None where git, the commit or the file is missing."""
    try:
        out = subprocess.run(["git", "show", f"{commit}:{RESULTS_IN_GIT}{name}"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def history_available():
    """Whether this checkout holds the git history (a shallow clone or an unpacked archive does not)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "false"


def load_results(cited):
    """The JSON of a cited results file ("NAME.json" in the results folder, "NAME.json@COMMIT" from git)."""
    name, _, commit = cited.partition("@")
    if not commit:
        with open(os.path.join(RESULTS, name), encoding="utf-8") as f:
            return json.load(f)
    text = _git_show(commit, name)
    if text is None:
        raise FileNotFoundError(f"{RESULTS_IN_GIT}{name} at commit {commit}")
    return json.loads(text)


def cited_exists(cited):
    name, _, commit = cited.partition("@")
    return os.path.exists(os.path.join(RESULTS, name)) if not commit else _git_show(commit, name) is not None
NUMBER = re.compile(r"(?<![\w.\-/^])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w/])")


def documents():
    paths = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "integrators", "models", "README.md")]
    paths += sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    return [p for p in paths if os.path.exists(p)]


def tables(text):
    """(preceding paragraph, [body rows as lists of cells], first line number) for every Markdown table."""
    lines = [line.strip() for line in text.splitlines()]
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|\s*$", lines[i + 1]):
            start = i
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            k = start - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            para = []
            while k >= 0 and lines[k].strip() and not lines[k].startswith("|"):
                para.insert(0, lines[k])
                k -= 1
            rows = [[c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]] for row in lines[start + 2:j]]
            found.append(("\n".join(para), rows, start + 1))
            i = j
        else:
            i += 1
    return found


def shown_numbers(cell):
    """The numbers a cell shows, with their decimals: [(value, decimals, text)]."""
    cell = re.sub(r"`[^`]*`", " ", cell)
    cell = re.sub(r"\]\([^)]*\)", "]", cell)
    cell = cell.replace("\u2212", "-").replace("\u2013", " ").replace("\u00d7", " ").replace("*", "")
    out = []
    for m in NUMBER.finditer(cell):
        text = m.group(0)
        mantissa = re.split(r"[eE]", text)[0]
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        if re.search(r"[eE]", text):
            exponent = int(re.split(r"[eE]", text)[1])
            decimals = decimals - exponent
        out.append((float(text.replace(",", "")), decimals, text))
    return out


def _numbers(obj, acc):
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, (int, float)):
        if math.isfinite(obj):
            acc.append(float(obj))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            try:
                number = float(key)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                acc.append(number)
            _numbers(value, acc)
    elif isinstance(obj, list):
        for value in obj:
            _numbers(value, acc)


_cache = {}


def stored_numbers(name, run=None):
    """The numbers stored in a results file, sorted; with ``run``, only those of that entry of its ``runs`` list."""
    if (name, run) not in _cache:
        data = load_results(name)
        if run is not None:
            data = [r for r in data["runs"] if r.get("run") == run]
        acc = []
        _numbers(data, acc)
        _cache[(name, run)] = sorted(acc)
    return _cache[(name, run)]


def run_names(name):
    """Names of the runs gathered in a results file (files with a ``runs`` list of ``{"run": ...}`` entries)."""
    runs = load_results(name).get("runs")
    return {r["run"] for r in runs if isinstance(r, dict) and "run" in r} if isinstance(runs, list) else set()


def appears(value, decimals, numbers):
    tolerance = 0.5 * 10.0 ** (-decimals) * (1 + 1e-9) + 1e-12
    for scale in SCALES:
        lo = bisect.bisect_left(numbers, (value - tolerance) / scale)
        hi = bisect.bisect_right(numbers, (value + tolerance) / scale)
        if hi > lo:
            return True
    return False


def check_document(text, name="document", results_exist=None):
    """Problems (strings) with the tables of one Markdown text; [] when every figure is found."""
    results_exist = results_exist or cited_exists
    problems = []
    with_history = history_available()
    for para, rows, line in tables(text):
        cited = citations(para)
        if not cited and "<!-- not measured -->" not in para:
            if any(citations(" ".join(r)) for r in rows):
                cited = []
            else:
                problems.append(f"{name}:{line}: table cites no results file and is not marked <!-- not measured -->")
                continue
        if "<!-- not measured -->" in para and not cited:
            continue
        for row in rows:
            files = citations(" ".join(row)) or cited
            if not files:
                problems.append(f"{name}:{line}: row '{row[0]}' cites no results file")
                continue
            if not with_history and any("@" in f for f in files):
                continue  # quoted at a commit this checkout does not hold
            missing = [f for f in files if not results_exist(f)]
            if missing:
                problems.append(f"{name}:{line}: cites missing results file(s) {missing}")
                continue
            spans = set(re.findall(r"`([^`]+)`", " ".join(row)))
            numbers = []
            for f in files:
                named = sorted(spans & run_names(f))
                for run in named or [None]:
                    numbers += stored_numbers(f, run)
            numbers.sort()
            for cell in row:
                for value, decimals, text_ in shown_numbers(cell):
                    if not appears(value, decimals, numbers):
                        problems.append(f"{name}:{line}: '{text_}' (row '{row[0][:40]}') is not in {files}")
    return problems


@pytest.mark.parametrize("path", documents(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_table_figure_is_in_its_results_file(path):
    text = open(path, encoding="utf-8").read()
    problems = check_document(text, os.path.relpath(path, ROOT))
    assert not problems, "\n".join(problems)


def test_the_checks_cover_the_headline_tables():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    benchmarks = open(os.path.join(ROOT, "docs", "benchmarks.md"), encoding="utf-8").read()
    assert any(CITATION.search(" ".join(" ".join(r) for r in rows)) for _, rows, _ in tables(readme))
    cited_tables = [t for t in tables(benchmarks) if CITATION.search(t[0]) or
                    any(CITATION.search(" ".join(r)) for r in t[1])]
    assert len(cited_tables) >= 8 and len(cited_tables) == len(tables(benchmarks))


def test_a_wrong_figure_fails(tmp_path):
    name = "flashmd_cg_speed_gpu.json"
    numbers = stored_numbers(name)
    ratio = next(v for v in numbers if 23.9 < v < 24.1)  # chignolin-cg-40fs-stiff, one run
    right = f"Speed (`results/{name}`):\n\n| model | ratio |\n|---|---|\n| stiff | {ratio:.2f}× |\n"
    assert check_document(right) == []
    wrong = right.replace(f"{ratio:.2f}", f"{ratio + 1:.2f}")
    assert any("is not in" in p for p in check_document(wrong))
    too_precise = right.replace(f"{ratio:.2f}", f"{ratio + 0.004:.3f}")
    assert any("is not in" in p for p in check_document(too_precise))
    as_percent = f"Fallbacks (`results/{name}`):\n\n| run | fallbacks |\n|---|---|\n| s11 | 0.9 % |\n"
    assert check_document(as_percent) == []
    other_run = f"Speed (`results/{name}`):\n\n| run | ratio |\n|---|---|\n| `flashmd_cg_speed_gpu_s9_e` | {ratio:.2f} |\n"
    assert any("is not in" in p for p in check_document(other_run))
    assert check_document(other_run.replace("s9_e", "s11")) == []
    uncited = "Speed:\n\n| model | ratio |\n|---|---|\n| stiff | 24.0× |\n"
    assert any("cites no results file" in p for p in check_document(uncited))
    missing = right.replace(name, "no_such_result.json")
    assert any("missing" in p for p in check_document(missing))


def test_a_file_quoted_at_a_commit_is_read_from_git():
    """`results/NAME.json` at commit `HASH` checks the figures against that commit's file, not the current one."""
    if not history_available():
        pytest.skip("no git history in this checkout")
    name, commit = "flashmd_water_modes_gpu.json", "5b8b5ff"
    earlier = json.loads(_git_show(commit, name))["npt"]["density_flashmd"]
    assert not os.path.exists(os.path.join(RESULTS, name)) or not appears(
        round(earlier, 4), 4, stored_numbers(name)), "pick a figure that only the earlier file holds"
    pinned = f"Density (`results/{name}` at commit `{commit}`):\n\n| run | g/cm3 |\n|---|---|\n| a | {earlier:.4f} |\n"
    assert citations(pinned) == [f"{name}@{commit}"]
    assert check_document(pinned) == []
    assert any("is not in" in p for p in check_document(pinned.replace(f"{earlier:.4f}", f"{earlier + 0.01:.4f}")))
    current = pinned.replace(f" at commit `{commit}`", "")
    assert any("is not in" in p for p in check_document(current))
    unknown = pinned.replace(commit, "0000000")
    assert any("missing" in p for p in check_document(unknown))


def test_number_parsing():
    values = [(v, d) for v, d, _ in shown_numbers("1,847 (5.81×), −0.025 ± 0.055, 7.5e-4, `chignolin-cg-40fs`, W4A8")]
    assert values == [(1847.0, 0), (5.81, 2), (-0.025, 3), (0.055, 3), (7.5e-4, 5)]


def results_files():
    return sorted(os.listdir(RESULTS))


def test_results_are_few():
    assert len(results_files()) <= MAX_RESULTS_FILES, results_files()


# Results files written before every provenance key was recorded, waiting for a GPU re-run (docs/benchmarks.md names
# the command of each). Every other file records all of PROVENANCE_KEYS; a file leaves this list when it is re-run.
AWAITING_RERUN = {
    "cg_3a4r_validation_10.2ns.json": "needs the all-atom reference data the validation compares with",
    "cg_chignolin_validation_10.2ns.json": "needs the all-atom reference data the validation compares with",
    "flashmd_cg_speed_gpu.json": "GPU re-run of the shipped CG models (gpu_reruns.sh cgspeed)",
    "flashmd_cg_validation_gpu.json": "GPU re-run of the shipped CG models (gpu_reruns.sh cgvalidate)",
    "flashmd_water_gpu.json": "GPU re-run (gpu_reruns.sh water)",
    "gaq.json": "GPU re-run (gpu_reruns.sh gaq, which makes the water training pairs)",
    "gaq_long.json": "GPU re-run (gpu_reruns.sh gaqlong, on the quantized models of gaq)",
}


def not_recorded(data):
    """Provenance keys some run of a results file did not record."""
    return sorted({k for _, record in provenance_records(data) for k in PROVENANCE_KEYS if record.get(k) is None})


@pytest.mark.parametrize("name", [f for f in results_files() if f.endswith(".json")])
def test_results_record_every_provenance_key(name):
    with open(os.path.join(RESULTS, name), encoding="utf-8") as f:
        missing = not_recorded(json.load(f))
    if name in AWAITING_RERUN:
        assert missing, f"{name} now records every provenance key: take it off AWAITING_RERUN"
    else:
        assert not missing, f"{name}: no {missing} recorded (re-run it with benchprovenance.provenance())"


def test_awaiting_rerun_names_files_that_exist():
    assert set(AWAITING_RERUN) <= set(results_files()), sorted(set(AWAITING_RERUN) - set(results_files()))


@pytest.mark.parametrize("name", [f for f in results_files() if f.endswith(".json")])
def test_results_carry_provenance(name):
    with open(os.path.join(RESULTS, name), encoding="utf-8") as f:
        data = json.load(f)
    provenance = data.get("provenance")
    assert isinstance(provenance, dict), f"{name} has no provenance object"
    missing = [k for k in PROVENANCE_KEYS if k not in provenance]
    assert not missing, f"{name}: provenance lacks {missing}"
    unexplained = [k for k in PROVENANCE_KEYS if provenance[k] is None and k not in provenance.get("notRecorded", [])]
    assert not unexplained, f"{name}: {unexplained} are null but not listed in provenance.notRecorded"
    assert provenance["commit"], f"{name}: no commit"
    problems = [p for where, record in provenance_records(data) for p in gpu_record_problems(record, f"{name}{where}")]
    assert not problems, "\n".join(problems)


def provenance_records(data, where=""):
    """(path, provenance object) for the file's provenance and every nested one (runs that carry their own)."""
    if isinstance(data, dict):
        if isinstance(data.get("provenance"), dict):
            yield where, data["provenance"]
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return
    for key, value in items:
        if key != "provenance":
            yield from provenance_records(value, f"{where}/{key}")


def gpu_record_problems(record, name):
    """A run known to be on CPU says gpu = driver = NO_GPU (recorded, not missing); NO_GPU goes with no GPU at all.

    Known to be on CPU: its platform is "CPU", or "cpu" is in the file's name or the run's key (``runs/cpu``,
    ``parityCpu``), or either field already says NO_GPU.
    """
    problems = []
    on_cpu = record.get("platform") == "CPU" or "cpu" in name.lower() or NO_GPU in (
        record.get("gpu"), record.get("driver"))
    if on_cpu:
        for key in ("gpu", "driver"):
            if record.get(key) != NO_GPU:
                problems.append(f"{name}: a CPU run must record {key} as {NO_GPU!r}, not {record.get(key)!r}")
            if key in (record.get("notRecorded") or []):
                problems.append(f"{name}: {key} of a CPU run is recorded, so it is not in notRecorded")
    return problems


def test_a_cpu_run_without_gpu_record_fails():
    cpu = {"gpu": NO_GPU, "driver": NO_GPU, "platform": "CPU", "notRecorded": []}
    assert gpu_record_problems(cpu, "x_cpu.json") == []
    assert gpu_record_problems({"gpu": "NVIDIA H100", "driver": "580.1", "notRecorded": []}, "x_gpu.json") == []
    null_gpu = {"gpu": None, "driver": None, "platform": "CPU", "notRecorded": ["gpu", "driver"]}
    assert len(gpu_record_problems(null_gpu, "x.json")) == 4
    assert len(gpu_record_problems({**null_gpu, "platform": None}, "x_cpu.json/runs/0")) == 4
    half = {"gpu": NO_GPU, "driver": None, "notRecorded": ["driver"]}
    assert len(gpu_record_problems(half, "x.json")) == 2
    assert len(gpu_record_problems({**null_gpu, "platform": "Linux"}, "demo.json/runs/cpu")) == 4
    assert gpu_record_problems({**null_gpu, "platform": "CUDA"}, "x.json/runs/0") == []  # GPU not recorded
    nested = {"provenance": cpu, "runs": [{"provenance": null_gpu}]}
    assert [w for w, _ in provenance_records(nested)] == ["", "/runs/0"]


def test_linked_pngs_exist_and_every_png_is_linked():
    text = "\n".join(open(p, encoding="utf-8").read() for p in documents())
    linked = set(re.findall(r"results/([A-Za-z0-9_.\-]+\.png)", text))
    pngs = {f for f in results_files() if f.endswith(".png")}
    assert linked <= pngs, sorted(linked - pngs)
    assert pngs <= linked, f"results PNGs no document links: {sorted(pngs - linked)}"


def test_benchmark_scripts_record_full_provenance(monkeypatch):
    """The helper benchmark scripts call gives every key the results files need, and says which it could not find."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "examples", "benchmarks"))
    from benchprovenance import provenance

    record = provenance(["examples/benchmarks/bench_cpu_threads.py", "--steps", "3"])
    assert all(k in record for k in PROVENANCE_KEYS)
    assert record["command"] == "python examples/benchmarks/bench_cpu_threads.py --steps 3"
    assert record["torch"] and record["date"]
    assert record["notRecorded"] == [k for k in PROVENANCE_KEYS if record[k] is None]


def test_a_cpu_run_records_no_gpu(monkeypatch):
    """Without CUDA the helper records gpu and driver as "none (CPU run)", which is not a missing field."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "examples", "benchmarks"))
    import torch
    from benchprovenance import NO_GPU as helper_no_gpu, provenance

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    record = provenance(["examples/benchmarks/bench_cpu_threads.py"])
    assert helper_no_gpu == NO_GPU
    assert record["gpu"] == record["driver"] == NO_GPU
    assert "gpu" not in record["notRecorded"] and "driver" not in record["notRecorded"]
    assert gpu_record_problems(record, "bench_cpu_threads.json") == []


def test_dirty_compares_the_tree_with_bench_commit(monkeypatch, tmp_path):
    """``dirty`` compares the tracked files with the commit recorded (BENCH_COMMIT where set), not with HEAD: a copy
    of a clean commit run under BENCH_COMMIT is clean even where its own HEAD is another commit."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "examples", "benchmarks"))
    import benchprovenance

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "code.py").write_text("a = 1\n")
    git("add", "code.py")
    git("commit", "-qm", "first")
    first = git("rev-parse", "HEAD")
    (tmp_path / "code.py").write_text("a = 2\n")
    git("commit", "-qam", "second")
    second = git("rev-parse", "HEAD")
    monkeypatch.setattr(benchprovenance, "HERE", str(tmp_path))
    monkeypatch.setenv("BENCH_COMMIT", first)  # the tree holds the second commit's code
    assert benchprovenance.provenance([])["dirty"] is True
    monkeypatch.setenv("BENCH_COMMIT", second)
    assert benchprovenance.provenance([])["dirty"] is False
    monkeypatch.setenv("BENCH_COMMIT", "0" * 40)  # a commit the copy does not hold: unknown, not clean
    assert benchprovenance.provenance([])["dirty"] is None
    monkeypatch.delenv("BENCH_COMMIT")
    (tmp_path / "code.py").write_text("a = 3\n")
    record = benchprovenance.provenance([])
    assert record["commit"] == second and record["dirty"] is True


def test_store_runs_gathers_reports_with_their_provenance(monkeypatch, tmp_path):
    """store_runs.py puts each call's report in the multi-run file under its run name, keeps the provenance of each,
    and refuses a report without one."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "examples", "benchmarks"))
    import store_runs
    from benchprovenance import provenance

    reports = {}
    for run, value in (("a", 1.5), ("b", 2.5)):
        record = provenance(["examples/benchmarks/bench_flashmd_cg.py", "--seed", run])
        reports[run] = tmp_path / f"{run}.json"
        reports[run].write_text(json.dumps({"value": value, "provenance": record}))
    out = tmp_path / "merged.json"
    assert store_runs.main([str(out), "two calls", f"a={reports['a']}", f"b={reports['b']}"]) == 0
    merged = json.loads(out.read_text())
    assert [r["run"] for r in merged["runs"]] == ["a", "b"]
    assert [r["result"]["value"] for r in merged["runs"]] == [1.5, 2.5]
    assert merged["runs"][1]["provenance"]["command"].endswith("--seed b")
    assert merged["provenance"]["command"] == [r["provenance"]["command"] for r in merged["runs"]]
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"value": 3}))
    with pytest.raises(SystemExit):
        store_runs.main([str(out), "two calls", f"c={bare}"])
    assert [r["run"] for r in json.loads(out.read_text())["runs"]] == ["a", "b"]


# Scripts that write JSON that is not a benchmark result, so need not call provenance() (say why for each).
PROVENANCE_EXEMPT = {
    # the helper itself: storeRun and storeSection write what their callers pass, with the callers' provenance()
    "examples/benchmarks/benchprovenance.py",
}


def _called(node):
    """The name a Call calls: ``f`` for f(...), ``attr`` for x.attr(...)."""
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def results_writer_problem(path):
    """Why the script ``path`` writes a JSON file without recording provenance, or None.

    It writes a JSON file when it calls ``json.dump`` with a file handle (``json.dumps``, printed, does not count),
    ``storeRun`` or ``storeSection``; it records provenance when it calls ``provenance(...)`` (benchprovenance.provenance) anywhere, or
    ``storeRun``, which requires the result's provenance.
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    dumps = [n for n in calls if isinstance(n.func, ast.Attribute) and n.func.attr == "dump"
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "json"
             and (len(n.args) >= 2 or any(k.arg == "fp" for k in n.keywords))]
    names = {_called(n) for n in calls}
    stores = [n for n in calls if _called(n) in ("storeRun", "storeSection")]
    if not dumps and not stores:
        return None
    if names & {"provenance", "storeRun"}:
        return None
    lines = ", ".join(str(n) for n in sorted(n.lineno for n in dumps + stores))
    return f"{os.path.relpath(path, ROOT)} writes JSON (at line {lines}) but never calls provenance()"


def test_every_results_writer_records_provenance():
    """Every benchmark or example script that writes a results JSON records its provenance itself
    (examples/benchmarks/benchprovenance.py): docs/benchmarks.md's standard, kept as scripts are added."""
    scripts = sorted(glob.glob(os.path.join(ROOT, "examples", "benchmarks", "*.py"))
                     + glob.glob(os.path.join(ROOT, "examples", "*.py")))
    assert len(scripts) > 20, scripts
    exempt = {os.path.join(ROOT, p) for p in PROVENANCE_EXEMPT}
    assert exempt <= set(scripts), f"stale PROVENANCE_EXEMPT entries: {sorted(exempt - set(scripts))}"
    problems = [p for p in map(results_writer_problem, sorted(set(scripts) - exempt)) if p]
    assert not problems, "\n".join(problems)


def test_a_results_writer_without_provenance_is_flagged(tmp_path):
    """The detector flags a script that dumps JSON to a file without provenance(), and only such a script."""
    writer = (
        "import json\n"
        "\n"
        "\n"
        "def main(out):\n"
        "    result = {'x': 1}\n"
        "{extra}"
        "    with open(out, 'w') as f:\n"
        "        json.dump(result, f, indent=1)\n")
    cases = {
        "bare.py": (writer.replace("{extra}", ""), True),
        "recorded.py": ("from benchprovenance import provenance\n"
                        + writer.replace("{extra}", "    result['provenance'] = provenance()\n"), False),
        "keyword.py": ("import json\njson.dump({}, fp=open('x.json', 'w'))\n", True),
        "printed.py": ("import json\nprint(json.dumps({'x': 1}))\n", False),
        "multirun.py": ("from benchprovenance import storeRun\nstoreRun('x.json', 'a', {}, 'd')\n", False),
        "section.py": ("from benchprovenance import storeSection\nstoreSection('x.json', 'a', {})\n", True),
        "section_recorded.py": ("from benchprovenance import provenance, storeSection\n"
                                "storeSection('x.json', 'a', {'provenance': provenance()})\n", False),
    }
    for name, (text, flagged) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        problem = results_writer_problem(str(path))
        assert (problem is not None) == flagged, (name, problem)
        if flagged:
            assert problem.endswith("never calls provenance()"), problem
