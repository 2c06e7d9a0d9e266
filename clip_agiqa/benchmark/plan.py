"""Planning a benchmark: its splits, the configs and roots, the protocol, and every refusal before any fit.

The configs and arguments are read the way ``clip-agiqa fit`` reads them: by the CLI itself, in a process
(``clip-agiqa fit ... --print_config``), so the plan sees exactly the data, trainer and report the fits get.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import CommandParser, InputError
from ..files import atomic_write
from ..run_files import BEST_NAME
from .results import SETTINGS_FILE

FIXED_SPLITS = ("paper", "predefined")  # the same split whatever the seed
DERIVED_SETTINGS = ("splits", "protocol")  # written for `compare`, not part of what must match on a rerun


def cli_command(*args: str) -> list[str]:
    """``clip-agiqa ARGS`` with this interpreter (a DDP fit relaunches its ranks from this command line)."""
    return [sys.executable, "-m", "clip_agiqa", *args]


def config_args(configs: list[str]) -> list[str]:
    return [a for c in configs for a in ("--config", c)]


@dataclass(frozen=True)
class Split:
    """One run of the benchmark: its number, seed (data split and training), fold or split file."""

    index: int
    seed: int
    fold: int | None = None
    splits_file: str | None = None

    @property
    def folder_name(self) -> str:
        if self.splits_file is not None:
            return f"split_file{self.index}"
        return f"split_{self.seed}" if self.fold is None else f"split_fold{self.fold}"

    def label(self, total: int) -> str:
        where = (f" fold {self.fold}" if self.fold is not None else "") + (
            f" from {self.splits_file}" if self.splits_file is not None else "")
        return f"[split {self.index + 1}/{total}] seed {self.seed}{where}"

    def data_args(self, configured_split: str | None) -> list[str]:
        """The fit arguments that select this split (the split file under ``split: prompt`` keeps drawing val by
        prompt; any other protocol reads it as ``predefined``)."""
        if self.splits_file is not None:
            keep = [] if configured_split == "prompt" else ["--data.init_args.split", "predefined"]
            return [*keep, "--data.init_args.splits_file", self.splits_file, "--data.init_args.seed", str(self.seed)]
        if self.fold is not None:
            return ["--data.init_args.fold", str(self.fold)]
        return ["--data.init_args.seed", str(self.seed)]


@dataclass(frozen=True)
class TestSet:
    """Another dataset to test every split's checkpoint on: a data config part and its root."""

    config: str
    root: str | None

    @property
    def label(self) -> str:
        return Path(self.config).stem

    @property
    def data_args(self) -> list[str]:
        """The `clip-agiqa test` arguments that test on every image of this dataset."""
        root = ["--data.init_args.root", self.root] if self.root else []
        return ["--config", self.config, *root, "--data.init_args.test_split", "all"]


def test_set(argument: str) -> TestSet:
    """``CONFIG`` or ``CONFIG:ROOT`` (the config ends in .yaml or .yml)."""
    match = re.fullmatch(r"(.+?\.ya?ml)(?::(.+))?", argument)
    if match is None:
        raise argparse.ArgumentTypeError(f"{argument!r} is not CONFIG.yaml or CONFIG.yaml:ROOT")
    return TestSet(match.group(1), match.group(2))


def parse_args(argv: list[str] | None):
    parser = CommandParser(
        prog="clip-agiqa benchmark",
        description="Repeated-split benchmark: for each split, fit, choose the checkpoint on val, test once. "
                    "Unknown arguments (e.g. --data.root DIR, --trainer.max_epochs N) go to `clip-agiqa fit`.")
    parser.add_argument("--config", action="append", required=True,
                        help="a LightningCLI config (repeat to add more, e.g. experiments/wandb.yaml)")
    parser.add_argument("--splits", type=int, help="how many seeded splits (default 10)")
    parser.add_argument("--first_seed", "--first-seed", type=int, default=0, help="seed of the first split")
    parser.add_argument("--vary", choices=("seed", "fold"), default="seed",
                        help="seed: split k uses seed first_seed+k; fold: split k is fold k (for split: kfold)")
    parser.add_argument("--splits_from", "--splits-from", nargs="+", metavar="PATH",
                        help="one split per split file (file_name,split) or split folder (train.csv + test.csv or "
                             "val.csv); a folder of split folders gives each of them")
    parser.add_argument("--test_on", "--test-on", action="append", type=test_set, default=[],
                        metavar="CONFIG[:ROOT]", help="also test each split's checkpoint on every image of this "
                                                      "dataset (a data config part; repeatable)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="run up to this many splits at once, each in its own processes (one GPU each when "
                             "there are GPUs; on the CPU the cores are divided between them)")
    parser.add_argument("--out", help="results folder (default: runs/benchmark/<first config's name>)")
    args, fit_args = parser.parse_known_args(argv)
    if args.splits_from and (args.splits is not None or args.vary == "fold"):
        parser.error("--splits_from runs one split per path: leave out --splits and --vary")
    if args.splits is None:
        args.splits = 10
    if args.splits < 1:
        parser.error(f"--splits must be at least 1, got {args.splits}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.splits_from:
        args.splits_from = split_sources(args.splits_from)
        args.splits = len(args.splits_from)
    if args.out is None:
        args.out = str(Path("runs") / "benchmark" / Path(args.config[0]).stem)
    return args, fit_args


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def split_sources(paths: list[str]) -> list[str]:
    """Each split file or split folder given, as an absolute path; a folder of split folders (IPCE's
    ``Database/<benchmark>/``) gives each of them, in numeric order."""
    sources = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise InputError(f"--splits_from {given}: not found")
        if path.is_dir() and not (path / "train.csv").is_file():
            folders = sorted((p for p in path.iterdir() if (p / "train.csv").is_file()), key=_natural_key)
            if not folders:
                raise InputError(f"--splits_from {given}: neither a split folder (train.csv + test.csv or val.csv) "
                                 f"nor a folder of split folders")
            sources += folders
        else:
            sources.append(path)
    return [str(p.resolve()) for p in sources]


def planned_splits(args) -> list[Split]:
    if args.splits_from:
        return [Split(k, args.first_seed + k, splits_file=path) for k, path in enumerate(args.splits_from)]
    return [Split(k, args.first_seed + k, k if args.vary == "fold" else None) for k in range(args.splits)]


def printed_configs(commands: dict[str, list[str]]) -> dict[str, dict]:
    """The configuration the CLI resolves for each command (its ``--print_config``), all parsed at once in their
    own processes; nothing is instantiated. A command the CLI refuses is named with the CLI's message."""
    processes = {name: subprocess.Popen(cli_command(*args, "--print_config"), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for name, args in commands.items()}
    printed = {}
    for name, process in processes.items():
        out, err = process.communicate()
        if process.returncode != 0:
            lines = [line for line in err.splitlines() if line.strip()]
            reason = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
            raise InputError(f"{name}: the CLI refused the arguments: {reason.strip()}")
        printed[name] = yaml.safe_load(out) or {}
    return printed


def check_mixed(args, data: dict) -> None:
    """Several datasets in one model: every split draws each dataset's split from the split's seed (MixedData's
    ``seed``), so each dataset's split must depend on the seed."""
    if args.splits_from or args.vary == "fold":
        raise InputError("several datasets in one model (MixedData): each split is drawn from its seed; leave out "
                         "--splits_from and --vary fold")
    fixed = [str((m.get("init_args") or {}).get("split")) for m in mixed_members(data)
             if (m.get("init_args") or {}).get("split") in FIXED_SPLITS]
    if args.splits > 1 and fixed:
        raise InputError(f"--splits {args.splits}: a dataset's split {fixed[0]!r} does not depend on the seed, so "
                         "every run would repeat it; give each dataset a split drawn from the seed (random, prompt)")


def check_splits_differ(args, data: dict) -> None:
    """Refuse a benchmark whose runs would all use one and the same split."""
    split = data.get("split")
    if args.splits_from:
        return  # one file each
    if args.vary == "fold":
        if split != "kfold":
            raise InputError(f"--vary fold needs the k-fold split (--data.split kfold), but the split is {split!r}: "
                             "every run would use the same split")
        if args.splits > data["folds"]:
            raise InputError(f"--splits {args.splits} with --vary fold needs as many folds, but --data.folds is "
                             f"{data['folds']}")
    elif args.splits > 1 and split in FIXED_SPLITS:
        raise InputError(f"--splits {args.splits}: split {split!r} does not depend on the seed, so every run would "
                         "repeat the same split. Use --splits 1, a split drawn from the seed (random, prompt, kfold), "
                         "--data.split kfold with --vary fold, or one split file each with --splits_from")


def mixed_members(data: dict) -> list[dict]:
    """The member data sections of a ``MixedData`` section (several datasets in one model); none for one dataset."""
    members = (data.get("init_args") or {}).get("datasets")
    return [m for m in members if isinstance(m, dict)] if str(data.get("class_path", "")).endswith(
        ".MixedData") and isinstance(members, list) else []


def mixed_names(data: dict) -> list[str]:
    """The names a ``MixedData`` section gives its datasets (``names``, else each class name, numbered where two
    share one: ``MixedData``'s own rule); none for one dataset."""
    members = mixed_members(data)
    if not members:
        return []
    from ..data.mixed import default_names  # the one naming rule (it needs only the class names)

    given = (data.get("init_args") or {}).get("names")
    return list(given) if given else default_names([str(m.get("class_path", "")).rsplit(".", 1)[-1]
                                                     for m in members])


def data_targets(data: dict) -> list[str]:
    """The targets a data section names (``target``: one name or a list; ``quality`` when it names none; a mixed
    section's: its first dataset's)."""
    members = mixed_members(data)
    target = ((members[0] if members else data).get("init_args") or {}).get("target") or "quality"
    return [target] if isinstance(target, str) else list(target)


def check_test_set(test: TestSet, data: object, trained: list[str]) -> None:
    """A --test_on dataset names a data class and root and has as many targets as the model learns."""
    if not isinstance(data, dict) or not data.get("class_path"):
        raise InputError(f"--test_on {test.config}: the config names no data class (data.class_path): give a data "
                         f"part such as experiments/data/aigciqa2023_quality.yaml")
    if not (data.get("init_args") or {}).get("root"):
        raise InputError(f"--test_on {test.config}: the config sets no data.root; give it as "
                         f"--test_on {test.config}:ROOT")
    targets = data_targets(data)
    if len(targets) != len(trained):
        raise InputError(f"--test_on {test.config}: its data has {len(targets)} target(s) ({', '.join(targets)}) "
                         f"but the model learns {len(trained)} ({', '.join(trained)}): test on data with as many")


@dataclass
class Plan:
    """Everything the runs need, decided before the first fit."""

    configs: list[str]
    fit_args: list[str]
    out: Path
    splits: list[Split]
    test_sets: tuple[TestSet, ...]
    jobs: int
    command: str
    configured_split: str | None
    about: dict  # what `compare` shows: data, split kind, where the checkpoint is chosen
    trainer: dict = field(default_factory=dict)  # the resolved trainer settings of the fits
    members: tuple[str, ...] = ()  # several datasets in one model: each one's name, tested on its own test split
    checkpoint_file: str = f"{BEST_NAME}.ckpt"  # the checkpoint chosen on val

    @property
    def trained_on(self) -> str:
        return Path(self.configs[0]).stem


def protocol(args, data: dict) -> dict:
    """What `compare` shows of this benchmark: the split kind and where the checkpoint is chosen."""
    split = data["init_args"].get("split")
    kind = f"{split} ({len(args.splits_from)} split files)" if args.splits_from else split
    if mixed_members(data):
        kind = "mixed: " + ", ".join(f"{name} {(m.get('init_args') or {}).get('split')}"
                                     for name, m in zip(mixed_names(data), mixed_members(data)))
    return {"data": Path(args.config[0]).stem, "split": kind, "selection": "test" if split == "paper" else "val"}


def claim_folder(out: Path, settings: dict) -> None:
    """Record the settings in OUT; refuse to mix results of a different benchmark into the same folder."""
    path = out / SETTINGS_FILE
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: not a benchmark's settings ({error}); use another --out") from None
        if not isinstance(previous, dict):
            raise InputError(f"{path}: not a benchmark's settings (not a JSON object); use another --out")
        changed = [k for k in settings if k not in DERIVED_SETTINGS and previous.get(k) != settings[k]]
        if changed:
            raise InputError(f"{out} holds a benchmark run with other settings ({', '.join(changed)} differ: "
                             f"{ {k: previous.get(k) for k in changed} }); use another --out or remove {out}")
    with atomic_write(path) as handle:
        handle.write(json.dumps(settings, indent=2) + "\n")


def make_plan(argv: list[str] | None) -> Plan:
    """Parse, resolve the configs through the CLI, check everything that can be checked before a fit, and claim
    the results folder."""
    args, fit_args = parse_args(argv)
    out = Path(args.out)
    commands = {"the fit's arguments": ["fit", *config_args(args.config), *fit_args]}
    named = {test: f"--test_on {test.config}" + (f":{test.root}" if test.root else "") for test in args.test_on}
    commands.update({name: ["test", *test.data_args] for test, name in named.items()})
    printed = printed_configs(commands)
    fit = printed["the fit's arguments"]
    data = fit["data"]
    if mixed_members(data):
        check_mixed(args, data)
    else:
        check_splits_differ(args, data["init_args"])
    if not (fit.get("report") or {}).get("enabled", True):
        raise InputError("the benchmark reads each test's predictions (the test report): leave out "
                         "--report.enabled false")
    for test, name in named.items():
        check_test_set(test, printed[name].get("data"), data_targets(data))
    about = protocol(args, data)
    claim_folder(out, {"configs": args.config, "fit_args": fit_args, "first_seed": args.first_seed,
                       "vary": args.vary, "splits_from": args.splits_from,
                       "test_on": [[t.config, t.root] for t in args.test_on], "splits": args.splits,
                       "protocol": about})
    return Plan(configs=args.config, fit_args=fit_args, out=out, splits=planned_splits(args),
                test_sets=tuple(args.test_on), jobs=args.jobs,
                command="clip-agiqa benchmark " + " ".join(shlex.quote(a) for a in (argv or [])),
                configured_split=data["init_args"].get("split"), about=about, trainer=fit.get("trainer") or {},
                checkpoint_file=f"{(fit.get('checkpoint') or {}).get('filename') or 'best'}.ckpt",
                members=tuple(mixed_names(data)))
