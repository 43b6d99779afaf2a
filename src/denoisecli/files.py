"""Planning folder jobs: which files to read and where each output goes, without touching the inputs."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from denoisecli.errors import DenoiseError, no_such_path
from denoisecli.formats import (FORMAT_SUFFIX, PNM_SUFFIXES, READABLE, conversion_hints, is_image_path, list_images, normalize_format,
                                require_images, unread_files)


@dataclass
class FileResult:
    """The outcome of one file in a batch: ``status`` is denoised/written, skipped or failed."""

    src: Path
    dst: Path | None
    status: str
    reason: str = ""
    megapixels: float = 0.0
    detail: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # what `run --json` records of it: the levels used, the routes taken


@dataclass
class BatchReport:
    """Every file's outcome, and the files of the input folder that were not images it reads
    (by extension), which are no error but which a user should hear about."""

    results: list[FileResult]
    unread: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # where, when and how the batch ran (``run --json``)
    stopped: str = ""  # why the batch stopped before its last file (a full disk); the files left are "skipped"

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        """The batch as JSON: a scientist's record of what was done to each file, and with what."""
        files = [{"input": str(r.src), "output": str(r.dst) if r.dst is not None else None, "status": r.status,
                  **({"reason": r.reason} if r.reason else {}), **({"megapixels": round(r.megapixels, 4)} if r.megapixels else {}),
                  **r.info} for r in self.results]
        counts = {status: self.count(status) for status in dict.fromkeys(r.status for r in self.results)}
        return {**self.meta, "counts": counts, "files": files, "left_alone": self.unread, **({"stopped": self.stopped} if self.stopped else {})}


def default_output(src: Path, tag: str) -> Path:
    """A new sibling folder (``photos`` -> ``photos-denoised``), never the input folder itself."""
    src = Path(src)
    if src.is_dir():
        return src.resolve().with_name(f"{src.resolve().name}-{tag}")
    return src.resolve().parent / tag


def plan(src: Path, dst: Path, suffix: str | Callable[[Path], str] | None = None,
         exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """Pair each input image with its output path, mirroring the input tree under ``dst``.

    A single file with ``dst`` naming an image file is written there; otherwise ``dst``
    is a folder. ``suffix`` replaces the extension, or gives it per input (add-noise writes
    PNG, TIFF for TIFF). Outputs inside the input folder (under ``exclude``, by default ``dst``) are
    never read back as inputs, and no output may be an input.
    """
    suffix_of = (lambda _: suffix) if isinstance(suffix, str) else suffix
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise no_such_path(src)
    if src.is_file():
        if not is_image_path(src):
            raise DenoiseError(f"{src}: not an image file name (it reads {READABLE}){conversion_hints([src.suffix])}")
        target = dst if is_image_path(dst) and not dst.is_dir() else dst / src.name
        pairs = [(src, target.with_suffix(suffix_of(src)) if suffix_of else target)]
    else:
        if dst.resolve() == src.resolve():
            raise DenoiseError(f"{dst}: the output folder is the input folder; choose another so no input is overwritten")
        files = require_images(src, exclude=exclude or dst)
        outs = [dst / f.relative_to(src) for f in files]
        if suffix_of:
            renamed = [o.with_suffix(suffix_of(f)) for f, o in zip(files, outs)]
            clash = {o for o in renamed if renamed.count(o) > 1}
            outs = [o.with_name(o.name + r.suffix) if r in clash else r for o, r in zip(outs, renamed)]
        pairs = list(zip(files, outs))
    inputs = {p.resolve() for p, _ in pairs}
    for _, out in pairs:
        if out.resolve() in inputs:
            raise DenoiseError(f"{out}: output would overwrite an input file; choose another output")
    return pairs


@dataclass
class Plan:
    """Each input image with its output path, and each input named with the folder its outputs go under."""

    pairs: list[tuple[Path, Path]]
    roots: list[tuple[Path, Path]]

    def unread(self) -> dict[str, int]:
        """``unread_files`` over every folder named, its outputs not counted: what a batch left alone."""
        counts: dict[str, int] = {}
        for src, out in self.roots:
            for ext, n in unread_files(src, exclude=out).items():
                counts[ext] = counts.get(ext, 0) + n
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def plan_inputs(srcs: Sequence[Path], dst: Path | None, tag: str,
                suffix: str | Callable[[Path], str] | None = None) -> Plan:
    """``plan`` for what a user names on the command line, often a shell's glob (``run
    IMG_*.JPG``): one file or folder as ``plan`` takes it; several into ``dst`` as a folder, each
    folder under its own name there, or without ``dst`` each beside itself (``default_output``).
    A file named twice is planned once; two inputs that would land on one output are an error."""
    srcs = [Path(s) for s in srcs]
    if not srcs:
        raise DenoiseError("no input given")
    if len(srcs) > 1 and dst is not None and is_image_path(dst) and not dst.is_dir():
        raise DenoiseError(f"{dst}: with {len(srcs)} inputs the output is a folder, not an image file")
    pairs: dict[Path, tuple[Path, Path]] = {}
    roots = []
    for src in srcs:
        out = (default_output(src, tag) if dst is None else dst if len(srcs) == 1 or not src.is_dir()
               else dst / src.resolve().name)
        roots.append((src, dst if dst is not None else out))  # the whole -o folder is output, never input
        for p, o in plan(src, out, suffix, exclude=roots[-1][1]):
            first = pairs.setdefault(o.resolve(), (p, o))[0]
            if first.resolve() != p.resolve():
                raise DenoiseError(f"{o}: both {first} and {p} would be written there; denoise them into separate folders")
    return Plan(list(pairs.values()), roots)


def plan_run(srcs: Sequence[Path], dst: Path | None, fmt: str | None) -> Plan:
    """What `run` reads and where each output goes (``plan_inputs``), renamed for ``fmt``
    (``--format``); torch-free, so the CLI says a wrong name or an output onto an input at once."""
    asked = normalize_format(fmt)
    return plan_inputs(srcs, dst, "denoised", suffix=FORMAT_SUFFIX[asked] if asked else None)


def plan_copies(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """What `add-noise` reads and writes: lossless copies, PNG, or the same for TIFF (which holds
    float data), PGM and PPM, so a dataset of them stays one."""
    return plan(Path(src), Path(dst), suffix=lambda p: p.suffix if p.suffix.lower() in {".tif", ".tiff", *PNM_SUFFIXES} else ".png")


ROLES = {"gt": "clean", "clean": "clean", "mean": "clean", "noisy": "noisy", "real": "noisy", "noise": "noisy"}
_WORDS = "|".join(ROLES)
# a whole word of the name, with one separator beside it: GT_SRGB_010 -> SRGB_010, 0001_noisy -> 0001
_ROLE = re.compile(rf"^({_WORDS})(?:[_.\- ]|$)|[_.\- ]({_WORDS})(?=[_.\- ]|$)", re.IGNORECASE)


def pair_role(path: Path) -> str | None:
    """"clean" or "noisy" where a file's name says which it is of a real pair (SIDD's GT_SRGB_010
    and NOISY_SRGB_010, PolyU's and Nam's ..._mean and ..._real), else None."""
    m = _ROLE.search(Path(path).stem)
    return ROLES[(m[1] or m[2]).lower()] if m else None


def pair_key(path: Path, root: Path) -> str:
    """How a noisy file is matched to its clean one: relative path without the extension, and
    without the word that names its role (``pair_role``), so real-noise datasets pair as they come."""
    rel = Path(path).relative_to(root).with_suffix("")
    name = _ROLE.sub("", rel.name, count=1)  # may leave nothing: a folder a pair, scene/GT.png and scene/NOISY.png
    return name if rel.parent == Path(".") else f"{rel.parent.as_posix()}/{name}"


def pair_files(clean_root: Path, noisy_root: Path) -> tuple[list[Path], dict[str, Path]]:
    """The clean images of real pairs, and the noisy ones by pair key. Where both are in one folder
    (SIDD keeps GT_SRGB_010 and NOISY_SRGB_010 side by side), a file's name says which it is, and
    one without a role word is left out. Two noisy files for one clean one are refused."""
    if not Path(noisy_root).is_dir():
        raise DenoiseError(f"{noisy_root}: not a folder")
    together = Path(noisy_root).resolve() == Path(clean_root).resolve()
    clean = [p for p in require_images(Path(clean_root)) if not together or pair_role(p) == "clean"]
    if not clean:
        raise DenoiseError(f"{clean_root}: no clean image of a pair (in one folder with the noisy ones, clean files are "
                           "named GT, clean or mean, noisy ones noisy, noise or real)")
    index: dict[str, Path] = {}
    for p in list_images(Path(noisy_root)):
        if together and pair_role(p) != "noisy":
            continue
        key = pair_key(p, Path(noisy_root))
        if key in index:
            raise DenoiseError(f"{p}: pairs with the same clean image as {index[key]}; keep one noisy image per clean one")
        index[key] = p
    return clean, index
