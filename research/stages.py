"""A demo run's stages, resumable: each stage's result and wall time are written to `stages.json` in the run's folder
as soon as the stage ends, and a later call with the same folder takes the saved result instead of running the
stage again. A run cut short (a time limit, a lost machine) therefore continues where it stopped."""

import json
import os
import time

from lm4lv.modeling_lm4lv.hub_files import write_text_atomically

STAGES_FILE = "stages.json"


class StageLog:
    """The finished stages of the run in `output_dir` (`identity`: what the run is, e.g. its profile and LLM; a
    folder holding another run is refused) and the wall time of every stage run so far. `on_stage_end()` is called
    after each stage, e.g. to rewrite the report."""

    def __init__(self, output_dir: str, identity: dict, on_stage_end=None):
        self.path = os.path.join(output_dir, STAGES_FILE)
        self.identity, self.on_stage_end = identity, on_stage_end
        saved = {"run": identity, "stages": {}}
        if os.path.exists(self.path):
            with open(self.path) as handle:
                saved = json.load(handle)
        if saved["run"] != identity:
            raise ValueError(f"{output_dir} holds another run ({saved['run']}, not {identity}): give this run "
                             "another --output_dir, or delete that folder to start over")
        self.stages = saved["stages"]
        self.seconds = {name: entry["seconds"] for name, entry in self.stages.items()}

    def run(self, name: str, compute, resumable: bool = True):
        """`compute()`'s result, timed; with `resumable`, a JSON value saved under `name` as the stage ends, and
        the saved value (not a new run) when an earlier call finished the stage. Stages that are not resumable
        (cheap, deterministic, and not JSON, e.g. datasets) run on every call."""
        if resumable and name in self.stages:
            return self.stages[name]["result"]
        start = time.time()
        result = compute()
        self.seconds[name] = round(time.time() - start, 1)
        if resumable:
            result = json.loads(json.dumps(result))  # what a later call reads back, so both calls see one value
            self.stages[name] = {"seconds": self.seconds[name], "result": result}
            write_text_atomically(self.path, json.dumps({"run": self.identity, "stages": self.stages}, indent=2))
        if self.on_stage_end:
            self.on_stage_end()
        return result

    def result(self, name: str):
        """The saved result of stage `name`, or None while it has not finished."""
        return self.stages[name]["result"] if name in self.stages else None
