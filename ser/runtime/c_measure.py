"""What a generated C library (``ser export --c``) costs on a Cortex-M4, measured on the emulated MPS2-AN386.

- flash and static RAM: ``arm-none-eabi-size`` of the size probe (``mcu/probe.c``: the library as a device
  runs it, a DMA double buffer of samples included for a streaming model);
- stack: painted on the emulated board around ``ser_push`` (``ser_cli.elf --stream``);
- instructions per second of streamed audio, model included: ``mcu/bench.c`` on ``qemu-system-arm -icount
  shift=0``, where the virtual clock advances one nanosecond per instruction, read through the board's
  25 MHz timer (40 instructions a tick; a calibration loop of known length checks the ratio).

Needs Debian's ``gcc-arm-none-eabi``, ``libnewlib-arm-none-eabi``, ``qemu-system-arm`` and ``make``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser.errors import SERError

TOOLS = ("make", "arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
QEMU = ("qemu-system-arm", "-M", "mps2-an386", "-nographic")


@dataclass(frozen=True)
class Sizes:
    flash: int  # text + data: code and constants, and the initial values of data
    static_ram: int  # data + bss


@dataclass(frozen=True)
class Instructions:
    per_second: float  # of audio, with every window open (from the first window's end on)
    samples: int  # pushed in the steady state
    decisions: int
    per_tick: float  # of the timer: 40 when qemu counts as expected


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _require() -> None:
    missing = missing_tools()
    if missing:
        raise SERError(
            f"{', '.join(missing)} not installed (Debian: apt-get install gcc-arm-none-eabi "
            "libnewlib-arm-none-eabi qemu-system-arm make)"
        )


def _make(c_dir: Path, *targets: str) -> None:
    proc = subprocess.run(["make", *targets], cwd=c_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SERError(f"{c_dir}: make {' '.join(targets)} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")


def sizes(c_dir: str | Path) -> Sizes:
    """Flash and static RAM of the size probe."""
    _require()
    c_dir = Path(c_dir)
    _make(c_dir, "probe.elf")
    out = subprocess.run(["arm-none-eabi-size", "probe.elf"], cwd=c_dir, capture_output=True, text=True, check=True)
    text, data, bss = map(int, out.stdout.splitlines()[1].split()[:3])
    return Sizes(text + data, data + bss)


def _qemu(elf: Path, *args: str, icount: bool = False, timeout: float = 600) -> str:
    command = [
        *QEMU,
        *(("-icount", "shift=0,sleep=off") if icount else ()),
        "-semihosting-config",
        "enable=on,target=native," + ",".join(f"arg={a}" for a in args),
        "-kernel",
        str(elf),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    return proc.stdout + proc.stderr


def stack_bytes(c_dir: str | Path, wav: str | Path) -> int:
    """Stack the streaming API used on the emulated board while it streamed ``wav`` (16-bit PCM)."""
    _require()
    c_dir = Path(c_dir)
    _make(c_dir, "ser_cli.elf")
    out = _qemu(c_dir / "ser_cli.elf", "ser_cli", "--stream", str(Path(wav).resolve()))
    used = re.findall(r"stack used by ser_push: (\d+) bytes", out)
    if not used:
        raise SERError(f"{c_dir}: ser_cli.elf --stream printed no stack measure: {out.strip()[-500:]}")
    return int(used[-1])


def instructions(c_dir: str | Path, pcm: np.ndarray) -> Instructions:
    """Instructions per second of ``pcm`` (int16 at the model's rate, longer than one window) streamed."""
    _require()
    c_dir = Path(c_dir)
    _make(c_dir, "bench.elf")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "audio.raw"
        np.asarray(pcm, dtype="<i2").tofile(raw)
        out = _qemu(c_dir / "bench.elf", "bench", str(raw), icount=True)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise SERError(f"{c_dir}: bench.elf printed nothing: {out.strip()[-500:]}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise SERError(f"{c_dir}: bench.elf: {result['error']}")
    per_tick = result["calibration_instructions"] / result["calibration_ticks"]
    if not result["steady_samples"]:
        raise SERError(f"the audio is not longer than one window ({result['window']} samples)")
    per_second = result["steady_ticks"] * per_tick / result["steady_samples"] * result["sample_rate"]
    return Instructions(per_second, result["steady_samples"], result["decisions"], per_tick)
