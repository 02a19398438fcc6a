"""The page: gradio components wired to :mod:`epic_hf.app.views`.

Three tabs (four with an audit). **Explain**: drop, paste or upload an image (or pick one of the bank's own prototype
images), choose the class to explain and how many channels; see the prediction, the exact
decomposition, the explanation sheet, and pick any shown channel to see all its prototypes.
**Channel**: any channel's prototypes and the classes it drives most. **Class**: what the model
looks for in a class (``class_channels``). **Audit** (when an audit's folder is given): its
findings, each with its samples and peak boxes (:mod:`epic_hf.app.audit_view`).

Every handler turns an error a user can cause (a bad upload, an unknown class) into ``gr.Error``:
the message appears in the page and the app keeps serving. The upload reaches the handler as the
raw file (``preprocess=False``), so it is read by :func:`~epic_hf.app.read_upload`, which
refuses bad files with a clear message, instead of by gradio, which would fail with a bare error.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..errors import EpicError
from ..naming import display_name
from ..viz import MAX_CHANNELS_SHOWN
from ..viz.captions import channel_title
from .audit_view import audit_findings
from .offline import import_gradio
from .views import (
    PREDICTED,
    AppExplainer,
    channel_view,
    class_view,
    decomposition_markdown,
    example_files,
    md_text,
    parse_target,
    picture_file,
    prediction,
    read_upload,
    target_choices,
)

if TYPE_CHECKING:  # annotations only
    from ..bank import PrototypeBank

logger = logging.getLogger(__name__)

#: The API names of the page's events (``gradio_client``'s ``api_name``).
EXPLAIN_API, CHANNEL_API, CLASS_API = "/explain", "/channel", "/class"
INTRO = ("Every explanation decomposes the model's own logit **exactly**: the contributions of all "
         "channels, plus the bias (and the CLS term of models that read one), sum to the logit.")


def _user_error(gr: ModuleType, error: Exception) -> Exception:
    """A ``gr.Error`` with the one-line message of an error the user can fix."""
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return gr.Error(" ".join(message.split()) or type(error).__name__)


USER_ERRORS = (EpicError, ValueError, KeyError, IndexError)


def build_app(explainer: AppExplainer, title: str | None = None,
              audit: str | Path | None = None) -> Any:  # Any: a gradio.Blocks (see launch_app)
    """The ``gradio.Blocks`` of ``explainer`` (an :class:`~epic_hf.EpicExplainer` with a bank); not launched.

    ``audit``: the folder of an audit of this bank (its ``audit.json``), shown in an Audit tab."""
    gr = import_gradio()
    bank = explainer.bank
    if bank is None:
        raise ValueError("the app explains with a prototype bank: fit one (explainer.fit) or load one first")
    model = display_name(explainer.base_model_name_or_path) or "the classifier"  # a Hub id, or a folder's own name
    title = title or f"EPIC explanations of {model}"
    work = Path(tempfile.mkdtemp(prefix="epic_hf_app_"))  # the examples, and the pictures the page serves
    examples = example_files(bank, work / "examples")
    findings = audit_findings(audit) if audit is not None else None  # a bad folder fails before the page is built
    # gradio copies what the page shows into its own cache: files older than an hour go, hourly
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(f"# {md_text(title)}\n\n{INTRO}")
        with gr.Tab("Explain"):
            _explain_tab(gr, explainer, bank, examples, work / "pictures")
        with gr.Tab("Channel"):
            number = gr.Number(label="channel", value=0, precision=0, minimum=0, maximum=bank.num_channels - 1)
            show = gr.Button("Show the channel")
            # the picture has its own title: gradio's label badge would cover it
            sheet = gr.Image(label="prototypes", show_label=False, type="filepath", elem_id="channel-sheet",
                             interactive=False)
            about = gr.Markdown(elem_id="channel-classes")
            show.click(_channel_handler(gr, bank, work / "pictures"), [number], [sheet, about], api_name=CHANNEL_API.strip("/"))
        with gr.Tab("Class"):
            labels = target_choices(explainer.id2label)[1:]
            picked = gr.Dropdown(labels, value=labels[0] if labels else None, label="class")
            look = gr.Button("What does the model look for?")
            text = gr.Markdown(elem_id="class-channels")
            gallery = gr.Gallery(label="its channels' prototypes", columns=1, elem_id="class-gallery")
            look.click(_class_handler(gr, bank), [picked], [text, gallery], api_name=CLASS_API.strip("/"))
        if findings is not None:
            with gr.Tab("Audit"):
                _audit_tab(gr, findings)
    blocks.epic_examples_dir = str(work)
    # the folder goes when the app object does, at the latest when the process exits (Ctrl-C too);
    # ``blocks.epic_remove_files()`` removes it now
    blocks.epic_remove_files = weakref.finalize(blocks, shutil.rmtree, work, ignore_errors=True)
    return blocks


def _audit_tab(gr: ModuleType, findings: list[tuple[str, list[tuple[Image.Image, str]]]]) -> None:
    """The audit's findings, each its message above its samples (static: the audit is already done)."""
    if not findings:
        gr.Markdown("The audit found nothing to report.")
    for text, pictures in findings:
        gr.Markdown(text, elem_classes=["audit-finding"])
        if pictures:
            gr.Gallery(pictures, columns=10, height="auto", show_label=False, allow_preview=True)


def _explain_tab(gr: ModuleType, explainer: AppExplainer, bank: PrototypeBank, examples: list[str],
                 pictures: Path) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(label="image", type="filepath", sources=["upload", "clipboard"], elem_id="upload")
            target = gr.Dropdown(target_choices(explainer.id2label), value=PREDICTED,
                                 label="class to explain (why this class, or why not another?)")
            top_k = gr.Slider(1, MAX_CHANNELS_SHOWN, value=4, step=1, label="channels to show")
            overlay = gr.Checkbox(value=False, label="heat over the image: the shown channels' pixel map",
                                  elem_id="overlay")
            run = gr.Button("Explain", variant="primary", elem_id="explain")
            if examples:
                gr.Examples(examples, inputs=[image], label="the bank's own prototype images")
        with gr.Column(scale=1):
            label = gr.Label(label="prediction", num_top_classes=5, elem_id="prediction")
            decomposition = gr.Markdown(elem_id="decomposition")
    sheet = gr.Image(label="explanation sheet", show_label=False, type="filepath", elem_id="sheet",
                     interactive=False)
    with gr.Row():
        channel = gr.Radio([], label="see all prototypes of a shown channel", elem_id="channels")
    channel_sheet = gr.Image(label="the channel's prototypes", show_label=False, type="filepath", interactive=False)
    channel_text = gr.Markdown()
    run.click(_explain_handler(gr, explainer, pictures), [image, target, top_k, overlay],
              [label, decomposition, sheet, channel],
              api_name=EXPLAIN_API.strip("/"), preprocess=False)
    channel.change(_channel_handler(gr, bank, pictures), [channel], [channel_sheet, channel_text], api_name=False)


def _explain_handler(gr: ModuleType, explainer: AppExplainer, pictures: Path):
    tracker = gr.Progress()  # gradio finds a Progress default in the signature and reports through it

    # gradio's raw values, checked here; progress is a gr.Progress (Any: gradio is imported at run time)
    def explain(upload: object, target: object, top_k: float | None, overlay: object = False,
                progress: Any = tracker) -> tuple[dict[str, float], str, str, object]:
        """Read the upload, explain it, draw the sheet; raw inputs (``preprocess=False``) are checked here."""
        try:
            progress(0.05, desc="reading the image")
            image = read_upload(upload)
            progress(0.2, desc="running the model and decomposing its logit")
            explanation = explainer.explain(image, target=parse_target(target),
                                            top_k=int(min(max(int(top_k or 4), 1), MAX_CHANNELS_SHOWN)))
            progress(0.6, desc="drawing the explanation sheet")
            sheet = picture_file(explanation.to_image(overlay="shown" if overlay is True else None), pictures)
        except USER_ERRORS as error:
            logger.info("explain refused: %s", error)
            raise _user_error(gr, error) from None
        choices = [(channel_title(c.channel, c.part), c.channel) for c in explanation.channels]
        return (prediction(explanation), decomposition_markdown(explanation), sheet,
                gr.update(choices=choices, value=None))

    return explain


def _channel_handler(gr: ModuleType, bank: PrototypeBank, pictures: Path):
    def channel(number: float | str | None) -> tuple[str | None, str]:
        """One channel's prototype sheet and the classes it drives most."""
        if number is None or number == "":
            return None, ""
        try:
            image, text = channel_view(bank, int(number))
            return picture_file(image, pictures), text
        except USER_ERRORS as error:
            raise _user_error(gr, error) from None

    return channel


def _class_handler(gr: ModuleType, bank: PrototypeBank):
    def look(choice: object) -> tuple[str, list[tuple[Image.Image, str]]]:
        """A class's channels from the bank's class evidence, each with its prototypes."""
        try:
            index = parse_target(choice)
            if index is None:
                raise ValueError("pick a class")
            return class_view(bank, index)
        except USER_ERRORS as error:
            raise _user_error(gr, error) from None

    return look
