"""A bank's own Space on the Hub: a Gradio app anyone can open, loading the bank at a pinned commit.

Why pinned: a Space runs unattended for months; the bank it explains with must be the one it was
made for, so ``app.py`` loads the model repo at the commit sha it was pushed against, and
``requirements.txt`` pins the epic_hf release that wrote it. The Space's README links the bank's
model repo, and the bank's model card gets a marked section linking back to the Space.

Pushing again updates the Space: in ``README.md``, ``app.py`` and ``requirements.txt`` only the
parts between EPIC's markers are rewritten (:func:`epic_hf.hub.replace_section`, as for model
cards), so hand edits outside them survive.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, SpaceCard, SpaceCardData
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

from .._version import __version__
from ..atomic import write_atomic
from ..hub import CARD_END, CARD_START, hub_endpoint, merge_cards, replace_section

logger = logging.getLogger(__name__)

CODE_START, CODE_END = "# epic_hf:start (rewritten by each push; edit outside)", "# epic_hf:end"
SPACE_START, SPACE_END = "<!-- epic_hf:space:start -->", "<!-- epic_hf:space:end -->"
#: The gradio release the app is made with (the ``app`` extra's pin), as the Space's ``sdk_version``.
GRADIO_VERSION = "6.31.0"


def _gradio_version() -> str:
    try:
        from importlib.metadata import version

        return version("gradio")
    except Exception:  # not installed here: the Space still names the release the app is made for
        return GRADIO_VERSION


def space_url(space_id: str) -> str:
    return f"{hub_endpoint().rstrip('/')}/spaces/{space_id}"


def app_code(bank_repo: str, revision: str, title: str | None) -> str:
    """The Space's ``app.py``: EPIC's marked block loads the bank and builds the app; the launch is outside."""
    return f'''"""A Gradio Space explaining a classifier with its EPIC prototype bank ({bank_repo})."""
{CODE_START}
from epic_hf import EpicExplainer

BANK, REVISION = {bank_repo!r}, {revision!r}  # the bank's model repo, at the commit this Space was made for
explainer = EpicExplainer.from_pretrained(BANK, revision=REVISION)
TITLE = {title!r}
{CODE_END}

if __name__ == "__main__":
    explainer.launch(title=TITLE)  # host and port from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, as Spaces set them
'''


def requirements(version: str = __version__) -> str:
    return f"{CODE_START}\nepic_hf[app]=={version}\n{CODE_END}\n"


def space_card(bank_repo: str, revision: str, title: str | None) -> SpaceCard:
    """The Space's README: the YAML header the Hub reads (sdk, app file, the model it uses) and EPIC's section."""
    data = SpaceCardData(title=(title or f"EPIC: {bank_repo}")[:60], sdk="gradio", sdk_version=_gradio_version(),
                         app_file="app.py", models=[bank_repo], tags=["epic", "explainability", "prototypes"],
                         emoji="🔍", colorFrom="blue", colorTo="indigo", pinned=False)
    text = f"""
{CARD_START}
# {title or 'EPIC explanations'}

Drop an image: this Space explains the classifier's prediction with the
[EPIC](https://arxiv.org/abs/2505.12897) prototype bank
[`{bank_repo}`]({hub_endpoint().rstrip('/')}/{bank_repo}) (commit `{revision[:12]}`). Every explanation
decomposes the model's own logit exactly into channel contributions, each shown with the training
images (prototypes) that activate the channel most.

Made with epic_hf {__version__}: `app.py` and `requirements.txt` pin the bank's commit and the release.
{CARD_END}
"""
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n{text}")


def space_files(bank_repo: str, revision: str, title: str | None = None,
                existing: dict[str, str] | None = None) -> dict[str, str]:
    """The Space's files as text, merged into ``existing`` ones (their text outside EPIC's markers is kept)."""
    existing = existing or {}
    card = space_card(bank_repo, revision, title)
    old_card = SpaceCard(existing["README.md"]) if "README.md" in existing else None
    files = {"README.md": str(merge_cards(old_card, card))}
    for name, ours in (("app.py", app_code(bank_repo, revision, title)), ("requirements.txt", requirements())):
        section = ours[ours.index(CODE_START):ours.index(CODE_END) + len(CODE_END)]
        files[name] = replace_section(existing[name], section, CODE_START, CODE_END) if name in existing else ours
    return files


def _download_text(api: HfApi, repo_id: str, filename: str, repo_type: str) -> str | None:
    try:
        return Path(api.hf_hub_download(repo_id, filename, repo_type=repo_type)).read_text(encoding="utf-8")
    except (EntryNotFoundError, RepositoryNotFoundError):
        return None


def push_space(space_id: str, bank_repo: str, revision: str | None = None, *, title: str | None = None,
               private: bool = False, token: str | None = None) -> str:
    """Create or update the Gradio Space ``space_id`` for the bank in model repo ``bank_repo``; returns its URL.

    ``revision`` (a branch, tag or sha; default the main branch) is resolved to its commit sha,
    which ``app.py`` pins. Then the bank's model card gets a marked link to the Space.
    """
    api = HfApi(token=token)
    sha = api.model_info(bank_repo, revision=revision).sha
    if not sha:
        raise ValueError(f"the Hub gave no commit for {bank_repo} at {revision or 'main'}")
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    existing = {name: text for name in ("README.md", "app.py", "requirements.txt")
                if (text := _download_text(api, space_id, name, "space")) is not None}
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in space_files(bank_repo, sha, title, existing).items():
            write_atomic(Path(tmp, name), text)
        api.upload_folder(repo_id=space_id, repo_type="space", folder_path=tmp,
                          commit_message=f"EPIC Space for {bank_repo}@{sha[:12]}")
    _link_card_to_space(api, bank_repo, space_id)
    logger.info("pushed the Space %s for %s at %s", space_id, bank_repo, sha[:12])
    return space_url(space_id)


def _link_card_to_space(api: HfApi, bank_repo: str, space_id: str) -> CommitInfo | None:
    """The bank's model card, with a marked line linking the Space (the card's other text untouched)."""
    card = _download_text(api, bank_repo, "README.md", "model") or ""
    section = (f"{SPACE_START}\n**Try it:** the Space [{space_id}]({space_url(space_id)}) explains any image you "
               f"drop with this bank.\n{SPACE_END}")
    updated = replace_section(card, section, SPACE_START, SPACE_END)
    if updated == card:
        return None
    return api.upload_file(path_or_fileobj=updated.encode("utf-8"), path_in_repo="README.md", repo_id=bank_repo,
                           commit_message=f"Link the Space {space_id}")
