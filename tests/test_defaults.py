"""Every default lives in the config schema.

``test_no_command_defines_defaults_of_its_own`` reads each command module's syntax tree (nothing is
run) and fails when a module

1. binds a module-level name containing ``DEFAULT`` (the old per-command default tables);
2. gives ``add_argument`` a ``default=`` other than None, except where argparse needs one for the
   option's kind: flags (``store_true``/``store_false``), repeatable or multi-value options
   (``append``, ``nargs='*'``: the empty list) and the two options that say how this process runs a
   model rather than what it computes (``--dtype``, ``--device``: no config key describes them);
3. falls back on a literal when a value is missing: ``x or <literal>`` or ``d.get(key, <literal>)``
   with a non-empty literal (``or {}`` / ``or 0`` only normalise an absent value and stay allowed).

A command takes each value from the validated config, whose defaults the schema fills, and lets an
option given on the command line replace it. ``test_option_tables_name_config_keys`` checks that
the options a command lays over its config section (``SECTION`` / ``OPTIONS``) name real keys of
that section and default to None in the parser, so "not given" is always distinguishable.
"""

from __future__ import annotations

import argparse
import ast
import importlib

import pytest

from ropeext.config import resolve_config
from tests.conftest import REPO

COMMANDS = REPO / "ropeext" / "commands"
FLAG_ACTIONS = {"store_true", "store_false", "append", "count"}
RUNTIME_OPTIONS = {"dtype", "device"}
# Options whose own default is known and still to be taken from the config: (module, dest).
KNOWN: set = set()


def _literal(node) -> bool:
    """A non-empty literal (a default written in code); empty containers, 0, "" and None are not."""
    if isinstance(node, ast.Constant):
        return bool(node.value)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return bool(node.elts)
    if isinstance(node, ast.Dict):
        return bool(node.keys)
    return False


def _dest(call: ast.Call) -> str | None:
    for kw in call.keywords:
        if kw.arg == "dest" and isinstance(kw.value, ast.Constant):
            return kw.value.value
    longs = [a.value for a in call.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
    return longs[0][2:].replace("-", "_") if longs else None


def violations(path, known=KNOWN) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = path.stem
    out = []
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, (ast.AnnAssign, ast.AugAssign))
            else []
        )
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name) and "DEFAULT" in n.id.upper():
                    out.append(f"{name}:{node.lineno}: module-level {n.id}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            kw = {k.arg: k.value for k in node.keywords}
            if "default" not in kw or (isinstance(kw["default"], ast.Constant) and kw["default"].value is None):
                continue
            action = kw.get("action")
            nargs = kw.get("nargs")
            dest = _dest(node)
            if (
                (isinstance(action, ast.Constant) and action.value in FLAG_ACTIONS)
                or (isinstance(nargs, ast.Constant) and nargs.value in ("*", "+"))
                or dest in RUNTIME_OPTIONS
                or (name, dest) in known
            ):
                continue
            out.append(f"{name}:{node.lineno}: --{dest} default={ast.unparse(kw['default'])}")
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and _literal(node.values[-1]):
            out.append(f"{name}:{node.lineno}: fallback {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "get"
            and len(node.args) == 2
            and _literal(node.args[1])
        ):
            out.append(f"{name}:{node.lineno}: fallback {ast.unparse(node)}")
    return out


def test_no_command_defines_defaults_of_its_own():
    modules = sorted(COMMANDS.glob("*.py"))
    assert len(modules) > 15
    bad = [v for path in modules for v in violations(path)]
    assert not bad, "defaults written in command modules (they belong in the schema):\n" + "\n".join(bad)
    for name, dest in KNOWN:  # a known exception that has been fixed must leave the list
        assert any(f"--{dest} " in line for line in violations(COMMANDS / f"{name}.py", known=())), (name, dest)


def test_the_check_catches_each_kind_of_default(tmp_path):
    path = tmp_path / "fake.py"
    path.write_text(
        "LOCAL_DEFAULTS = {'items': 40}\n"
        "def add_arguments(parser):\n"
        "    parser.add_argument('--samples', type=int, default=5)\n"
        "    parser.add_argument('--no-progress', action='store_true')\n"
        "    parser.add_argument('--include', action='append', default=[])\n"
        "    parser.add_argument('--dtype', default='float32')\n"
        "    parser.add_argument('--stride', type=int)\n"
        "def run(args, cfg):\n"
        "    a = args.stride or cfg.get('stride') or 256\n"
        "    b = cfg.get('lengths', [256, 512])\n"
        "    c = cfg.get('x') or {}\n"
    )
    found = violations(path)
    assert [line.split(": ", 1)[1].split(" ")[0] for line in found] == [
        "module-level",
        "--samples",
        "fallback",
        "fallback",
    ], found


def _parser_of(module):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser


@pytest.mark.parametrize(
    "name", ["eval_passkey", "eval_ruler", "eval_openllm", "eval_longbench", "eval_ppl", "analyze_bf16"]
)
def test_option_tables_name_config_keys(name):
    module = importlib.import_module(f"ropeext.commands.{name}")
    section = resolve_config({})
    for part in module.SECTION.split("."):
        section = section[part]
    options = module.OPTIONS if isinstance(module.OPTIONS, dict) else {o: o for o in module.OPTIONS}
    parser = _parser_of(module)
    defaults = {a.dest: a.default for a in parser._actions}
    for dest, key in options.items():
        node = section
        for part in key.split("."):
            assert part in node, f"{name}: option --{dest} names {module.SECTION}.{key}, not a config key"
            node = node[part]
        assert dest in defaults and defaults[dest] is None, f"{name}: --{dest} must default to None"


# What the command modules and ropeext/train/recipes.py used as defaults before the schema became
# their only source, copied here as literals so a changed schema default shows up as a failure.
BEFORE = {
    "finetune": {
        "steps": 80,
        "batch_size": 4,
        "lr": 3.0e-4,
        "warmup_steps": 8,
        "weight_decay": 0.0,
        "precision": "bf16-mixed",
        "schedule": "cosine",
        "min_lr_ratio": 0.1,
        "betas": [0.9, 0.95],
        "max_grad_norm": 1.0,
        "grad_accum": 1,
        "gradient_checkpointing": False,
        "checkpoint_every": 20,
        "keep_checkpoints": 2,
        "log_every": 1,
        "system_metrics": True,
        "cleanup_checkpoints": True,
    },
    "pretrain": {
        "steps": 1000,
        "batch_size": 16,
        "lr": 3.0e-3,
        "warmup_steps": 50,
        "weight_decay": 0.1,
        "precision": "bf16-mixed",
        "schedule": "cosine",
        "min_lr_ratio": 0.1,
        "betas": [0.9, 0.95],
        "max_grad_norm": 1.0,
        "grad_accum": 1,
        "gradient_checkpointing": False,
        "checkpoint_every": 100,
        "keep_checkpoints": 2,
        "log_every": 1,
        "system_metrics": True,
        "cleanup_checkpoints": True,
    },
    # preset and rope.threshold: null now means "not set" (in effect local and 0.0), so that setting
    # the other key of each pair (tasks, interpolated_dims) is not a conflict with a default
    "eval.openllm": {"preset": None, "tasks": None, "num_fewshot": None, "batch_size": 8, "limit": None},
    "eval.openllm.local": {
        "items": 40,
        "fewshot_items": 5,
        "context_lines": 6,
        "choices": 4,
        "max_context_tokens": 192,
        "max_line_tokens": 32,
        "ppl_docs": 8,
        "ppl_tokens": 512,
    },
    "analysis.bf16": {
        "length": 4096,
        "num_sequences": 50,
        "delta_ref": 16,
        "logit_lengths": None,
        "chunk_size": 512,
        "numeric_path": "fa2-like",
        "seed": 0,
        "settings": ["bf16", "fp32", "random-bf16"],
        "deltas": [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 50, 100, 200, 500, 1000, 2000],
    },
    "eval.passkey": {
        "lengths": [256, 512, 1024, 2048],
        "depths": [0.0, 0.25, 0.5, 0.75, 1.0],
        "samples": 5,
        "digits": 5,
        "max_new_tokens": 12,
        "max_length": None,
    },
    "eval.longbench": {
        "data_dir": None,
        "prompts_dir": None,
        "benchmark": "longbench-e",
        "tasks": None,
        "limit": None,
        "max_input_length": None,
        "chat_template": "auto",
        "bos": "auto",
        "on_bad_line": "fail",
        "embedded_max_new_tokens": None,
    },
    "eval.longbench.embedded": {"margin": 56, "bucket_edges": None, "per_bucket": 20, "task": "heldout_lcc"},
    "eval.ppl": {"lengths": [256, 512, 1024, 2048], "stride": 256, "max_tokens": 32768},
    "rope": {
        "bins": 360,
        "kl_direction": "code",
        "angle_dtype": "float32",
        "threshold": None,
        "compare_methods": ["none", "pi", "ntk", "yarn", "dprope"],
        "angles_methods": ["none", "pi", "yarn", "dprope"],
    },
    "rope.yarn": {"beta_fast": 32.0, "beta_slow": 1.0, "truncate": True},
    "rope.llama3": {"low_freq_factor": 1.0, "high_freq_factor": 4.0},
}
RECIPES_BEFORE = {
    "dprope": {
        "lr": 2.0e-5,
        "betas": [0.9, 0.999],
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "schedule": "constant",
        "batch_size": 64,
        "steps": {8192: 1000, None: 500},
        "max_grad_norm": 1.0,
    },
    "anchor": {
        "lr": 2.0e-5,
        "betas": [0.9, 0.95],
        "warmup_steps": 0,
        "weight_decay": 0.1,
        "schedule": "constant",
        "batch_size": 8,
        "steps": 2000,
        "max_grad_norm": 1.0,
    },
}


def _section(config: dict, dotted: str) -> dict:
    for part in dotted.split("."):
        config = config[part]
    return config


def test_schema_defaults_reproduce_the_former_built_in_values():
    defaults = resolve_config({})
    for dotted, values in BEFORE.items():
        section = _section(defaults, dotted)
        changed = {k: (v, section.get(k)) for k, v in values.items() if section.get(k) != v}
        assert not changed, f"{dotted}: (before, now) {changed}"
    # the embedded LongBench task's windows were [256, 512, 1024]; null now means [L, 2L, L'] of the
    # config, which the schema's defaults make the same three windows
    from ropeext.eval.longbench.run import embedded_windows

    lb = dict(defaults["eval"]["longbench"], seed=0)
    assert embedded_windows(lb, defaults["model"]["train_length"], defaults["extension"]["target_lengths"]) == [
        256,
        512,
        1024,
    ]


def test_the_one_value_that_changed_is_rulers():
    """`ropeext eval ruler` without a config used 256/512/1024 tokens and 5 samples; the schema says 500
    samples and lengths that fit the default model (its pre-training length doubled up to its window: RULER's
    own 4k/8k/16k exceeded the default 1024-token target); the paper configs set RULER's lengths. The prompt
    wording defaults to the project's own (RULER's comes from the user's templates file, or the lm_eval engine)."""
    ruler = resolve_config({})["eval"]["ruler"]
    assert (ruler["lengths"], ruler["samples"]) == ([256, 512, 1024], 500)
    assert {
        k: ruler[k]
        for k in ("subset", "tasks", "threshold", "essay_source", "squad", "hotpotqa", "templates", "max_length")
    } == {
        "subset": "all",
        "tasks": None,
        "threshold": 85.6,
        "essay_source": None,
        "squad": None,
        "hotpotqa": None,
        "templates": "ropeext",
        "max_length": None,
    }


def test_recipes_kept_the_papers_values():
    from ropeext.recipes import RECIPES

    assert RECIPES == RECIPES_BEFORE


def test_training_settings_take_the_schemas_shared_defaults():
    from ropeext.train.loop import TrainSettings

    s = TrainSettings(steps=1, batch_size=1, lr=1e-3)
    shared = resolve_config({})["finetune"]
    for key in (
        "schedule",
        "min_lr_ratio",
        "max_grad_norm",
        "grad_accum",
        "precision",
        "gradient_checkpointing",
        "keep_checkpoints",
        "log_every",
        "system_metrics",
        "divergence_factor",
        "divergence_patience",
    ):
        assert getattr(s, key) == shared[key], key
    assert list(s.betas) == shared["betas"]
