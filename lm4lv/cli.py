"""`lm4lv` command line: demo, train, evaluate, ablate, restore, app, mae-finetune, degradations."""

import argparse
import importlib
import os
import sys

COMMANDS = {
    "demo": ("lm4lv.commands.demo", "Offline end-to-end job: SmolLM2 + a small MAE, train and evaluate vs MAE-r."),
    "train": ("lm4lv.commands.train", "Train adapters + task tokens with transformers.Trainer."),
    "evaluate": ("lm4lv.commands.evaluate", "Score a checkpoint against MAE-r: tables, JSON, grids."),
    "ablate": ("lm4lv.commands.ablate", "The paper's baselines and ablations x tasks: one comparison table."),
    "restore": ("lm4lv.commands.restore", "Restore an image of any size (tiles with overlap and blending)."),
    "app": ("lm4lv.commands.app", "A Gradio web app for a checkpoint (needs the app extra)."),
    "mae-finetune": ("lm4lv.commands.mae_finetune", "Train a ViT-MAE (decoder only, or from scratch)."),
    "degradations": ("lm4lv.commands.degradations", "Write a PNG grid of every task's degradations."),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="lm4lv",
        description="LM4LV: a frozen LLM for low-level vision. `lm4lv COMMAND --help` explains each command.",
        epilog="\n".join(f"  {name:<14}{help_text}" for name, (_, help_text) in COMMANDS.items())
        + "\n\nExit status: 0 done, 1 failed (one line on stderr; --debug or LM4LV_DEBUG=1 shows the traceback), "
        "2 usage error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=sorted(COMMANDS), help="what to run")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    module = importlib.import_module(COMMANDS[args.command][0])
    debug = "--debug" in argv[1:] or os.environ.get("LM4LV_DEBUG", "") not in ("", "0")
    command_argv = [arg for arg in argv[1:] if arg != "--debug"]
    sys.argv = [f"lm4lv {args.command}", *command_argv]
    try:
        module.main(command_argv)
    except KeyboardInterrupt:
        print(f"lm4lv {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one clear line, not a traceback (usage errors already exited with status 2)
        if debug:
            raise
        print(f"lm4lv {args.command}: error: {error}\n(run with --debug or LM4LV_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
