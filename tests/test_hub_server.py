"""Proof that the local test hub speaks the Hub protocol: only the real clients are used, nothing is mocked.

Each test talks to the session `hub_server` through `huggingface_hub` (and `transformers` for the last one),
downloading into its own fresh cache folder so every download really goes over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    HfFileSystem,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hub_server import HubServer

SMALL_TEXT = "a few words that travel inline in the commit payload\n"
pytestmark = pytest.mark.slow  # the local Hub server: the fast tier skips these, as the README says

LARGE_BINARY = os.urandom(64 * 1024)  # above the LFS threshold and binary: must go through the LFS protocol


def unique_repo_id(name: str) -> str:
    """The hub lives for the whole session, so each test owns fresh repos."""
    return f"tiny-org/{name}-{uuid.uuid4().hex[:8]}"


def lfs_uploads(hub: HubServer) -> list[str]:
    return [path for method, path, status in hub.request_log if method == "PUT" and "/info/lfs/objects/" in path]


@pytest.fixture
def folder_to_upload(tmp_path: Path) -> Path:
    folder = tmp_path / "upload"
    (folder / "nested").mkdir(parents=True)
    (folder / "notes.txt").write_text(SMALL_TEXT)
    (folder / "nested" / "weights.bin").write_bytes(LARGE_BINARY)
    return folder


@pytest.fixture
def uploaded_repo(hub_server: HubServer, folder_to_upload: Path) -> str:
    repo_id = unique_repo_id("uploaded")
    api = HfApi()
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder_to_upload, commit_message="first upload")
    return repo_id


def test_server_listens_on_loopback_only(hub_server: HubServer) -> None:
    assert hub_server.url.startswith("http://127.0.0.1:")
    assert os.environ["HF_ENDPOINT"] == hub_server.url


def test_whoami_uses_the_session_token(hub_server: HubServer) -> None:
    assert HfApi().whoami()["name"] == hub_server.user
    with pytest.raises(HfHubHTTPError):
        HfApi(token="wrong-token").whoami()


def test_create_repo(hub_server: HubServer) -> None:
    api = HfApi()
    repo_id = unique_repo_id("created")

    url = api.create_repo(repo_id)

    assert url.repo_id == repo_id
    assert api.repo_exists(repo_id)
    info = api.model_info(repo_id)
    assert info.id == repo_id and len(info.sha) == 40
    assert api.list_repo_files(repo_id) == [".gitattributes"]  # the Hub's initial commit
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(repo_id)
    assert conflict.value.response.status_code == 409
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id


def test_create_repo_without_namespace_uses_the_user(hub_server: HubServer) -> None:
    name = f"mine-{uuid.uuid4().hex[:8]}"
    assert HfApi().create_repo(name).repo_id == f"{hub_server.user}/{name}"


def test_upload_folder_sends_the_binary_file_through_lfs(hub_server: HubServer, folder_to_upload: Path) -> None:
    api = HfApi()
    repo_id = unique_repo_id("lfs")
    api.create_repo(repo_id)
    uploads_before = len(lfs_uploads(hub_server))

    api.upload_folder(repo_id=repo_id, folder_path=folder_to_upload)

    assert len(lfs_uploads(hub_server)) == uploads_before + 1  # only the binary file took the LFS route
    files = {entry.path: entry for entry in api.list_repo_tree(repo_id, recursive=True) if hasattr(entry, "size")}
    assert set(files) == {".gitattributes", "notes.txt", "nested/weights.bin"}
    assert files["notes.txt"].lfs is None
    assert files["nested/weights.bin"].lfs is not None
    assert files["nested/weights.bin"].lfs.size == len(LARGE_BINARY)


def test_hf_hub_download_returns_identical_bytes(uploaded_repo: str, tmp_path: Path) -> None:
    cache_dir = tmp_path / "fresh-cache"

    text_path = hf_hub_download(uploaded_repo, "notes.txt", cache_dir=cache_dir)
    binary_path = hf_hub_download(uploaded_repo, "nested/weights.bin", cache_dir=cache_dir)

    assert Path(text_path).read_text() == SMALL_TEXT
    assert Path(binary_path).read_bytes() == LARGE_BINARY


def test_snapshot_download_fetches_every_file(uploaded_repo: str, tmp_path: Path) -> None:
    snapshot = Path(snapshot_download(uploaded_repo, cache_dir=tmp_path / "fresh-cache"))

    assert (snapshot / "notes.txt").read_text() == SMALL_TEXT
    assert (snapshot / "nested" / "weights.bin").read_bytes() == LARGE_BINARY
    assert (snapshot / ".gitattributes").is_file()


def test_old_commit_still_resolves_after_a_new_push(uploaded_repo: str, tmp_path: Path) -> None:
    api = HfApi()
    first_sha = api.model_info(uploaded_repo).sha
    new_weights = os.urandom(32 * 1024)

    second = api.create_commit(
        uploaded_repo,
        operations=[
            CommitOperationAdd("notes.txt", b"rewritten\n"),
            CommitOperationAdd("nested/weights.bin", new_weights),
        ],
        commit_message="second push",
    )

    assert second.oid != first_sha
    assert api.model_info(uploaded_repo).sha == second.oid
    latest = hf_hub_download(uploaded_repo, "nested/weights.bin", cache_dir=tmp_path / "latest")
    old_text = hf_hub_download(uploaded_repo, "notes.txt", revision=first_sha, cache_dir=tmp_path / "old")
    old_weights = hf_hub_download(uploaded_repo, "nested/weights.bin", revision=first_sha, cache_dir=tmp_path / "old")
    assert Path(latest).read_bytes() == new_weights
    assert Path(old_text).read_text() == SMALL_TEXT
    assert Path(old_weights).read_bytes() == LARGE_BINARY
    assert [commit.title for commit in api.list_repo_commits(uploaded_repo)][:2] == ["second push", "first upload"]


def test_branches_and_tags_are_revisions(uploaded_repo: str, tmp_path: Path) -> None:
    api = HfApi()
    api.create_branch(uploaded_repo, branch="experiment")
    api.upload_file(
        path_or_fileobj=b"only on the branch", path_in_repo="notes.txt", repo_id=uploaded_repo, revision="experiment"
    )
    api.create_tag(uploaded_repo, tag="v1", revision="experiment")

    refs = api.list_repo_refs(uploaded_repo)
    tagged = hf_hub_download(uploaded_repo, "notes.txt", revision="v1", cache_dir=tmp_path / "cache")
    on_main = hf_hub_download(uploaded_repo, "notes.txt", cache_dir=tmp_path / "cache")

    assert {branch.name for branch in refs.branches} == {"main", "experiment"}
    assert [tag.name for tag in refs.tags] == ["v1"]
    assert Path(tagged).read_bytes() == b"only on the branch"
    assert Path(on_main).read_text() == SMALL_TEXT


def test_reuploading_known_lfs_content_skips_the_transfer(hub_server: HubServer, uploaded_repo: str) -> None:
    uploads_before = len(lfs_uploads(hub_server))

    HfApi().upload_file(path_or_fileobj=LARGE_BINARY, path_in_repo="copy-of-weights.bin", repo_id=uploaded_repo)

    assert len(lfs_uploads(hub_server)) == uploads_before  # the batch API answered "already stored"
    assert HfApi().file_exists(uploaded_repo, "copy-of-weights.bin")


def test_missing_file_raises_entry_not_found(uploaded_repo: str, tmp_path: Path) -> None:
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(uploaded_repo, "does-not-exist.txt", cache_dir=tmp_path / "cache")
    assert not HfApi().file_exists(uploaded_repo, "does-not-exist.txt")


def test_missing_repo_raises_repository_not_found(hub_server: HubServer, tmp_path: Path) -> None:
    missing = unique_repo_id("missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(missing, "config.json", cache_dir=tmp_path / "cache")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(missing)
    assert not HfApi().repo_exists(missing)


def test_private_repos_need_the_token(hub_server: HubServer, tmp_path: Path) -> None:
    api = HfApi()
    repo_id = unique_repo_id("private")
    api.create_repo(repo_id, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="secret.txt", repo_id=repo_id)

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo_id, "secret.txt", token=False, cache_dir=tmp_path / "anonymous")
    assert Path(hf_hub_download(repo_id, "secret.txt", cache_dir=tmp_path / "authorized")).read_bytes() == b"secret"


def test_unknown_revision_raises_revision_not_found(uploaded_repo: str, tmp_path: Path) -> None:
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(uploaded_repo, "notes.txt", revision="no-such-branch", cache_dir=tmp_path / "cache")


def test_dataset_repos_round_trip(hub_server: HubServer, tmp_path: Path) -> None:
    api = HfApi()
    repo_id = unique_repo_id("dataset")
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data/train.csv", repo_id=repo_id, repo_type="dataset")

    downloaded = hf_hub_download(repo_id, "data/train.csv", repo_type="dataset", cache_dir=tmp_path / "cache")

    assert Path(downloaded).read_bytes() == b"a,b\n1,2\n"
    assert not api.repo_exists(repo_id)  # a dataset is not a model
    assert api.repo_exists(repo_id, repo_type="dataset")


def test_datasets_push_to_hub_and_load_dataset(hub_server: HubServer, tmp_path: Path) -> None:
    import datasets

    repo_id = unique_repo_id("pushed-dataset")
    datasets.Dataset.from_dict({"label": [0, 1, 2], "text": ["a", "b", "c"]}).push_to_hub(repo_id)

    loaded = datasets.load_dataset(repo_id, split="train", cache_dir=str(tmp_path / "datasets-cache"))

    assert loaded.to_dict() == {"label": [0, 1, 2], "text": ["a", "b", "c"]}


def test_transformers_push_to_hub_and_from_pretrained(hub_server: HubServer, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForImageClassification, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    model = ResNetForImageClassification(config)
    model.save_pretrained(tmp_path / "saved")

    model.push_to_hub("tiny-org/resnet-tiny")
    loaded = AutoModelForImageClassification.from_pretrained("tiny-org/resnet-tiny")

    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    weights = HfApi().get_paths_info("tiny-org/resnet-tiny", ["model.safetensors"])
    assert len(weights) == 1 and weights[0].lfs is not None  # the weights took the LFS route


def test_byte_range_reads_through_hf_file_system(uploaded_repo: str) -> None:
    """`HfFileSystem` reads files in blocks with HTTP Range requests."""
    with HfFileSystem(skip_instance_cache=True).open(f"{uploaded_repo}/nested/weights.bin", "rb", block_size=1024) as f:
        f.seek(5000)
        assert f.read(100) == LARGE_BINARY[5000:5100]


def test_fixture_repoints_an_already_imported_client(tmp_path: Path) -> None:
    """`point_huggingface_hub_at` must work even when `huggingface_hub` was imported with the default endpoint.

    Runs in a subprocess because this process imported the client with `HF_ENDPOINT` already set.
    """
    script = """
import sys
import huggingface_hub
from huggingface_hub import constants, hf_hub_download
import pytest
from conftest_hub import point_huggingface_hub_at, start_hub_server

assert constants.ENDPOINT == "https://huggingface.co" and not constants.HF_HUB_DISABLE_XET
server = start_hub_server()
with pytest.MonkeyPatch.context() as monkeypatch:
    point_huggingface_hub_at(monkeypatch, server.url, token=server.token, cache_dir=sys.argv[1])
    huggingface_hub.create_repo("tiny-org/late")  # module-level helpers use an HfApi built at import time
    huggingface_hub.upload_file(path_or_fileobj=b"x" * 20000, path_in_repo="w.bin", repo_id="tiny-org/late")
    assert open(hf_hub_download("tiny-org/late", "w.bin"), "rb").read() == b"x" * 20000
server.stop()
"""
    clean_env = {name: value for name, value in os.environ.items() if not name.startswith("HF_")}
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "cache")],
        cwd=Path(__file__).parent,
        env=clean_env,
        check=True,
        timeout=120,
    )
