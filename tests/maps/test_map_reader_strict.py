"""The map reader accepts exactly what ``torch.load(weights_only=True)`` accepts.

Stock SGLang loads ``--speculative-token-map`` with that call, so a map our reader
passes but torch refuses would pass ``export`` and ``inspect`` and then fail at serving.
Each case is a hand-made torch zip; torch itself is the oracle.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from fastmtp_export.errors import TokenMapError
from fastmtp_export.maps.token_map import load_token_map, token_map_bytes

IDS = [0, 5, 7, 9]
RECORDS = {
    "data.pkl": pickle.dumps(IDS, protocol=2),
    ".format_version": b"1",
    ".storage_alignment": b"64",
    "byteorder": b"little",
    "version": b"3\n",
}


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, ("echo pwned",)


def _zip(records: dict[str, bytes], prefix: str = "archive/") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in records.items():
            zf.writestr(prefix + name, data)
    return buf.getvalue()


def _without(name: str) -> dict[str, bytes]:
    return {k: v for k, v in RECORDS.items() if k != name}


CASES = {
    "our writer": token_map_bytes(IDS),
    "torch.save": None,  # filled in by the test (torch.save's own bytes)
    "no version record": _zip(_without("version")),
    "no byteorder record": _zip(_without("byteorder")),
    "no .format_version": _zip(_without(".format_version")),
    "no .storage_alignment": _zip(_without(".storage_alignment")),
    "unknown version 99": _zip({**RECORDS, "version": b"99\n"}),
    "big-endian byteorder": _zip({**RECORDS, "byteorder": b"big"}),
    "extra record": _zip({**RECORDS, "extra.txt": b"hello"}),
    "another archive name": _zip(RECORDS, prefix="weights/"),
    "records at the zip root": _zip(RECORDS, prefix=""),
    "malicious data.pkl": _zip({**RECORDS, "data.pkl": pickle.dumps(_Evil(), protocol=2)}),
    "data.pkl not a list": _zip({**RECORDS, "data.pkl": pickle.dumps({"a": 1}, protocol=2)}),
    "two archives": _zip(
        {f"{a}/{k}": v for a in ("archive", "other") for k, v in RECORDS.items()}, prefix=""
    ),
    "data.pkl in a subfolder": _zip({**_without("data.pkl"), "sub/data.pkl": RECORDS["data.pkl"]}),
}


def _torch_accepts(path: Path) -> bool:
    try:
        value = torch.load(path, weights_only=True)
    except Exception:
        return False
    return isinstance(value, list)


@pytest.mark.parametrize("case", sorted(CASES))
def test_reader_agrees_with_torch(case: str, tmp_path: Path) -> None:
    data = CASES[case]
    if data is None:
        buf = io.BytesIO()
        torch.save(IDS, buf)
        data = buf.getvalue()
    path = tmp_path / "freq_en_4.pt"
    path.write_bytes(data)
    want = _torch_accepts(path)
    error = ""
    try:
        got = load_token_map(path, vocab_size=16) == IDS
    except TokenMapError as exc:
        got, error = False, str(exc)
    assert got == want, (case, "ours", got, "torch", want)
    assert "\n" not in error


def test_the_cases_include_both_verdicts(tmp_path: Path) -> None:
    """The agreement test is only worth something if torch refuses some cases."""
    verdicts: set[bool] = set()
    for name, data in CASES.items():
        if data is None:
            continue
        path = tmp_path / f"{len(verdicts)}-{abs(hash(name))}.pt"
        path.write_bytes(data)
        verdicts.add(_torch_accepts(path))
    assert verdicts == {True, False}


def test_the_package_requires_a_torch_whose_weights_only_load_is_safe() -> None:
    """Maps are read with torch.load(weights_only=True), bypassable before torch 2.6
    (CVE-2025-32434): the package must not allow such a torch."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    root = Path(__file__).resolve().parents[2]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_req,) = [Requirement(d) for d in deps if Requirement(d).name == "torch"]
    for bad in ("2.4.1", "2.5.1"):
        assert Version(bad) not in torch_req.specifier, torch_req
    assert Version("2.6.0") in torch_req.specifier
