"""``tgated models``: the user's model folder (list, show, import, export, remove) and the Hub (push, pull).

An imported model's NAME then works wherever a checkpoint is accepted. ``--json`` prints one JSON
object on stdout (the Slicer module's way in; errors then come as a JSON error event too).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from ..errors import EXIT_USAGE, InputError
from .common import add_slice_layout_option, slice_layout

ACTIONS_HELP = "list | show NAME | import SRC | export NAME -o ZIP | push NAME REPO | pull REPO | remove NAME"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "models",
        help="models that travel: list, import, export, push/pull the Hub",
        description="The model folder ($TGATED_HOME/models, or tgated-segment/models in the user cache folder): "
        "import a model someone trained, then pass its NAME as --checkpoint or --base. " + ACTIONS_HELP,
    )
    p.set_defaults(func=lambda args: _usage(p))
    sub = p.add_subparsers(dest="action", metavar="ACTION")

    a = _action(
        sub,
        "list",
        run_list,
        help="the imported models",
        description="Name, architecture, size, recipe "
        "and the measured Dice (an attached evaluation, else the trainer's validation) of every imported model.",
    )
    _json_option(a)

    a = _action(
        sub,
        "show",
        run_show,
        help="a model's card",
        description="Print the model card of an imported model "
        "(or a checkpoint folder): architecture, parameters, training data, recipe, measured Dice.",
    )
    a.add_argument("name", metavar="NAME|FOLDER")
    _json_option(a)

    a = _action(
        sub,
        "import",
        run_import,
        help="import a checkpoint folder, exported zip, safetensors file or authors' .pt",
        description="Check a model and copy it into the model folder under NAME. SRC: a checkpoint "
        "folder, a .zip from `tgated models export`, a .safetensors file (with --config, and --tokenizer "
        "if none lies beside it) or the authors' .pt/.pth (converted; --base-config).",
    )
    a.add_argument("source", metavar="SRC")
    a.add_argument("--name", help="the model's name (default: from SRC's file or folder name)")
    a.add_argument("--overwrite", action="store_true", help="replace an imported model of the same name")
    a.add_argument("--config", metavar="CONFIG.json", help="for a .safetensors file: the config.json it belongs to")
    a.add_argument(
        "--tokenizer",
        metavar="DIR|HUB_ID|compact",
        help="for a .safetensors or .pt file: the tokenizer (default: the files beside it, else the base's)",
    )
    a.add_argument(
        "--base-config",
        metavar="CONFIG.json|HUB_ID",
        help="for the authors' .pt: the CLIPSeg it was trained on (default CIDAS/clipseg-rd64-refined)",
    )
    add_slice_layout_option(
        a, "reference", "for the authors' .pt: the in-plane orientation their model saw (see docs/usage.md)"
    )
    a.add_argument(
        "--evaluation",
        metavar="REPORT_DIR",
        help="attach a `tgated evaluate --output` report of this checkpoint: the card shows its Dice",
    )
    _json_option(a)

    a = _action(sub, "export", run_export, help="write a model as a zip (weights, tokenizer, config, model card)")
    a.add_argument("name", metavar="NAME|FOLDER")
    a.add_argument("-o", "--output", required=True, metavar="MODEL.zip")
    a.add_argument("--overwrite", action="store_true", help="replace an existing zip")

    a = _action(sub, "push", run_push, help="upload a model to the Hugging Face Hub (needs the network and a login)")
    a.add_argument("name", metavar="NAME|FOLDER")
    a.add_argument("repo", metavar="OWNER/REPO")
    a.add_argument("--private", action="store_true", help="create the repository as private")
    a.add_argument("--revision", help="branch to commit to (default: main)")

    a = _action(
        sub, "pull", run_pull, help="download a model from the Hugging Face Hub and import it (needs the network)"
    )
    a.add_argument("repo", metavar="OWNER/REPO")
    a.add_argument("--name", help="the model's name (default: the repository's name)")
    a.add_argument("--overwrite", action="store_true", help="replace an imported model of the same name")
    a.add_argument("--revision", help="branch, tag or commit (default: main)")
    _json_option(a)

    a = _action(sub, "remove", run_remove, help="delete an imported model from the model folder")
    a.add_argument("name", metavar="NAME")


def _action(sub, name: str, func, **kwargs) -> argparse.ArgumentParser:
    """One ``tgated models ACTION`` parser that runs ``func``."""
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(func=func)
    return parser


def _json_option(parser) -> None:
    # dest "progress": the CLI's error handler then reports failures as a JSON event as well
    parser.add_argument(
        "--json",
        dest="progress",
        action="store_const",
        const="json",
        default=None,
        help="print one JSON object on stdout (for scripts and the Slicer module)",
    )


def _usage(parser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _print_json(payload: dict) -> None:
    print(json.dumps(payload), flush=True)


def run_list(args: argparse.Namespace) -> int:
    from ..model.card import dice_summary, human_size, model_facts
    from ..model.store import ENV_HOME, model_names, models_dir

    facts = [model_facts(models_dir() / name, name) for name in model_names()]
    if args.progress == "json":
        _print_json({"event": "models", "folder": str(models_dir()), "models": facts})
        return 0
    print(f"models in {models_dir()} (set {ENV_HOME} to use another folder)", file=sys.stderr)
    if not facts:
        print(
            "no model imported yet: `tgated models import SRC` (a checkpoint folder, a zip, a .safetensors or the "
            "authors' .pt)",
            file=sys.stderr,
        )
        return 0
    rows = [("NAME", "ARCHITECTURE", "SIZE", "RECIPE", "DICE")]
    rows += [
        (f["name"], f["architecture_short"], human_size(f["size_bytes"]), str(f["recipe"] or "-"), dice_summary(f))
        for f in facts
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ..model.card import model_facts, render_card
    from ..model.exporter import resolve_checkpoint

    folder, name = resolve_checkpoint(args.name)
    facts = model_facts(folder, name)
    if args.progress == "json":
        _print_json({"event": "model", "model": facts, "card": render_card(facts)})
    else:
        print(render_card(facts))
    return 0


def _report_imported(args, folder, verb: str) -> int:
    from ..model.card import model_facts

    facts = model_facts(folder)
    if args.progress == "json":
        _print_json({"event": "done", "model": facts})
    else:
        print(f"{verb} '{facts['name']}' into {folder}: use it as --checkpoint {facts['name']}", file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..model.importer import import_model

    layout = slice_layout(args.slice_layout)
    folder = import_model(
        args.source,
        name=args.name,
        overwrite=args.overwrite,
        config=args.config,
        tokenizer=args.tokenizer,
        base_config=args.base_config,
        evaluation=args.evaluation,
        slice_layout=layout,
    )
    return _report_imported(args, folder, "imported")


def run_export(args: argparse.Namespace) -> int:
    from ..model.exporter import export_model

    path = export_model(args.name, args.output, overwrite=args.overwrite)
    print(f"wrote {path}: on another machine, `tgated models import {path.name}`", file=sys.stderr)
    return 0


def run_push(args: argparse.Namespace) -> int:
    from ..model.hub_transfer import push_model

    url = push_model(args.name, args.repo, private=args.private, revision=args.revision)
    print(f"pushed '{args.name}' to {url}", file=sys.stderr)
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from ..model.hub_transfer import pull_model

    folder = pull_model(args.repo, name=args.name, overwrite=args.overwrite, revision=args.revision)
    return _report_imported(args, folder, "pulled")


def run_remove(args: argparse.Namespace) -> int:
    from ..model.store import find_model, unknown_model_hint

    folder = find_model(args.name)
    if folder is None:
        raise InputError(f"no imported model named '{args.name}'", unknown_model_hint(args.name))
    shutil.rmtree(folder)
    print(f"removed '{folder.name}' ({folder})", file=sys.stderr)
    return 0
