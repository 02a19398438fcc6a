"""A fit run as its own process, for the tests that launch several processes or kill one.

usage: python fit_script.py MODEL_DIR DATA_DIR OUTPUT_DIR RESULT_FILE [--stream] [--kill-at TEXT]

With ``--kill-at`` the process SIGKILLs itself as soon as the library logs a message that
contains TEXT: a deterministic way for a test to interrupt a run at a chosen point.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal

import datasets
from safetensors.torch import save_file

from epic_hf import EpicExplainer

FIT_ARGS = dict(prototypes_per_channel=3, schedule_start=12, schedule_end=3, schedule_steps=4, epochs_per_step=2,
                lr=1e-2, batch_size=16, train_batch_size=16)


class KillAt(logging.Handler):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("data_dir")
    parser.add_argument("output_dir")
    parser.add_argument("result_file")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--kill-at")
    args = parser.parse_args()
    logger = logging.getLogger("epic_hf")
    logger.setLevel(logging.INFO)
    if args.kill_at:
        logger.addHandler(KillAt(args.kill_at))
    data = datasets.load_from_disk(args.data_dir)
    if args.stream:
        data = data.to_iterable_dataset(num_shards=4)
    explainer = EpicExplainer.from_pretrained(args.model_dir)
    output_dir = None if args.output_dir == "-" else args.output_dir
    report = explainer.fit(data, output_dir=output_dir, **FIT_ARGS)
    from accelerate import PartialState

    if PartialState().is_main_process:
        bank = explainer.bank
        save_file({"sample_keys": bank.sample_keys, "scores": bank.scores, "boxes": bank.boxes, "S": bank.S},
                  args.result_file)
        with open(args.result_file + ".json", "w") as handle:
            json.dump(report.to_dict(), handle)


if __name__ == "__main__":
    main()
