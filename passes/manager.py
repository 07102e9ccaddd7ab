"""The pass manager: parse a pipeline string, run its passes, verify after each.

    "quantize{weight-bits=8,cell-bits=2},tile{rows=128,cols=128},allocate{tiles=128}"

A pass is a frozen dataclass with a kebab-case `name`, its options as fields (written in
kebab-case in pipelines) and `apply(program) -> program`. Passes never mutate: they
return a rebuilt program.

The chip is set once, before any pass runs, and no pass changes it. Some options describe
the chip rather than the pass's work (quantize{cell-bits,encoding}, tile{rows,cols},
allocate{tiles}); their pass declares them with `target(hardware) -> hardware`, and
`target_chip` applies every pass's `target` in pipeline order. So the tile pass chooses
column groups for the tile budget allocate will have, and a pass that rewrote the chip
in `apply` would be reported as a bug.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from xbarc import progress
from xbarc.diagnostics import XbarcError
from xbarc.hardware import Hardware
from xbarc.ir.tile import Program
from xbarc.ir.verifier import verify
from xbarc.passes.allocate import Allocate
from xbarc.passes.basis import Basis
from xbarc.passes.nax import Nax
from xbarc.passes.quantize import Quantize
from xbarc.passes.tile import Tile


class ProgramPass(Protocol):
    name: ClassVar[str]

    def apply(self, program: Program) -> Program: ...


PASSES: dict[str, type] = {cls.name: cls for cls in (Quantize, Basis, Nax, Tile, Allocate)}

_PASS_PATTERN = re.compile(r"\s*([a-z][a-z0-9-]*)\s*(?:\{([^{}]*)\})?\s*(?:,|$)")


@dataclass(frozen=True, slots=True)
class Pipeline:
    passes: tuple[Any, ...]

    def __str__(self) -> str:
        return ",".join(pass_spec(p) for p in self.passes)


def parse_pipeline(text: str) -> Pipeline:
    """Parse `name{opt=value,...},name,...` into pass objects, checking every option."""
    passes = []
    position = 0
    text = text.strip()
    if not text:
        raise XbarcError("the pipeline is empty", hint=f"known passes: {', '.join(PASSES)}")
    while position < len(text):
        match = _PASS_PATTERN.match(text, position)
        if match is None or match.end() == position:
            raise XbarcError(
                f"cannot read the pipeline at column {position + 1}: {text[position:]!r}",
                hint="write passes as name{option=value,...} separated by commas",
            )
        passes.append(make_pass(match.group(1), match.group(2) or ""))
        position = match.end()
    return Pipeline(tuple(passes))


def make_pass(name: str, options_text: str) -> Any:
    cls = PASSES.get(name)
    if cls is None:
        raise XbarcError(f"unknown pass {name!r}", hint=f"known passes: {', '.join(PASSES)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in options_text.split(","))):
        key, equals, value = item.partition("=")
        field_name = key.strip().replace("-", "_")
        if not equals or field_name not in fields:
            known = ", ".join(f.replace("_", "-") for f in fields)
            raise XbarcError(f"pass {name} has no option {key.strip()!r}", hint=f"options: {known}")
        options[field_name] = convert_option(name, key.strip(), value.strip(), hints[field_name])
    return cls(**options)


def convert_option(pass_name: str, key: str, value: str, annotation: Any) -> Any:
    kinds = (
        typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    )
    for kind in kinds:
        if kind is type(None):
            continue
        try:
            if kind is bool:
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return kind(value)
        except ValueError:
            continue
    expected = " or ".join(k.__name__ for k in kinds if k is not type(None))
    raise XbarcError(f"option {key} of pass {pass_name} must be {expected}, got {value!r}")


def pass_spec(pass_object: Any) -> str:
    """The pipeline text of one configured pass, listing the options that are set."""
    options = [
        f"{f.name.replace('_', '-')}={getattr(pass_object, f.name)}"
        for f in dataclasses.fields(pass_object)
        if getattr(pass_object, f.name) != f.default
    ]
    return pass_object.name + (f"{{{','.join(options)}}}" if options else "")


def target_chip(hardware: Hardware, passes: Sequence[Any]) -> Hardware:
    """The chip a pipeline targets: `hardware` with the chip options of its passes."""
    for pass_object in passes:
        target = getattr(pass_object, "target", None)
        if target is not None:
            hardware = target(hardware)
    return hardware


def run_pipeline(
    program: Program,
    pipeline: Pipeline | Sequence[Any],
    after_pass: Callable[[Any, Program], None] | None = None,
) -> Program:
    """Run every pass, verifying the program after each; `after_pass` sees each result."""
    passes = pipeline.passes if isinstance(pipeline, Pipeline) else tuple(pipeline)
    program = dataclasses.replace(program, hardware=target_chip(program.hardware, passes))
    ran: list[str] = []
    verified: Program | None = None
    with progress.task("passes", total=len(passes), unit="pass", estimate=False) as task:
        for pass_object in passes:
            task.describe(pass_object.name)
            program = run_pass(pass_object, program, verified, ran)
            verified = program
            ran.append(pass_spec(pass_object))
            task.update()
            if after_pass is not None:
                after_pass(pass_object, program)
    return program


def run_pass(
    pass_object: Any, program: Program, verified: Program | None, ran: list[str]
) -> Program:
    """`pass_object` applied to `program`, verified (`verified`: the program the last
    pass left, already checked; `ran`: the passes before, for the message of a bug)."""
    chip = program.hardware
    program = pass_object.apply(program)
    try:
        if program.hardware != chip:
            raise XbarcError("it changed the chip, which is set once before any pass runs")
        verify(program, verified=verified)
    except XbarcError as error:
        before = ", ".join(ran) or "none"
        raise XbarcError(
            f"internal error: pass {pass_object.name} produced an invalid program: "
            f"{error.message} (passes run before it: {before})",
            hint="please report this with the model",
        ) from None
    return program
