"""Regenerate `enishi/v1` (messages, gRPC stubs, mypy stubs) from `protos/enishi/v1/*.proto`.

`make protos` runs this. `--check` regenerates into a temporary directory and exits non-zero,
listing stale, missing and extra files, when the committed package differs from the protos.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PACKAGE = Path("enishi", "v1")
PACKAGE_DIR = REPO_ROOT / PACKAGE
# grpc_tools ships google/protobuf/*.proto (Timestamp, Struct, ...) next to its protoc.
WELL_KNOWN_PROTOS = Path(str(files("grpc_tools") / "_proto"))
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
# Files in the package that are never regenerated and never reported as extra.
IGNORED_NAMES = frozenset({"__pycache__"})
INIT_TEXT = '''"""Generated code for the enishi v1 gRPC/protobuf contracts. Never edit by hand.

Produced from `protos/enishi/v1/*.proto` by `make protos` (`python -m scripts.gen_protos`);
change the protos and regenerate. `tests/unit/test_protos.py` fails when this package is stale.
"""
'''


class GenerationError(RuntimeError):
    """protoc or a plugin failed, or a tool it needs is missing."""


@dataclass(frozen=True)
class Drift:
    """How a package directory differs from freshly generated code (paths relative to it)."""

    stale: tuple[str, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]

    @property
    def clean(self) -> bool:
        """True when the directory matches the generated code exactly."""
        return not (self.stale or self.missing or self.extra)

    def report(self) -> str:
        """One line per differing file, sorted, for people and CI logs."""
        lines = [f"stale:   {name}" for name in self.stale]
        lines += [f"missing: {name}" for name in self.missing]
        lines += [f"extra:   {name}" for name in self.extra]
        return "\n".join(lines)


def proto_files() -> list[Path]:
    """The contract sources, sorted so protoc sees them in the same order on every machine."""
    return sorted((PROTO_ROOT / PACKAGE).glob("*.proto"))


def _plugin(name: str) -> Path:
    # The plugins are console scripts of mypy-protobuf, installed next to this interpreter.
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        raise GenerationError(f"{name} not found: install the dev extra (mypy-protobuf)")
    return Path(found)


def _protoc(args: Sequence[str]) -> None:
    # A child process: grpc_tools ships no type information, and protoc's state stays out of ours.
    done = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *args], check=False)
    if done.returncode != 0:
        raise GenerationError(f"protoc failed with exit code {done.returncode} (messages above)")


def _inputs() -> list[str]:
    sources = proto_files()
    if not sources:
        raise GenerationError(f"no .proto files under {PROTO_ROOT / PACKAGE}")
    return [
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={WELL_KNOWN_PROTOS}",
        *(str(source.relative_to(PROTO_ROOT)) for source in sources),
    ]


def describe(*, include_source_info: bool = False) -> descriptor_pb2.FileDescriptorSet:
    """The parsed protos (comments included on request), for tests and tools that inspect them."""
    with tempfile.TemporaryDirectory(prefix="enishi-protos-") as tmp:
        out = Path(tmp) / "descriptor_set.binpb"
        extra = ["--include_source_info"] if include_source_info else []
        _protoc([f"--descriptor_set_out={out}", *extra, *_inputs()])
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def generate(out_root: Path) -> Path:
    """Generate the whole package under `out_root` (as `out_root/enishi/v1`); return its path."""
    descriptor_set = out_root / "descriptor_set.binpb"
    args = [
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out=quiet:{out_root}",
        f"--mypy_grpc_out=quiet:{out_root}",
        f"--descriptor_set_out={descriptor_set}",
        *_inputs(),
    ]
    _protoc(args)
    package_dir = out_root / PACKAGE
    # The gRPC plugins write a module per proto; only the ones declaring services are kept.
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    for proto in files:
        if not proto.service:
            stem = Path(proto.name).stem
            for suffix in ("_pb2_grpc.py", "_pb2_grpc.pyi"):
                (package_dir / f"{stem}{suffix}").unlink()
    descriptor_set.unlink()
    (package_dir / "__init__.py").write_text(INIT_TEXT, encoding="utf-8")
    return package_dir


def _files(directory: Path) -> dict[str, Path]:
    if not directory.is_dir():
        return {}
    return {
        path.name: path
        for path in directory.iterdir()
        if path.name not in IGNORED_NAMES and not path.is_dir()
    }


def diff(expected_dir: Path, actual_dir: Path) -> Drift:
    """Compare freshly generated `expected_dir` with the package at `actual_dir`."""
    expected, actual = _files(expected_dir), _files(actual_dir)
    stale = sorted(
        name
        for name in expected.keys() & actual.keys()
        if expected[name].read_bytes() != actual[name].read_bytes()
    )
    return Drift(
        stale=tuple(stale),
        missing=tuple(sorted(expected.keys() - actual.keys())),
        extra=tuple(sorted(actual.keys() - expected.keys())),
    )


def check(package_dir: Path = PACKAGE_DIR) -> Drift:
    """Regenerate into a temporary directory and compare with `package_dir`; changes nothing."""
    with tempfile.TemporaryDirectory(prefix="enishi-protos-") as tmp:
        return diff(generate(Path(tmp)), package_dir)


def write(package_dir: Path = PACKAGE_DIR) -> Drift:
    """Bring `package_dir` in line with the protos; return what had to change.

    Extra generated-looking files (from a deleted .proto) are removed; any other extra file
    is left alone and stays in the returned drift, because someone put it there by hand.
    """
    with tempfile.TemporaryDirectory(prefix="enishi-protos-") as tmp:
        fresh = generate(Path(tmp))
        drift = diff(fresh, package_dir)
        package_dir.mkdir(parents=True, exist_ok=True)
        for name in (*drift.stale, *drift.missing):
            shutil.copyfile(fresh / name, package_dir / name)
    for name in drift.extra:
        if name.endswith(GENERATED_SUFFIXES):
            (package_dir / name).unlink()
    return drift


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: regenerate, or with `--check` only report drift."""
    parser = argparse.ArgumentParser(prog="python -m scripts.gen_protos", description=__doc__)
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and fail if enishi/v1 differs",
    )
    args = parser.parse_args(argv)
    try:
        drift = check() if args.check else write()
    except GenerationError as error:
        print(f"gen_protos: {error}", file=sys.stderr)
        return 2
    where = PACKAGE_DIR.relative_to(REPO_ROOT)
    if args.check:
        if drift.clean:
            print(f"{where} is up to date with {len(proto_files())} protos")
            return 0
        print(f"{where} is out of date; run `make protos`:\n{drift.report()}", file=sys.stderr)
        return 1
    hand_made = tuple(name for name in drift.extra if not name.endswith(GENERATED_SUFFIXES))
    changed = len(drift.stale) + len(drift.missing) + len(drift.extra) - len(hand_made)
    print(f"{where}: {changed} file(s) written or removed from {len(proto_files())} protos")
    if hand_made:
        print(
            f"{where} holds files that are not generated (move them out): {', '.join(hand_made)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
