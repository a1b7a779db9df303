"""The offline main job: train and evaluate LM4LV end to end with a real pretrained LLM and no Hub access
(`lm4lv.research.demo`: SmolLM2 and a small MAE trained here, LM4LV and its ablations, the paper's Table 2, a whole
held-out picture; `report.md`, JSON, PNG grids and curves).

    lm4lv demo                      # on a CPU: the default profile (18 min on 2 CPU cores); on a GPU: gpu
    lm4lv demo --profile full       # longer training (<= 2 h on 2 CPU cores)
    lm4lv demo --profile gpu        # the paper's scale, Tables 2 and 3 (<= 10 min on one H100/H200-class GPU)
    lm4lv demo --profile gpu --estimate   # measure this machine's speed, project every stage's time, and exit

A run writes each stage's result as the stage ends (`stages.json`) and rewrites `report.md` after each: the same
command with the same `--output_dir` continues a run that was cut short, skipping finished stages and resuming an
unfinished training run from its last checkpoint.

Every profile fixes its step counts (`lm4lv.research.offline_default.PROFILES`): the same profile and seed train
the same steps on the same data everywhere; wall time is measured and reported, never used to stop training.
"""

import argparse

from lm4lv.research.demo import run_demo
from lm4lv.research.estimate import estimate_demo
from lm4lv.research.offline_default import PROFILES, add_cpu_kernels_argument, apply_cpu_kernels, default_profile_name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
                        help="Default: gpu where CUDA is available, else default.")
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--cache_dir", default=None, help="Where converted/trained base models are cached.")
    parser.add_argument("--llm", default=None, help="A local causal LM folder instead of SmolLM2-135M-Instruct.")
    parser.add_argument("--estimate", action="store_true",
                        help="Train a few steps of each kind of run on this machine, print the measured speed and the "
                             "projected wall time of every stage and of the whole run, and exit.")
    add_cpu_kernels_argument(parser)
    args = parser.parse_args(argv)
    apply_cpu_kernels(args)
    job = estimate_demo if args.estimate else run_demo
    job(args.profile or default_profile_name(), args.output_dir, args.cache_dir, args.llm)


if __name__ == "__main__":
    main()
