"""What lm-eval's own RULER and LongBench tasks fetch before they run, and whether it is here.

Everything is read from the installed lm-eval's task files, as data (``ropeext.eval.lmeval_assets``):

- LongBench: each task YAML's ``dataset_path`` / ``dataset_name`` / ``test_split``, a hub dataset
  that ``datasets.load_dataset`` reads (from the local datasets cache when offline);
- RULER: the Python function named by each task's ``custom_dataset``. Tasks whose needle haystack
  is ``essay`` load a hub dataset in ``prepare_niah.get_haystack`` and sentence-split it with an
  nltk resource that ``prepare_niah`` looks up (and downloads when missing); the QA tasks fetch a
  JSON file from a URL with ``requests`` at every run, keeping no copy.

A hub dataset is usable when the datasets cache holds its config (the layout
``<cache>/<namespace>___<snake_case name>/<config>/<version>/<hash>/dataset_info.json`` that
``datasets`` itself looks up offline) or, without an offline flag, when the hub answers. A URL
needs the network: with ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` set it is missing, otherwise
its host is probed once with a short timeout. ``suite_problems`` turns what is missing into one
message per suite: what to download, and where it must be cached.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ropeext.errors import RopeextError
from ropeext.eval import lmeval_assets as LM

TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
PROBE_TIMEOUT_S = 5.0
ENGINES = ("ropeext", "lm_eval")
SUITES = ("ruler", "longbench")
RULER_MODULES = ("nltk", "wonderwords")  # what lm-eval's RULER task code imports beyond lm-eval's own needs
LOCAL_BUILDERS = {"json", "csv", "parquet", "arrow", "text", "pandas", "imagefolder", "audiofolder"}


@dataclass(frozen=True)
class HubData:
    """A hub dataset (one config, or any config when ``config`` is None) that lm-eval loads."""

    repo: str
    config: str | None
    split: str | None
    where: str  # the lm-eval file naming it


@dataclass(frozen=True)
class Url:
    """A file lm-eval fetches from the network at every run."""

    url: str
    where: str


@dataclass(frozen=True)
class NltkData:
    """An nltk resource lm-eval looks up (``resource``) and downloads when missing (``package``)."""

    resource: str
    package: str
    where: str


# ----------------------------------------------------------------------------- the environment
def offline_flag() -> str | None:
    """``NAME=value`` of the flag that makes ``datasets`` offline, or None (as ``datasets.config`` reads them:
    ``HF_DATASETS_OFFLINE`` when set, else ``HF_HUB_OFFLINE``)."""
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        value = os.environ.get(name)
        if value is not None:
            return f"{name}={value}" if value.upper() in TRUE_VALUES else None
    return None


def datasets_cache() -> Path:
    """The datasets cache ``datasets`` uses: HF_DATASETS_CACHE, else HF_HOME/datasets, else
    ~/.cache/huggingface/datasets."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "datasets"


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def cache_folder(repo: str, cache: Path) -> Path:
    """Where ``datasets`` keeps the prepared configs of hub dataset ``repo``."""
    from datasets.naming import camelcase_to_snakecase

    parts = repo.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    return cache / "___".join(parts)


def cached_configs(repo: str, cache: Path) -> set[str]:
    """The configs of ``repo`` prepared in ``cache`` (each folder whose dataset_info.json names its config)."""
    found = set()
    for info in cache_folder(repo, cache).glob("*/*/*/dataset_info.json"):
        config = info.parts[-4]
        try:
            if json.loads(info.read_text(encoding="utf-8")).get("config_name") == config:
                found.add(config)
        except (OSError, ValueError):
            continue
    return found


def is_cached(need: HubData, cache: Path) -> bool:
    configs = cached_configs(need.repo, cache)
    return bool(configs) if need.config is None else need.config in configs


def nltk_paths() -> list[str]:
    import nltk

    return [str(p) for p in nltk.data.path]


def nltk_has(resource: str) -> bool:
    import nltk

    try:
        nltk.data.find(resource)
    except LookupError:
        return False
    return True


def nltk_server() -> str:
    import nltk.downloader

    return nltk.downloader.Downloader.DEFAULT_URL


@lru_cache(maxsize=64)
def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``url``'s server answers at all within ``timeout`` seconds (any HTTP status counts)."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 - http(s) URLs read from lm-eval
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


# ----------------------------------------------------------------------------- reading lm-eval
def _call_name(node: ast.Call) -> str:
    return ast.unparse(node.func)


def _calls(node) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call)]


def _const(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _custom_dataset(folder: str, yaml_name: str) -> tuple[str, Path, str]:
    """lm-eval's task name and the (file, function) its ``custom_dataset`` names."""
    path = LM.task_file(folder, yaml_name)
    cfg = LM.read_yaml(path)
    ref = cfg.get("custom_dataset")
    if not isinstance(ref, str) or "." not in ref:
        raise LM.error(path, f"custom_dataset: expected '!function module.name', got {ref!r}")
    module, _, func = ref.rpartition(".")
    return str(cfg.get("task")), LM.task_file(folder, f"{module}.py"), func


@lru_cache(maxsize=1)
def _essay_needs() -> tuple[HubData, NltkData]:
    """The essay haystack: the hub dataset ``get_haystack`` loads and the nltk resource ``prepare_niah`` looks up."""
    path = LM.task_file("ruler", "prepare_niah.py")
    module = LM.parse_module(path)
    hub = None
    for call in _calls(LM.function_def(module, "get_haystack", path)):
        if _call_name(call).split(".")[-1] == "load_dataset" and call.args and _const(call.args[0]):
            config = _const(call.args[1]) if len(call.args) > 1 else _const(_kw(call, "name"))
            hub = HubData(_const(call.args[0]), config, _const(_kw(call, "split")), LM.relative(path))
    if hub is None:
        raise LM.error(path, "get_haystack() loads no hub dataset by a literal name")
    resource = package = None
    for call in _calls(module):
        name = _call_name(call)
        if name == "nltk.data.find" and call.args:
            resource = _const(call.args[0])
        elif name == "nltk.download" and call.args:
            package = _const(call.args[0])
    if not resource:
        raise LM.error(path, "no nltk.data.find('<resource>') call")
    return hub, NltkData(resource, package or resource.rsplit("/", 1)[-1], LM.relative(path))


def _haystack_of(module_path: Path, func: str) -> str | None:
    """The ``type_haystack`` a RULER niah generator passes to ``get_haystack``."""
    fn = LM.function_def(LM.parse_module(module_path), func, module_path)
    for call in _calls(fn):
        if _call_name(call) == "get_haystack":
            value = _const(_kw(call, "type_haystack")) or (_const(call.args[0]) if call.args else None)
            if value is None:
                raise LM.error(module_path, f"{func}() passes no literal type_haystack to get_haystack()")
            return value
    return None


def _fetched_url(module_path: Path, func: str) -> Url | None:
    """The URL a RULER task fetches, or None: ``func`` passes a literal dataset name on (``"squad"``), and
    the module's ``read_<name>`` takes the file's URL as its ``url`` default (the QA tasks)."""
    module = LM.parse_module(module_path)
    fn = LM.function_def(module, func, module_path)
    readers = {n.name: n for n in module.body if isinstance(n, ast.FunctionDef) and n.name.startswith("read_")}
    literals = [_const(c.args[0]) for c in _calls(fn) if c.args and _const(c.args[0])]
    reader = next((readers[f"read_{lit}"] for lit in literals if f"read_{lit}" in readers), None)
    if reader is None:
        return None
    args = reader.args.args
    defaults = dict(zip([a.arg for a in args[len(args) - len(reader.args.defaults):]], reader.args.defaults))
    url = _const(defaults.get("url"))
    if not url or not url.startswith(("http://", "https://")):
        raise LM.error(module_path, f"{reader.name}() has no literal http(s) url default")
    return Url(url, LM.relative(module_path))


def ruler_needs(tasks: list[str]) -> dict[str, tuple[str, list]]:
    """{ropeext task: (lm-eval task name, what it fetches)} for RULER tasks (this project's names)."""
    from ropeext.eval.ruler.official import TASK_YAML

    out = {}
    for task in tasks:
        if task not in TASK_YAML:
            raise RopeextError(f"RULER task {task!r} has no lm-eval counterpart (known: {', '.join(TASK_YAML)})")
        name, module_path, func = _custom_dataset("ruler", TASK_YAML[task])
        needs: list = []
        haystack = _haystack_of(module_path, func)
        if haystack == "essay":
            needs.extend(_essay_needs())
        elif haystack is None and (url := _fetched_url(module_path, func)) is not None:
            needs.append(url)
        out[task] = (name, needs)
    return out


def longbench_task_file(task: str, benchmark: str) -> Path:
    """lm-eval's task file of a LongBench task (``<task>_e.yaml`` for LongBench-E)."""
    name = f"{task}_e.yaml" if benchmark == "longbench-e" else f"{task}.yaml"
    path = LM.package_dir() / "tasks" / "longbench" / name
    if not path.is_file():
        stems = [p.stem for p in path.parent.glob("*.yaml") if not p.stem.startswith("_")]
        e = benchmark == "longbench-e"
        known = sorted(s.removesuffix("_e") for s in stems if s.endswith("_e") == e)
        raise RopeextError(f"{benchmark} task {task!r}: {LM.label()} has no task file {LM.relative(path)} "
                           f"(its {benchmark} tasks: {', '.join(known)})")
    return path


def longbench_needs(tasks: list[str], benchmark: str) -> dict[str, tuple[str, list]]:
    """{task: (lm-eval task name, [HubData])} for LongBench tasks (the benchmark's own names, e.g. lcc)."""
    out = {}
    for task in tasks:
        path = longbench_task_file(task, benchmark)
        cfg = LM.read_yaml(path)
        repo = cfg.get("dataset_path")
        if not isinstance(repo, str) or not repo:
            raise LM.error(path, f"dataset_path: expected a hub dataset id, got {repo!r}")
        needs = [] if repo in LOCAL_BUILDERS else [HubData(repo, cfg.get("dataset_name"), cfg.get("test_split"),
                                                           LM.relative(path))]
        out[task] = (str(cfg.get("task")), needs)
    return out


# ----------------------------------------------------------------------------- what is missing
def _missing(need, cache: Path, offline: str | None) -> str | None:
    """Why ``need`` cannot be met here, or None when it can."""
    if isinstance(need, HubData):
        if is_cached(need, cache) or (not offline and reachable(f"{hub_endpoint()}/api/datasets/{need.repo}")):
            return None
        return _hub_reason(need, cache, offline)
    if isinstance(need, NltkData):
        if nltk_has(need.resource):
            return None
        where = f"not in nltk's data path ({', '.join(nltk_paths())})"
        if offline:
            return where
        return None if reachable(nltk_server()) else f"{where}, and nltk's server did not answer within " \
                                                      f"{PROBE_TIMEOUT_S:g} s"
    if offline:
        return "lm-eval fetches it at every run and keeps no copy, so it needs network access"
    return None if reachable(need.url) else (f"lm-eval fetches it at every run and keeps no copy, and its host did "
                                            f"not answer within {PROBE_TIMEOUT_S:g} s")


@dataclass
class _Missing:
    """One thing missing, with every config, task and lm-eval file that asks for it."""

    need: object
    reason: str
    configs: list = field(default_factory=list)
    tasks: list = field(default_factory=list)
    where: list = field(default_factory=list)

    def describe(self) -> str:
        need = self.need
        if isinstance(need, HubData):
            configs = [c for c in self.configs if c]
            parts = [(f"config{'s' if len(configs) > 1 else ''} {', '.join(configs)}" if configs else None),
                     f"split {need.split}" if need.split else None]
            extra = "; ".join(p for p in parts if p)
            what = f"the hub dataset {need.repo}" + (f" ({extra})" if extra else "")
        elif isinstance(need, NltkData):
            what = f"nltk's {need.package} ({need.resource})"
        else:
            what = need.url
        where = self.where[0] if len(self.where) == 1 else f"{Path(self.where[0]).parent}/"
        return f"- {what}, for {', '.join(self.tasks)} (named in {where}): {self.reason}"


def _group(need) -> tuple:
    if isinstance(need, HubData):
        return ("hub", need.repo, need.split)
    return (type(need).__name__, need)


def _fixes(missing: list[_Missing], cache: Path, suite: str) -> list[str]:
    """The commands that put the missing data where lm-eval finds it."""
    lines = []
    for m in missing:
        need = m.need
        if isinstance(need, HubData):
            split = f", split={need.split!r}" if need.split else ""
            configs = [c for c in m.configs if c]
            if len(configs) > 1:
                load = f"[datasets.load_dataset({need.repo!r}, c{split}) for c in {configs!r}]"
            else:
                load = f"datasets.load_dataset({need.repo!r}" + (f", {configs[0]!r}" if configs else "") + f"{split})"
            lines.append(f"  HF_DATASETS_CACHE=<cache> python -c \"import datasets; {load}\"\n"
                         f"    then copy <cache>/{cache_folder(need.repo, cache).name} into this machine's datasets "
                         f"cache {cache} (HF_DATASETS_CACHE, else HF_HOME/datasets)")
        elif isinstance(need, NltkData):
            lines.append(f"  python -m nltk.downloader -d <folder> {need.package}\n"
                         f"    then copy <folder> to {nltk_paths()[0]} (or any folder on NLTK_DATA / nltk's data path)")
    if any(isinstance(m.need, Url) for m in missing):
        lines.append(f"  the URLs above have no cache: run with network access, or leave their tasks out "
                     f"(eval.{suite}.tasks)")
    return lines


def suite_problems(suite: str, title: str, needs: dict[str, tuple[str, list]]) -> list[str]:
    """One message for ``suite`` naming every missing dataset / resource / URL and how to get it, or []."""
    cache, offline = datasets_cache(), offline_flag()
    missing: dict[tuple, _Missing] = {}
    for task, (name, items) in needs.items():
        label = task if task == name else f"{task} ({name})"
        for need in items:
            reason = _missing(need, cache, offline)
            if reason is None:
                continue
            m = missing.setdefault(_group(need), _Missing(need, reason))
            if isinstance(need, HubData):
                m.configs.append(need.config)
            m.tasks.append(label)
            if need.where not in m.where:
                m.where.append(need.where)
    if not missing:
        return []
    mode = f"{offline} is set, so nothing is downloaded" if offline else "the network does not answer"
    lines = [f"eval.{suite}.engine: lm_eval runs {LM.label()}'s own {title} tasks, which need data that is not "
             f"here ({mode}):"]
    lines += [m.describe() for m in missing.values()]
    lines.append("To fetch it, on a machine with network access:")
    lines += _fixes(list(missing.values()), cache, suite)
    lines.append(f"Or set eval.{suite}.engine: ropeext (this project's offline implementation).")
    return ["\n".join(lines)]


def _hub_reason(need: HubData, cache: Path, offline: str | None) -> str:
    """Why a hub dataset is missing, in words shared by all its configs."""
    where = f"not in the datasets cache {cache} (looked for {cache_folder(need.repo, cache).name}/<config>/)"
    if offline:
        return where
    return f"{where}, and the hub ({hub_endpoint()}) did not answer within {PROBE_TIMEOUT_S:g} s"


def ruler_problems(settings: dict) -> list[str]:
    """The RULER suite's message, for the resolved ``eval.ruler`` section (``tasks`` / ``subset``)."""
    from ropeext.eval.ruler.tasks import resolve_tasks

    tasks, _ = resolve_tasks(settings.get("tasks"), settings.get("subset"))
    absent = [m for m in RULER_MODULES if importlib.util.find_spec(m) is None]
    if absent:
        return [f"eval.ruler.engine: lm_eval: lm-eval's RULER tasks import {', '.join(absent)}, which is not "
                "installed (install the versions pinned in requirements.lock)"]
    return _safely("ruler", lambda: suite_problems("ruler", "RULER", ruler_needs(tasks)))


def longbench_problems(settings: dict) -> list[str]:
    """The LongBench suite's message, for the resolved ``eval.longbench`` section (``benchmark`` / ``tasks``)."""
    from ropeext.eval.lmeval_engine.longbench import task_list

    title = "LongBench-E" if settings["benchmark"] == "longbench-e" else "LongBench"
    return _safely("longbench", lambda: suite_problems(
        "longbench", title, longbench_needs(task_list(settings), settings["benchmark"])))


def _safely(suite: str, check) -> list[str]:
    try:
        return check()
    except RopeextError as exc:
        return [f"eval.{suite}.engine: lm_eval: {exc}"]


def engine_problems(config: dict) -> list[str]:
    """One message per enabled suite set to ``engine: lm_eval`` whose data cannot be reached: what to
    download and where it must be cached. Empty when every such suite can run (or none is set)."""
    out: list[str] = []
    checks = {"ruler": ruler_problems, "longbench": longbench_problems}
    for suite in SUITES:
        section = config.get("eval", {}).get(suite, {})
        if section.get("enabled", True) and section.get("engine") == "lm_eval":
            out += checks[suite](section)
    return out
