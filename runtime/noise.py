"""Noise profiles: which non-idealities a run simulates, with what numbers and seeds.

    settings = load_profile("rram", overrides=["adc_bits=6", "p_sa0=0.01"])

A profile is a TOML file of `NoiseSettings` fields. Four ship with xbarc (`ideal`,
`quant`, `rram`, `pcm`, in `runtime/profiles/`); a user's file is named by its path and
may start from a shipped one with `base = "rram"`, or from another file (a relative path
is found beside the profile that names it), at most 32 deep. Profile files are
read as regular UTF-8 files of at most limits.MAX_PROFILE_BYTES, flat enough for tomllib
to parse in bounded time and recursion. Overrides (`--set field=value` on the
command line) come last. Every field is checked when the profile is read: an unknown
field, a wrong type or a value out of range is a one-line error naming the field and
where it was set.

Random draws come from three seeds (DESIGN.md section 5): `chip` (programming noise and
faults, drawn again at every re-programming of a tile), `time` (drift) and `read` (input,
read and output noise, per MVM). `Seeds.derive(s)` makes the three from one number.
Read noise is keyed by (read seed, the batch's number in the data set, the read-out's
number in the batch) (`Executor.start_batch`): batch k draws the same noise whatever ran
before it, in this process or on a Dask worker, so an eval split over workers gives the
bits of one process. (Before, the key counted read-outs over the executor's life, and a
batch's noise depended on the batches before it: noisy outputs changed once, for that.)
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from xbarc.diagnostics import XbarcError
from xbarc.files import TomlKind, check_toml_structure, read_toml_chain
from xbarc.limits import MAX_PROFILE_BYTES

PROFILE_DIR = Path(__file__).parent / "profiles"
SHIPPED = ("ideal", "quant", "rram", "pcm")

PROGRAMMING_MODELS = ("none", "relative", "rram", "pcm")
DRIFT_MODELS = ("none", "constant", "pcm")
READ_MODELS = ("none", "additive", "pcm")
ADC_RANGES = ("fixed", "calibrated", "dynamic")
ADC_PLACEMENTS = ("polarity", "differential")


@dataclass(frozen=True, slots=True)
class NoiseSettings:
    """What a run simulates. Conductances are in microsiemens, times in seconds; the
    conductance range (g_min, g_max) is the program's hardware."""

    profile: str = "ideal"
    # quantization: weights, DAC and ADC exactly as compiled (ideal: none of them)
    quantized: bool = False
    dac_bits: int | None = None  # None: the program's hardware
    adc_bits: int | str | None = None  # None: the program's hardware; "exact": lossless
    # converter ranges: the DAC's full scale per layer input, the ADC's per read
    input_range: str | float = (
        "dynamic"  # dynamic (oracle: the batch's max |x|) | calibrated | a number
    )
    adc_range: str | None = None  # None: the program's hardware | fixed | calibrated | dynamic
    # polarity: each column of a differential pair converted apart; differential: the pair's
    # currents subtracted first, one signed conversion (2^(bits-1) - 1 levels a side)
    adc_placement: str = "polarity"
    # programming (chip seed): Gaussian, sigma(G) per model, times programming_scale
    programming: str = "none"  # none | relative (sigma = programming_relative * G) | rram | pcm
    programming_scale: float = 1.0
    programming_relative: float = 0.0
    # faults (chip seed): stuck at g_min (SA0) or at g_max (SA1)
    p_sa0: float = 0.0
    p_sa1: float = 0.0
    # device-to-device spread of each cell's g_max (chip seed), relative sigma
    g_max_spread: float = 0.0
    # drift (time seed): G(t) = G_p ((t + t0) / t0)^-nu
    drift: str = "none"  # none | constant (nu ~ |N(drift_nu, drift_nu_std)|) | pcm
    drift_nu: float = 0.0
    drift_nu_std: float = 0.0
    t_inference: float = 0.0  # seconds after programming
    t0: float = 20.0
    drift_compensation: bool = False  # global: each tile's read rescaled by a reference read
    # IR drop (first order, per tile): ohms of each wire segment between neighbouring cells
    wire_resistance: float = 0.0
    # per MVM (read seed)
    input_noise: float = 0.0  # sigma of the DAC output, relative to its full scale
    read_noise: str = "none"  # none | additive (sigma |x|_2) | pcm (sigma sqrt(sum |W| x^2))
    read_sigma: float = 0.0
    output_noise: float = 0.0  # sigma relative to one cell at g_max driven at full scale

    @property
    def cells_noisy(self) -> bool:
        """Whether programmed conductances differ from their targets."""
        return (
            self.programming != "none"
            or self.p_sa0 > 0
            or self.p_sa1 > 0
            or self.g_max_spread > 0
            or (self.drift != "none" and self.t_inference > 0)
            or self.wire_resistance > 0
        )

    @property
    def reads_noisy(self) -> bool:
        return self.input_noise > 0 or self.read_noise != "none" or self.output_noise > 0

    def resolved(self, hardware) -> NoiseSettings:
        """These settings with the fields left to the program's hardware filled in from
        it (`hardware`: an `xbarc.hardware.Hardware`): what a run actually uses."""
        return dataclasses.replace(
            self,
            dac_bits=self.dac_bits or hardware.dac.bits,
            adc_bits=hardware.adc.bits if self.adc_bits is None else self.adc_bits,
            adc_range=self.adc_range or hardware.adc.range,
        )


@dataclass(frozen=True, slots=True)
class Seeds:
    """The three seeds of a noisy run."""

    chip: int = 0
    time: int = 0
    read: int = 0

    @classmethod
    def derive(cls, seed: int) -> Seeds:
        """Three independent seeds from one (numpy's SeedSequence spawning)."""
        check_seed(seed)
        children = np.random.SeedSequence(seed).spawn(3)
        chip, time, read = (int(child.generate_state(1, np.uint64)[0]) for child in children)
        return cls(chip, time, read)

    def rng(self, stream: str, *key: int) -> np.random.Generator:
        """A generator for `stream` ("chip", "time", "read"), keyed further by `key` (e.g. a
        tile and its programming count), the same bits in any process."""
        return np.random.Generator(np.random.PCG64([getattr(self, stream), *key]))


MAX_SEED = 2**64 - 1  # seeds are unsigned 64-bit numbers, as the derived ones are


def check_seed(seed: int, option: str = "--seed") -> int:
    """`seed` if it is a whole number from 0 to MAX_SEED, else an error naming `option`."""
    whole = isinstance(seed, int | np.integer) and not isinstance(seed, bool)
    if not whole or not 0 <= seed <= MAX_SEED:
        raise XbarcError(
            f"{option} {seed} is not a seed", hint=f"give a whole number from 0 to {MAX_SEED}"
        )
    return int(seed)


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "(hardware)"
    return repr(value)


def load_profile(name: str | os.PathLike, overrides: Sequence[str] = ()) -> NoiseSettings:
    """The settings of a shipped profile (by name) or a user's TOML file (by path), with
    `field=value` overrides applied last."""
    values, where = read_profile(name)
    for text in overrides:
        key, value = parse_override(text)
        values[key] = (value, f"--set {text}")
    return build_settings(values, where)


# a profile is a flat table of at most two dozen fields, so a few dozen '.', '[' and '{' is
# plenty; hundreds of thousands (a 1 MB file of them) would cost tomllib quadratic time and
# memory (dotted keys) or its recursion
PROFILE_FILES = TomlKind(
    name="noise profile",
    missing="no such noise profile file",
    family="profile",
    max_bytes=MAX_PROFILE_BYTES,
    max_structure=1000,
    shape="a flat list of `field = value` lines",
    start_hint="start the profile from a shipped one or copy the fields it needs",
    shipped_folder=PROFILE_DIR,
    shipped=SHIPPED,
    unknown="unknown noise profile",
    shipped_hint=f"use one of {', '.join(SHIPPED)}, or the path of a .toml file",
)


def read_profile(name: str | os.PathLike) -> tuple[dict, str]:
    """Field values of a profile with where each was set, following `base = ...` (a
    relative base is found beside the profile that names it)."""
    values: dict = {}
    chain = read_toml_chain(name, PROFILE_FILES)
    for table, path in chain:
        for key, value in table.items():
            values[key] = (value, str(path))
    table, path = chain[-1]
    if "profile" not in table:
        values["profile"] = (path.stem, str(path))
    return values, str(path)


def parse_override(text: str) -> tuple[str, object]:
    """`field=value`, the value read as TOML (a bare word is a string)."""
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise XbarcError(
            f"--set {text!r}: holds a control character (a newline?)",
            hint="give one field=value per --set",
        )
    key, equals, raw = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise XbarcError(f"--set {text!r}: expected field=value", hint="e.g. --set adc_bits=6")
    raw = raw.strip()
    check_toml_structure(raw, f"--set {text}", PROFILE_FILES)
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: programming=pcm
    except RecursionError:
        raise XbarcError(f"--set {text!r}: the value is nested too deeply") from None
    return key, value


def build_settings(values: dict, where: str) -> NoiseSettings:
    """NoiseSettings from {field: (value, where it was set)}, every field checked."""
    known = {f.name: f for f in fields(NoiseSettings)}
    checked = {}
    for key, (value, origin) in values.items():
        if key not in known:
            raise XbarcError(
                f"unknown noise field {key!r}",
                where=origin,
                hint=f"the fields are {', '.join(known)}",
            )
        checked[key] = check_field(key, value, origin)
    settings = NoiseSettings(**checked)
    if settings.p_sa0 + settings.p_sa1 > 1:
        raise XbarcError("p_sa0 + p_sa1 is above 1", where=where)
    return settings


def check_field(key: str, value, origin: str):
    """`value` for field `key`, or a one-line error naming the field."""

    given = value

    def fail(message: str):
        return XbarcError(f"{key} = {given!r}: {message}", where=origin)

    if key == "profile":
        if not isinstance(value, str):
            raise fail("expected a name")
        return value
    if key in ("quantized", "drift_compensation"):
        if not isinstance(value, bool):
            raise fail("expected true or false")
        return value
    if key == "input_range":
        if value in ("dynamic", "calibrated"):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise fail('expected "dynamic", "calibrated" or a full scale above 0')
        if not np.isfinite(value):
            raise fail("expected a finite full scale")
        if not 1e-30 <= value <= 1e30:  # the DAC's step is a float32
            raise fail("expected a full scale from 1e-30 to 1e30")
        return float(value)
    if key == "adc_placement":
        if value not in ADC_PLACEMENTS:
            raise fail(f"expected one of {', '.join(ADC_PLACEMENTS)}")
        return value
    if key == "adc_range":
        if value not in ADC_RANGES:
            raise fail(f"expected one of {', '.join(ADC_RANGES)}")
        return value
    if key in ("programming", "drift", "read_noise"):
        choices = {
            "programming": PROGRAMMING_MODELS,
            "drift": DRIFT_MODELS,
            "read_noise": READ_MODELS,
        }[key]
        if value not in choices:
            raise fail(f"expected one of {', '.join(choices)}")
        return value
    if key == "dac_bits":
        if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 24:
            raise fail("expected whole DAC bits from 2 to 24")
        return value
    if key == "adc_bits":
        if value == "exact":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 24:
            raise fail('expected whole ADC bits from 1 to 24, or "exact" for a lossless ADC')
        return value
    # the rest are non-negative numbers
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail("expected a number")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise fail("must be a finite number >= 0")
    if key in ("p_sa0", "p_sa1") and value > 1:
        raise fail("a probability must be at most 1")
    if key == "g_max_spread" and value >= 1:
        # a device's g_max is g_max (1 + spread xi), kept at least g_min: from a relative
        # sigma of 100 % on, a fifth of the devices or more would have no range left
        raise fail("a relative sigma of each device's g_max must be below 1")
    if key == "t0" and value == 0:
        raise fail("must be above 0")
    ceiling = CEILINGS.get(key)
    if ceiling is not None and value > ceiling:
        raise fail(f"must be at most {ceiling:g} (a larger value overflows the device model)")
    return value


# the largest value of each number field: far beyond any device, and far below where the
# models overflow to infinite conductances or reads (which NaN would then fill)
CEILINGS = {
    "programming_scale": 1e3,  # times the device model's sigma
    "programming_relative": 1e3,  # sigma / G
    "drift_nu": 10.0,  # G(t) = G_p ((t + t0) / t0)^-nu; PCM's is about 0.05
    "drift_nu_std": 10.0,
    "t_inference": 1e12,  # seconds: 30,000 years
    "t0": 1e12,
    "wire_resistance": 1e6,  # ohms per wire segment; real ones are about 1
    "input_noise": 1e3,  # relative to the DAC's full scale
    "read_sigma": 1e3,
    "output_noise": 1e3,  # relative to one cell at g_max driven at full scale
}


def noise_settings(profile: str | os.PathLike = "ideal", **changes) -> NoiseSettings:
    """A profile's settings with fields changed, each checked as in a profile file:
    `noise_settings("quant", adc_bits=4)`."""
    values, where = read_profile(profile)
    for key, value in changes.items():
        values[key] = (value, f"{key}=")
    return build_settings(values, where)
