"""Conversions between the greenhouse sensors' raw values and physical units."""

from __future__ import annotations

import math
from dataclasses import dataclass

ADC_MAX = 1023  # the probes' 10-bit analog inputs


@dataclass(frozen=True, slots=True)
class ProbeCalibration:
    """A soil probe's raw values in dry air and in water."""

    dry: int
    wet: int

    def __post_init__(self) -> None:
        if not 0 <= self.wet < self.dry <= ADC_MAX:
            raise ValueError(f"need 0 <= wet < dry <= {ADC_MAX}, got {self.wet}, {self.dry}")

    def moisture(self, raw: int) -> float:
        """Moisture in percent: 0 at the dry value, 100 at the wet one, clipped."""
        fraction = (self.dry - raw) / (self.dry - self.wet)
        return 100.0 * min(1.0, max(0.0, fraction))

    @property
    def worn(self) -> bool:
        """A probe whose water value rose above 500 no longer reads wet soil."""
        return self.wet > 500


def temperature(raw: int) -> float:
    """Degrees Celsius from the SHT sensor's 16-bit temperature word."""
    return -45.0 + 175.0 * raw / 65535.0


def humidity(raw: int) -> float:
    """Relative humidity in percent from the 16-bit humidity word, clipped to 0-100."""
    return min(100.0, max(0.0, -6.0 + 125.0 * raw / 65535.0))


def dew_point(celsius: float, relative_humidity: float) -> float:
    """The Magnus formula's dew point, good to 0.35 degrees between -45 and 60."""
    if relative_humidity <= 0:
        return -math.inf
    b, c = 17.62, 243.12
    gamma = math.log(relative_humidity / 100.0) + b * celsius / (c + celsius)
    return c * gamma / (b - gamma)


def crc8(data: bytes, polynomial: int = 0x31, initial: int = 0xFF) -> int:
    """The sensor's CRC-8 over a word's two bytes."""
    crc = initial
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ polynomial) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def check_word(data: bytes) -> int:
    """The 16-bit word of a 3-byte reply (word, CRC); ValueError on a bad CRC."""
    if len(data) != 3:
        raise ValueError(f"expected 3 bytes, got {len(data)}")
    if crc8(data[:2]) != data[2]:
        raise ValueError(f"bad CRC {data[2]:#04x} for word {data[:2].hex()}")
    return int.from_bytes(data[:2], "big")
