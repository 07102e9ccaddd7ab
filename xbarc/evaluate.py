"""`xbarc eval`: run a compiled program and its float model side by side on a data set.

Per output: the largest absolute error, the relative error (largest absolute error over
the reference's largest magnitude), the signal-to-noise ratio in dB, top-1 agreement of
the last axis with the reference, and, given labels, the accuracy of both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from xbarc.diagnostics import XbarcError


@dataclass
class OutputStats:
    """Running sums for one output; `finish` turns them into the reported figures."""

    name: str
    max_abs_error: float = 0.0
    max_reference: float = 0.0
    signal: float = 0.0
    noise: float = 0.0
    agree: int = 0
    compared: int = 0

    def add(self, got: np.ndarray, want: np.ndarray) -> None:
        difference = got.astype(np.float64) - want.astype(np.float64)
        self.max_abs_error = max(self.max_abs_error, float(np.abs(difference).max(initial=0)))
        self.max_reference = max(self.max_reference, float(np.abs(want).max(initial=0)))
        self.signal += float(np.square(want, dtype=np.float64).sum())
        self.noise += float(np.square(difference).sum())
        if got.ndim >= 2 and got.shape[-1] >= 2:
            self.agree += int((got.argmax(-1) == want.argmax(-1)).sum())
            self.compared += int(np.prod(got.shape[:-1]))

    def finish(self) -> dict:
        if self.noise == 0:
            snr = math.inf
        elif self.signal == 0:
            snr = -math.inf
        else:
            snr = 10 * math.log10(self.signal / self.noise)
        relative = self.max_abs_error / self.max_reference if self.max_reference else 0.0
        return {
            "output": self.name,
            "max_abs_error": self.max_abs_error,
            "relative_error": relative,
            "snr_db": snr,
            "top1_agreement": self.agree / self.compared if self.compared else None,
        }


@dataclass
class EvalReport:
    program: str
    reference: str
    noise: str
    samples: int
    batch_size: int
    outputs: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # the noise profile's effective fields
    seeds: dict = field(default_factory=dict)  # chip, time and read
    accuracy: float | None = None
    reference_accuracy: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def load_data(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an .npz file, refusing pickled objects."""
    if not path.exists():
        raise XbarcError(f"data file {path} does not exist")
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except ValueError as error:
        if "pickle" in str(error):
            raise XbarcError("the data file holds pickled objects", where=path) from None
        raise XbarcError(f"not a readable .npz file ({error})", where=path) from None
    except Exception as error:  # zipfile.BadZipFile, OSError, EOFError
        raise XbarcError(f"not a readable .npz file ({error})", where=path) from None


def batches(
    data: Mapping[str, np.ndarray], input_names: list[str], batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    samples = len(next(iter(data[n] for n in input_names)))
    for start in range(0, samples, batch_size):
        yield {name: data[name][start : start + batch_size] for name in input_names}


def model_inputs(data: Mapping[str, np.ndarray], input_names: list[str], where: Path) -> None:
    missing = [name for name in input_names if name not in data]
    if missing:
        raise XbarcError(
            f"the data has no array named {missing[0]!r}",
            where=where,
            hint=f"its arrays are {', '.join(data) or '(none)'}; name them after the "
            f"program's inputs ({', '.join(input_names)})",
        )
    counts = {len(data[name]) for name in input_names}
    if len(counts) != 1:
        raise XbarcError("the input arrays hold different numbers of samples", where=where)


def evaluate(
    program_path: Path,
    reference_path: Path,
    data_path: Path,
    noise: str = "ideal",
    seed: int = 0,
    overrides: Sequence[str] = (),
    labels_key: str | None = None,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalReport:
    import onnxruntime

    from xbarc.frontend.load import load_model
    from xbarc.session import InferenceSession

    session = InferenceSession(program_path, noise=noise, seed=seed, overrides=overrides)
    load_model(reference_path)  # the same checks and messages as compile
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings would garble our report
    reference = onnxruntime.InferenceSession(
        str(reference_path), options, providers=["CPUExecutionProvider"]
    )
    data = load_data(data_path)
    input_names = [i.name for i in session.get_inputs()]
    model_inputs(data, input_names, data_path)
    declared_batch = session.get_inputs()[0].shape
    if batch_size is not None:
        size = batch_size
    else:
        size = declared_batch[0] if declared_batch and declared_batch[0] else 1
    if size < 1:
        raise XbarcError(f"--batch-size must be at least 1, got {size}")
    labels = None
    if labels_key is not None:
        if labels_key not in data:
            raise XbarcError(f"the data has no array named {labels_key!r}", where=data_path)
        labels = data[labels_key]
    outputs = [o.name for o in session.get_outputs()]
    stats = {name: OutputStats(name) for name in outputs}
    correct = reference_correct = samples = 0
    for batch in batches(data, input_names, size):
        got = session.run(outputs, batch)
        want = reference.run(outputs, batch)
        for name, mine, theirs in zip(outputs, got, want, strict=True):
            stats[name].add(mine, theirs)
        count = len(next(iter(batch.values())))
        if labels is not None:
            truth = labels[samples : samples + count]
            correct += int((got[0].reshape(count, -1).argmax(-1) == truth).sum())
            reference_correct += int((want[0].reshape(count, -1).argmax(-1) == truth).sum())
        samples += count
        if progress is not None:
            progress(count)
    report = EvalReport(
        str(program_path),
        str(reference_path),
        session.settings.profile,
        samples,
        size,
        [s.finish() for s in stats.values()],
        settings=asdict(session.settings),
        seeds=asdict(session.seeds),
    )
    if labels is not None and samples:
        report.accuracy = correct / samples
        report.reference_accuracy = reference_correct / samples
    return report


def settings_lines(settings: dict, seeds: dict) -> list[str]:
    """The effective noise settings and seeds, wrapped for a terminal."""
    from xbarc.runtime.noise import format_value

    items = [f"{key}={format_value(value)}" for key, value in settings.items() if key != "profile"]
    items += [f"{key}_seed={value}" for key, value in seeds.items()]
    lines, line = [], "  settings:"
    for item in items:
        if len(line) + len(item) + 1 > 96:
            lines.append(line)
            line = "   "
        line += " " + item
    return [*lines, line]


def format_eval(report: EvalReport) -> str:
    lines = [
        f"{report.program} against {report.reference}: {report.samples} samples in batches "
        f"of {report.batch_size}, noise profile {report.noise}",
        *settings_lines(report.settings, report.seeds),
        f"{'output':<32} {'max abs error':>14} {'relative':>10} {'SNR dB':>8} {'top-1 agree':>12}",
    ]
    for row in report.outputs:
        agreement = "-" if row["top1_agreement"] is None else f"{row['top1_agreement']:.2%}"
        lines.append(
            f"{row['output'][:32]:<32} {row['max_abs_error']:>14.4g} "
            f"{row['relative_error']:>10.3g} {row['snr_db']:>8.1f} {agreement:>12}"
        )
    if report.accuracy is not None:
        lines.append(f"accuracy {report.accuracy:.2%} (reference {report.reference_accuracy:.2%})")
    return "\n".join(lines)
