"""A bank's Space on the local Hub: pushed, pushed again over hand edits, cloned and run as a Space runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from served import wait_for_client

if os.environ.get("CI"):  # CI installs the app extra: there a missing gradio fails
    import gradio  # noqa: F401
else:
    pytest.importorskip("gradio")
from gradio_client import handle_file  # noqa: E402
from huggingface_hub import HfApi, snapshot_download  # noqa: E402

from epic_hf import EpicExplainer, __version__  # noqa: E402
from epic_hf.app.space import CODE_END, SPACE_START  # noqa: E402
from epic_hf.synthetic import planted_dataset  # noqa: E402
from epic_hf.viz.captions import signed  # noqa: E402
from tiny_models import push_tiny_resnet  # noqa: E402

pytestmark = pytest.mark.slow  # the local Hub server and a subprocess
ROOT = Path(__file__).resolve().parent.parent
BANK, SPACE = "space-org/resnet-tiny-epic", "space-org/resnet-tiny-epic-demo"


@pytest.fixture(scope="module")
def pushed(hub_server):
    data = planted_dataset(40, num_classes=3, size=32, seed=4)
    push_tiny_resnet("space-org/resnet-tiny", data, seed=3)
    explainer = EpicExplainer.from_pretrained("space-org/resnet-tiny")
    explainer.fit(data, prototypes_per_channel=3, schedule_start=6, schedule_end=3, schedule_steps=1, lr=1e-2)
    url = explainer.push_to_hub(BANK, space=SPACE, space_title="Tiny EPIC")
    return explainer, url


def space_text(name: str) -> str:
    return Path(HfApi().hf_hub_download(SPACE, name, repo_type="space", force_download=True)).read_text()


def test_the_space_pins_the_bank_and_the_release(pushed):
    _, url = pushed
    sha = url.rstrip("/").rsplit("/", 1)[-1]
    info = HfApi().space_info(SPACE)
    assert info.sha
    app, card = space_text("app.py"), space_text("README.md")
    assert f"BANK, REVISION = {BANK!r}, {sha!r}" in app
    assert space_text("requirements.txt").splitlines()[1] == f"epic_hf[app]=={__version__}"
    assert "sdk: gradio" in card and "app_file: app.py" in card and BANK in card
    model_card = Path(HfApi().hf_hub_download(BANK, "README.md", force_download=True)).read_text()
    assert SPACE_START in model_card and f"/spaces/{SPACE}" in model_card


def test_pushing_again_keeps_hand_edits(pushed):
    explainer, _ = pushed
    api = HfApi()
    edited_app = space_text("app.py").replace(CODE_END, CODE_END + "\nEDITED_BY_HAND = True  # mine")
    edited_card = space_text("README.md") + "\n## My notes\n\nkept by hand\n"
    for name, text in (("app.py", edited_app), ("README.md", edited_card)):
        api.upload_file(path_or_fileobj=text.encode(), path_in_repo=name, repo_id=SPACE, repo_type="space")
    url = explainer.push_to_hub(BANK, space=SPACE, space_title="Tiny EPIC")
    sha = url.rstrip("/").rsplit("/", 1)[-1]
    app, card = space_text("app.py"), space_text("README.md")
    assert "EDITED_BY_HAND = True  # mine" in app and repr(sha) in app and app.count(CODE_END) == 1
    assert "kept by hand" in card and card.count("<!-- epic_hf:start -->") == 1
    model_card = Path(api.hf_hub_download(BANK, "README.md", force_download=True)).read_text()
    assert model_card.count(SPACE_START) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_clone_of_the_space_serves_the_same_bank(pushed, hub_server, tmp_path):
    explainer, _ = pushed
    clone = Path(snapshot_download(SPACE, repo_type="space", local_dir=tmp_path / "space"))
    port = free_port()
    env = {**os.environ, "HF_ENDPOINT": hub_server.url, "HF_TOKEN": hub_server.token,
           "HF_HUB_CACHE": str(tmp_path / "cache"), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=clone, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        client = wait_for_client(process, url, 180, "the Space's app")
        image = tmp_path / "query.png"
        planted_dataset(1, num_classes=3, size=32, seed=11)["image"][0].save(image)
        label, text, _, _ = client.predict(handle_file(str(image)), "the predicted class", 3, api_name="/explain")
        expected = explainer.explain(str(image), top_k=3)
        assert label["label"] == expected.target_label and f"**{signed(expected.target_logit)}**" in text
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_command_pushes_a_space_and_refuses_a_local_bank(pushed, capsys, tmp_path):
    from epic_hf.cli import main

    assert main(["space", BANK, "--repo", "space-org/from-the-cli", "--title", "CLI"]) == 0
    assert capsys.readouterr().out.strip().endswith("/spaces/space-org/from-the-cli")
    assert "BANK, REVISION" in Path(HfApi().hf_hub_download("space-org/from-the-cli", "app.py",
                                                           repo_type="space")).read_text()
    assert main(["space", str(tmp_path), "--repo", "space-org/x"]) == 1
    assert "push the bank first" in capsys.readouterr().err
