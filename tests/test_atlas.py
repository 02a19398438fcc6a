"""The bank atlas: its files, and what a real headless Chromium renders from them over ``file://``.

The banks are built directly from generated tensors and JPEGs. The browser tests read the DOM
after the page's script ran (``--dump-dom``), so they check the app itself: the routes, the lazy
data chunks, the crops pointing at real image files, and labels shown as text, never as markup.
"""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
import torch
from PIL import Image, ImageDraw

from epic_hf import EpicConfig, PrototypeBank
from epic_hf.viz.atlas import CHANNELS_PER_CHUNK, GRID_CROPS, write_atlas

INPUT_SIZE = (96, 128)  # (height, width): not square, and larger than the thumbnails
THUMB_SIZE = (64, 48)  # (width, height) of the stored JPEGs: boxes must be scaled by the page
LABELS = ["tabby cat", "<b>bold</b> & \"quoted\"", "ünïcødé 日本", "golden retriever", "fire truck", "tench"]
NUM_CHANNELS = 4 * CHANNELS_PER_CHUNK + 44  # five channel chunks; more cards than the grid's first batch
PER_CHANNEL = 3
TRICKY = 1


def jpeg(seed: int) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    colour = tuple(int(v) for v in torch.randint(40, 215, (3,), generator=generator))
    image = Image.new("RGB", THUMB_SIZE, colour)
    ImageDraw.Draw(image).ellipse((8, 8, 40, 36), fill=(250, 250, 250))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def make_bank(num_channels: int = NUM_CHANNELS, with_evidence: bool = True, seed: int = 0) -> PrototypeBank:
    generator = torch.Generator().manual_seed(seed)
    num_keys = 2 * num_channels
    keys = torch.stack([torch.randperm(num_keys, generator=generator)[:PER_CHANNEL] for _ in range(num_channels)])
    keys = keys.to(torch.int64) + 1000
    scores = torch.sort(torch.rand(num_channels, PER_CHANNEL, generator=generator) * 50, dim=1, descending=True).values
    height, width = INPUT_SIZE
    x0 = torch.randint(0, width - 32, (num_channels, PER_CHANNEL), generator=generator)
    y0 = torch.randint(0, height - 32, (num_channels, PER_CHANNEL), generator=generator)
    boxes = torch.stack([x0, y0, x0 + 32, y0 + 32], dim=-1).to(torch.int64)
    used = torch.unique(keys).tolist()
    evidence = torch.randn(len(LABELS), num_channels, generator=generator) if with_evidence else None
    return PrototypeBank(
        sample_keys=keys, scores=scores, boxes=boxes, S=torch.zeros(num_channels, num_channels),
        matrix="orthogonal", thumbnails={key: jpeg(key) for key in used}, input_size=INPUT_SIZE, grid_size=(3, 4),
        config=EpicConfig(model_type="resnet", num_channels=num_channels, prototypes_per_channel=PER_CHANNEL,
                          matrix="orthogonal", grid_size=(3, 4), input_size=INPUT_SIZE,
                          base_model_name_or_path="tiny/resnet", purity_before=0.25, purity_after=0.75,
                          dataset={"name": "shapes", "split": "train"}),
        class_evidence=evidence,
        class_counts=torch.arange(len(LABELS), dtype=torch.int64) + 3 if with_evidence else None,
        id2label=dict(enumerate(LABELS)),
        sample_names={key: f"img_{key}.png" for key in used if key % 2 == 0},
    )


def read_chunk(path: Path) -> tuple[str, int, dict]:
    """The (kind, index, data) a ``data/*.js`` file passes to ``atlasChunk``."""
    text = path.read_text(encoding="ascii").strip()
    assert text.startswith("atlasChunk(") and text.endswith(");")
    kind, index, data = json.loads("[" + text[len("atlasChunk("):-2] + "]")
    return kind, index, data


@pytest.fixture(scope="module")
def bank() -> PrototypeBank:
    return make_bank()


@pytest.fixture(scope="module")
def atlas(bank, tmp_path_factory) -> Path:
    return write_atlas(bank, tmp_path_factory.mktemp("atlas") / "site", title="Tiny <atlas> & co")


# -- the files -------------------------------------------------------------------------------------
def test_each_thumbnail_is_written_once_byte_for_byte(bank, atlas):
    images = sorted((atlas.parent / "images").iterdir())
    assert [p.name for p in images] == sorted(f"{k}.jpg" for k in torch.unique(bank.sample_keys).tolist())
    for path in images:
        assert path.read_bytes() == bank.thumbnails[int(path.stem)]


def test_index_escapes_the_title_and_loads_nothing_external(atlas):
    text = atlas.read_text(encoding="utf-8")
    assert "Tiny &lt;atlas&gt; &amp; co" in text and "<atlas>" not in text
    site = "".join(p.read_text(encoding="utf-8") for p in atlas.parent.glob("*.*")
                   if p.suffix in (".html", ".js", ".css"))
    assert "http://" not in site and "https://" not in site and "//cdn" not in site


def test_data_chunks_hold_the_top_classes_and_channels(bank, atlas):
    data = atlas.parent / "data"
    _, _, meta = read_chunk(data / "meta.js")
    assert meta["labels"] == LABELS and meta["numChannels"] == NUM_CHANNELS and meta["hasEvidence"]
    assert meta["inputSize"] == list(INPUT_SIZE) and meta["counts"] == bank.class_counts.tolist()
    chunk_files = sorted(data.glob("channels-*.js"))
    assert [p.name for p in chunk_files] == [f"channels-{i:03d}.js" for i in range(5)]
    kind, index, second = read_chunk(chunk_files[1])
    assert (kind, index, second["start"]) == ("channels", 1, CHANNELS_PER_CHUNK)
    assert len(second["items"]) == CHANNELS_PER_CHUNK
    assert len(read_chunk(chunk_files[4])[2]["items"]) == 44
    channel = CHANNELS_PER_CHUNK + 2
    item = second["items"][2]
    assert [p[0] for p in item["p"]] == bank.sample_keys[channel].tolist()
    assert [p[2:] for p in item["p"]] == bank.boxes[channel].tolist()
    expected = torch.topk(bank.class_evidence[:, channel], 5).indices.tolist()
    assert [c[0] for c in item["c"]] == expected
    _, _, classes = read_chunk(data / "classes-000.js")
    assert [c[0] for c in classes["items"][TRICKY]] == torch.topk(bank.class_evidence[TRICKY], 8).indices.tolist()
    _, _, grid = read_chunk(data / "grid.js")
    reliance = bank.class_evidence.clamp(min=0).sum(0)
    assert grid["rows"][7][0] == pytest.approx(float(reliance[7]), rel=1e-3)
    assert len(grid["rows"][7][3]) == min(GRID_CROPS, PER_CHANNEL)


def test_a_bank_without_class_evidence_or_a_thumbnail_still_gets_an_atlas(tmp_path):
    bank = make_bank(num_channels=5, with_evidence=False)
    lost = int(bank.sample_keys[0, 0])
    del bank.thumbnails[lost]
    index = write_atlas(bank, tmp_path)
    _, _, meta = read_chunk(tmp_path / "data" / "meta.js")
    assert index.is_file() and not meta["hasEvidence"] and meta["numClasses"] == len(LABELS)
    assert not list((tmp_path / "data").glob("classes-*.js"))
    assert meta["missing"] == [lost] and not (tmp_path / "images" / f"{lost}.jpg").exists()


def test_rewriting_replaces_an_atlas_but_never_a_users_own_folders(tmp_path):
    write_atlas(make_bank(num_channels=CHANNELS_PER_CHUNK + 1), tmp_path / "site")
    write_atlas(make_bank(num_channels=4, seed=1), tmp_path / "site")
    assert not (tmp_path / "site" / "data" / "channels-001.js").exists()
    assert len(list((tmp_path / "site" / "images").iterdir())) == len(torch.unique(make_bank(4, seed=1).sample_keys))
    (tmp_path / "mine" / "images").mkdir(parents=True)
    (tmp_path / "mine" / "images" / "holiday.jpg").write_bytes(b"mine")
    write_atlas(make_bank(num_channels=4), tmp_path / "mine")
    assert (tmp_path / "mine" / "images" / "holiday.jpg").read_bytes() == b"mine"


# -- the browser ------------------------------------------------------------------------------------
class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children, self.texts = tag, attrs, parent, [], []

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, tag: str | None = None, **attrs: str) -> list["Node"]:
        return [n for n in self.walk() if (tag is None or n.tag == tag)
                and all(n.attrs.get(k.rstrip("_")) == v for k, v in attrs.items())]

    def find(self, tag: str | None = None, **attrs: str) -> "Node":
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag} {attrs}> in the rendered page"
        return found[0]

    def text(self) -> str:
        return "".join(self.texts) + "".join(child.text() for child in self.children)

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())


class TreeBuilder(HTMLParser):
    VOID = {"img", "input", "meta", "link", "br", "hr", "source", "area", "base", "col", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#root", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in self.VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.texts.append(data)


from cdp import chromium  # noqa: E402  (one rule for finding Chromium, shared with the app's tests)


def render(index: Path, route: str, profile: Path, height: int = 900) -> Node:
    """The DOM of ``index.html#route`` after the page's script ran, from a headless Chromium.

    Each run gets a fresh profile: Chromium remembers a window's size in its profile.
    """
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tempfile.mkdtemp(dir=profile)}", f"--window-size=1280,{height}",
               "--virtual-time-budget=5000", "--dump-dom", index.as_uri() + route]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    builder = TreeBuilder()
    builder.feed(result.stdout)
    return builder.root


def image_keys(node: Node, site: Path) -> list[int]:
    """The sample keys of the <img> elements under ``node``; each must name a file of the atlas."""
    keys = []
    for img in node.find_all("img"):
        src = img.attrs["src"]
        assert src.startswith("images/") and (site / src).is_file(), src
        keys.append(int(Path(src).stem))
    return keys


@pytest.mark.slow  # six Chromium runs: about 5 s on an idle machine
def test_the_atlas_renders_in_chromium(bank, atlas, tmp_path):
    site = atlas.parent
    evidence = bank.class_evidence

    page = render(atlas, "#/", tmp_path)
    cards = page.find(id="grid").find_all("a", class_="card")
    reliance = [float(f"{v:.4g}") for v in evidence.clamp(min=0).sum(0).tolist()]  # as the atlas stores it
    order = sorted(range(NUM_CHANNELS), key=lambda c: (-reliance[c], c))
    assert 0 < len(cards) < NUM_CHANNELS  # the first batch, and a button for the rest
    assert [int(c.attrs["data-channel"]) for c in cards] == order[:len(cards)]
    assert f"{NUM_CHANNELS - len(cards)} channels left" in page.find("button", class_="more").text()
    first = cards[0]
    assert image_keys(first, site) == bank.sample_keys[order[0], :GRID_CROPS].tolist()
    assert LABELS[int(evidence[:, order[0]].argmax())] in first.text()
    grid = render(atlas, "#/", tmp_path, height=12000).find(id="grid")  # a screen that reaches every batch
    assert [int(c.attrs["data-channel"]) for c in grid.find_all("a", class_="card")] == order
    assert len(image_keys(grid, site)) == NUM_CHANNELS * min(GRID_CROPS, PER_CHANNEL)

    channel = CHANNELS_PER_CHUNK + 2  # in the second chunk
    page = render(atlas, f"#/channel/{channel}", tmp_path)
    figures = page.find(id="prototypes").find_all("figure")
    keys = bank.sample_keys[channel].tolist()
    assert [image_keys(f, site)[0] for f in figures] == keys
    for figure, key in zip(figures, keys):
        name = bank.sample_names.get(key, f"#{key}")
        assert name in figure.text() and "score" in figure.text()
        assert figure.find_all("div", class_="box")
    links = page.find(id="classes").find_all("a")
    top = torch.topk(evidence[:, channel], 5).indices.tolist()
    assert [a.attrs["href"] for a in links] == [f"#/class/{k}" for k in top]
    assert [a.text() for a in links] == [LABELS[k] for k in top]

    page = render(atlas, f"#/class/{TRICKY}", tmp_path)
    assert page.find("h1").text() == LABELS[TRICKY] and not page.find_all("b")  # text, not markup
    rows = page.find(id="channels").find_all("div", class_="row")
    top = [c for v, c in zip(*torch.topk(evidence[TRICKY], 8)) if float(f"{float(v):.4g}") > 0]  # evidence, not 0
    assert [int(r.attrs["data-channel"]) for r in rows] == [int(c) for c in top]
    for row, c in zip(rows, top):
        assert image_keys(row, site) == bank.sample_keys[c].tolist()
    assert f"{int(bank.class_counts[TRICKY])} samples predicted" in page.text()

    results = render(atlas, "#/search/" + quote("日本"), tmp_path).find(id="results")
    assert [a.attrs["href"] for a in results.find_all("a")] == ["#/class/2"]
    page = render(atlas, "#/search/" + quote("channel 65"), tmp_path)
    assert [c.attrs["data-channel"] for c in page.find_all("a", class_="card")] == ["65"]


@pytest.mark.slow  # one Chromium run
def test_a_class_no_sample_was_predicted_as_has_no_evidence_not_a_ranking(tmp_path):
    bank = make_bank(num_channels=6)
    bank.class_counts = torch.tensor([0, 1, 2, 3, 4, 5])
    bank.class_evidence[0] = 0.0  # the mean over no samples
    index = write_atlas(bank, tmp_path / "site")
    page = render(index, "#/class/0", tmp_path)
    assert "No evidence" in page.find(id="no-evidence").text() and not page.find_all(id="channels")
    assert "1 sample predicted" in render(index, "#/class/1", tmp_path).text()
