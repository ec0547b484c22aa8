"""What a search leaves behind: the trials table (CSV), the best config (YAML), plots (PNG)."""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import optuna

from detseg.core.atomic_files import write_file_atomic, write_text_atomic
from detseg.training.search_space import SearchSpace


@dataclass(frozen=True)
class TrialRow:
    """One trial as the table shows it; `value` is None unless the trial completed."""

    study: str
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    cpu_s: float | None
    wall_s: float | None
    run_dir: str
    note: str = ""


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    """Every trial of `study`, best first (see `trial_rows_sorted`)."""
    rows = [TrialRow(study.study_name, t.number, t.state.name, t.value, dict(t.params),
                     t.user_attrs.get("cpu_s"), t.user_attrs.get("wall_s"), t.user_attrs.get("run_dir", ""),
                     t.user_attrs.get("note", ""))
            for t in study.get_trials(deepcopy=False)]
    return trial_rows_sorted(rows, study.direction.name.lower())


def trial_rows_sorted(rows: Sequence[TrialRow], direction: str) -> list[TrialRow]:
    """Completed trials best first (`direction`: maximize | minimize), then pruned, failed, running."""
    order = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2, "RUNNING": 3, "WAITING": 4}
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(rows, key=lambda r: (order.get(r.state, 5), 0.0 if r.value is None else sign * r.value,
                                       r.study, r.number))


def format_table(rows: Sequence[TrialRow], metric: str, keys: Sequence[str]) -> str:
    """A fixed-width text table of `rows` (the columns of the CSV, values rounded)."""
    header = ["study", "trial", "state", metric, *keys, "cpu_s", "wall_s"]
    lines = [header] + [[r.study, str(r.number), r.state, _text(r.value), *(_text(r.params.get(k)) for k in keys),
                         _text(r.cpu_s), _text(r.wall_s)] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def write_trials_csv(path: Path, rows: Sequence[TrialRow], metric: str, keys: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["study", "trial", "state", metric, *keys, "cpu_s", "wall_s", "run_dir", "note"])
    for r in rows:
        writer.writerow([r.study, r.number, r.state, "" if r.value is None else r.value,
                         *("" if r.params.get(k) is None else r.params[k] for k in keys),
                         "" if r.cpu_s is None else r.cpu_s, "" if r.wall_s is None else r.wall_s,
                         r.run_dir, r.note])
    write_text_atomic(buffer.getvalue(), path)


def plot_metric_against_params(folder: Path, rows: Sequence[TrialRow], metric: str,
                               space: SearchSpace) -> list[Path]:
    """One PNG per searched key: the metric of completed trials against the key's value
    (log x axis for `log_uniform` keys, categories for `choice`). Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.state == "COMPLETE" and r.value is not None and math.isfinite(r.value)]
    paths = []
    for d in space.distributions:
        points = [(r.params[d.key], r.value) for r in done if d.key in r.params]
        figure, axis = plt.subplots(figsize=(5, 3.5), dpi=100)
        if d.kind == "choice":
            labels = [str(c) for c in d.choices]
            axis.scatter([labels.index(str(x)) for x, _ in points], [y for _, y in points])
            axis.set_xticks(range(len(labels)), labels)
        else:
            axis.scatter([x for x, _ in points], [y for _, y in points])
            if d.is_log:
                axis.set_xscale("log")
        axis.set_xlabel(d.key + (" (log scale)" if d.is_log else ""))
        axis.set_ylabel(metric)
        axis.set_title(f"{metric} against {d.key} ({len(points)} trials)")
        axis.grid(True, alpha=0.3)
        figure.tight_layout()
        path = folder / f"{metric}_vs_{_file_part(d.key)}.png"
        write_file_atomic(path, lambda temporary: figure.savefig(temporary, format="png"))
        plt.close(figure)
        paths.append(path)
    return paths


def _file_part(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
