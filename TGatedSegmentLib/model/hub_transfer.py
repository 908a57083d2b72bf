"""``tgated models push`` / ``pull``: a model to and from the Hugging Face Hub (``huggingface_hub``).

``push`` uploads, in one commit, what an export holds: the weights, config, tokenizer files,
``evaluation.json`` when attached, and the model card as ``README.md``. ``pull`` downloads a
repository's checkpoint files (into the Hub's own cache) and imports them like a folder
(:mod:`.importer`: checked, atomic, an existing name refused unless ``overwrite``).

Both need the network. Without it (or with ``HF_HUB_OFFLINE=1``) they stop with one line that
names the problem and the way round it: a zip carried by hand (``export`` here, ``import`` there).
Login problems and missing repositories get their own line; anything else keeps the Hub's first
line of explanation.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError, InputError, OutputError, TGatedError
from ..io.atomic import refuse_existing
from . import store
from .card import CARD_NAME, CONFIG_NAME, model_facts, read_json, render_card
from .exporter import resolve_checkpoint
from .importer import MODEL_FILES, import_model
from .source import looks_like_hub_id

_OFFLINE = {
    "OfflineModeIsEnabled",
    "LocalEntryNotFoundError",
    "ConnectionError",
    "NetworkError",
    "ConnectError",
    "TimeoutException",
    "Timeout",
    "ConnectTimeout",
    "ReadTimeout",
    "NameResolutionError",
    "TransportError",
}
_AUTH = {"LocalTokenNotFoundError", "GatedRepoError"}
_MISSING = {"RepositoryNotFoundError", "RevisionNotFoundError"}


def failure_kind(exc: BaseException) -> str:
    """``offline``, ``auth``, ``missing`` or ``other``, from the exception's classes (huggingface_hub,
    httpx and requests errors alike, without importing them)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _AUTH or getattr(getattr(exc, "response", None), "status_code", None) in (401, 403):
        return "auth"
    if names & _MISSING:
        return "missing"
    if names & _OFFLINE:
        return "offline"
    return "other"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _check_repo(repo_id: str) -> str:
    if not looks_like_hub_id(repo_id):
        raise InputError(
            f"'{repo_id}' is not a Hugging Face Hub repository id", "Use owner/name, e.g. my-lab/liver-ct."
        )
    return repo_id


def pull_model(repo_id: str, name: str | None = None, overwrite: bool = False, revision: str | None = None) -> Path:
    """Download ``repo_id`` and import it as ``name`` (default: the repository's name)."""
    _check_repo(repo_id)
    name = store.check_name(name) if name else store.name_from(repo_id.split("/")[1])
    target = store.models_dir() / name
    refuse_existing(
        target,
        overwrite,
        "Pass --overwrite to replace it, or --name to pull it under another name.",
        f"a model named '{name}' is already imported ({target})",
    )  # before any download
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=[*MODEL_FILES, CARD_NAME]))
    except Exception as exc:  # network, login, missing repository: said in one line below
        raise _pull_error(repo_id, name, exc) from None
    return import_model(folder, name=name, overwrite=overwrite)


def _hub_error(error: type[TGatedError], exc: Exception, failed: str, known: dict[str, tuple[str, str]]) -> TGatedError:
    """The one-line error for a Hub failure: ``known[failure_kind(exc)]`` (message, hint), else ``failed``."""
    message, hint = known.get(failure_kind(exc), (f"{failed} ({_first_line(exc)})", "Try again; see --debug."))
    return error(message, hint)


def _pull_error(repo_id: str, name: str, exc: Exception) -> TGatedError:
    return _hub_error(
        CheckpointError,
        exc,
        f"downloading '{repo_id}' failed",
        {
            "offline": (
                f"no network: cannot reach the Hugging Face Hub to download '{repo_id}' ({_first_line(exc)})",
                f"Download it on a machine with internet (`tgated models pull {repo_id} --name {name}`, then "
                f"`tgated models export {name} -o {name}.zip`), copy the zip here and run `tgated models import "
                f"{name}.zip`.",
            ),
            "auth": (
                f"the Hub refused access to '{repo_id}' ({_first_line(exc)})",
                "Log in with `hf auth login` (or set HF_TOKEN) with an account that may read it.",
            ),
            "missing": (
                f"there is no model '{repo_id}' on the Hugging Face Hub (or it is private)",
                "Check the repository id and revision, or log in if it is private.",
            ),
        },
    )


def push_model(source: str, repo_id: str, private: bool = False, revision: str | None = None) -> str:
    """Upload the model ``source`` (a name or checkpoint folder) to ``repo_id``; returns the commit URL."""
    _check_repo(repo_id)
    folder, name = resolve_checkpoint(source)
    if (read_json(folder / CONFIG_NAME) or {}).get("partial_weights"):
        raise InputError(
            f"'{source}' stores only its trained weights, on top of a base that may not exist elsewhere",
            f"Import it first (`tgated models import {folder}`: that writes all its weights), then push "
            "the imported name.",
        )
    card = render_card(model_facts(folder, name)).encode("utf-8")
    try:
        from huggingface_hub import CommitOperationAdd, HfApi

        operations = [
            CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f))
            for f in MODEL_FILES
            if (folder / f).is_file()
        ]
        operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card))
        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.create_commit(repo_id, operations, commit_message=f"tgated models push {name}", revision=revision)
    except Exception as exc:  # network, login, permissions: said in one line below
        raise _push_error(repo_id, name, exc) from None
    return str(getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}")


def _push_error(repo_id: str, name: str, exc: Exception) -> TGatedError:
    refused = (
        f"the Hub refused the upload to '{repo_id}' ({_first_line(exc)})",
        "Log in with `hf auth login` (or set HF_TOKEN) with a write token for that owner.",
    )
    return _hub_error(
        OutputError,
        exc,
        f"uploading '{name}' to '{repo_id}' failed",
        {
            "offline": (
                f"no network: cannot reach the Hugging Face Hub to upload '{name}' to '{repo_id}' ({_first_line(exc)})",
                f"Export it (`tgated models export {name} -o {name}.zip`), copy the zip to a machine with internet "
                f"and there run `tgated models import {name}.zip` and `tgated models push {name} {repo_id}`.",
            ),
            "auth": refused,
            "missing": refused,
        },
    )
